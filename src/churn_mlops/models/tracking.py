"""Experiment tracking on MLflow: one run per training, nested runs per tuning trial."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from churn_mlops.errors import ConfigError, first_line

PARENT_TAG = "mlflow.parentRunId"


class Tracker:
    """Runs of one MLflow experiment."""

    def __init__(self, client: MlflowClient, experiment: str, artifact_root: Path | None) -> None:
        self.client = client
        self.experiment_id = self._experiment(experiment, artifact_root)

    def start(self, name: str, tags: Mapping[str, str], parent: str | None = None) -> str:
        """Open a run and return its id."""
        tags = {**tags, "mlflow.runName": name, **({PARENT_TAG: parent} if parent else {})}
        return str(self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id)

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] = {},
        metrics: Mapping[str, float] = {},
        tags: Mapping[str, str] = {},
    ) -> None:
        """Log parameters, finite metrics and tags in one call."""
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items() if _finite(v)],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )

    def log_artifacts(self, run_id: str, directory: Path, artifact_path: str) -> None:
        """Upload a folder as the run's artifacts under artifact_path."""
        self.client.log_artifacts(run_id, str(directory), artifact_path)

    def finish(self, run_id: str, *, failed: bool = False) -> None:
        """Close a run."""
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def _experiment(self, name: str, artifact_root: Path | None) -> str:
        try:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            location = artifact_root.resolve().as_uri() if artifact_root else None
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException as exc:
            raise ConfigError(f"MLflow tracking store: {first_line(exc)}") from exc


def git_commit() -> str:
    """The commit of the working tree, or 'unknown' outside git."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
