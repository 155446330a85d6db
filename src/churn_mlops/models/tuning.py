"""Hyperparameter search for LightGBM with Optuna: TPE sampling, median pruning on validation AUC."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
from sklearn.metrics import roc_auc_score

from churn_mlops.models.training import train_lightgbm

TrialCallback = Callable[[int, dict[str, Any], float | None, str], None]


@dataclass(frozen=True)
class TuningResult:
    """The best parameters found and every trial's outcome."""

    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """LightGBM's main parameters, in ranges that suit tables of thousands to millions of rows."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
    }


def tune_lightgbm(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    categorical: tuple[int, ...],
    trials: int,
    seed: int,
    num_threads: int,
    on_trial: TrialCallback | None = None,
    max_rounds: int = 2000,
) -> TuningResult:
    """Search `trials` parameter sets; each is scored by validation ROC AUC at its best round."""
    x_train, y_train, x_valid, y_valid = data
    logging.getLogger("optuna").setLevel(logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial)
        model = train_lightgbm(
            x_train,
            y_train,
            x_valid,
            y_valid,
            categorical=categorical,
            params=params,
            seed=seed,
            num_threads=num_threads,
            max_rounds=max_rounds,
            callbacks=[_pruner(trial)],
        )
        return float(roc_auc_score(y_valid, model.predict_proba(x_valid)))

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(trial.number, trial.params, trial.value, trial.state.name.lower())

    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=50)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=trials, callbacks=[report])
    history = [
        {"number": t.number, "params": t.params, "value": t.value, "state": t.state.name.lower()}
        for t in study.trials
    ]
    return TuningResult(study.best_params, float(study.best_value), history)


def _pruner(trial: optuna.Trial) -> Callable[[Any], None]:
    """A LightGBM callback reporting validation AUC every 10 rounds and pruning weak trials."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        if env.iteration % 10:
            return
        for entry in env.evaluation_result_list or []:
            if entry[1] == "auc":
                trial.report(float(entry[2]), env.iteration)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {env.iteration}")

    return callback
