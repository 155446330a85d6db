"""The shadow's hand-over: what a server hands to its shadow is scored and stored, or counted as skipped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import sqlalchemy as sa

from churn_mlops.models.artifacts import Predictor
from churn_mlops.serving.rollout import shadow as shadow_module
from churn_mlops.serving.rollout.shadow import Shadow
from churn_mlops.serving.rollout.state import metadata


class TenureModel:
    """A stand-in for the shadow's Predictor (its one port here): probability = tenure / 100."""

    def predict(self, columns: Mapping[str, Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
        if None in columns["tenure"]:
            raise ValueError("tenure is missing")
        probabilities = np.asarray(columns["tenure"], dtype=float) / 100
        return probabilities, (probabilities >= 0.5).astype(np.int8)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'serving.db'}")
    metadata.create_all(engine)
    return engine


def _request(request_id: str, *tenures: int) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    records = [{"customer_id": f"{request_id}-{t}", "tenure": t} for t in tenures]
    answers = [
        {"request_id": f"{request_id}-{i}", "model_version": "1", "churn_probability": 0.2, "prediction": 0}
        for i in range(len(tenures))
    ]
    return request_id, records, answers


def _stored(engine: sa.Engine) -> list[tuple[Any, ...]]:
    columns = "request_id, model_version, probability, prediction, champion_probability"
    query = f"SELECT {columns} FROM shadow_predictions ORDER BY request_id"
    with engine.connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql(query)]


def test_every_customer_handed_over_is_scored_and_stored_beside_the_champions_answer(
    engine: sa.Engine,
) -> None:
    shadow = Shadow(engine, "2", cast(Predictor, TenureModel()), batch=2)
    for request in (_request("a", 10), _request("b", 60, 30), _request("c", 90)):
        shadow.offer(*request)
    shadow.close()
    assert _stored(engine) == [
        ("a-0", "2", 0.1, 0, 0.2),
        ("b-0", "2", 0.6, 1, 0.2),
        ("b-1", "2", 0.3, 0, 0.2),
        ("c-0", "2", 0.9, 1, 0.2),
    ]
    assert (shadow.scored, shadow.skipped) == (4, 0)


def test_a_shadow_that_falls_behind_skips_and_counts_customers_instead_of_holding_answers(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow_module, "PENDING_REQUESTS", 2)
    monkeypatch.setattr(shadow_module, "LINGER_SECONDS", 60.0)  # nothing is taken before close()
    shadow = Shadow(engine, "2", cast(Predictor, TenureModel()))
    for request in (_request("a", 10), _request("b", 20), _request("c", 30, 40)):
        shadow.offer(*request)  # returns at once, the third finding the shadow full
    shadow.close()
    assert [row[0] for row in _stored(engine)] == ["a-0", "b-0"]
    assert (shadow.scored, shadow.skipped) == (2, 2)


def test_scores_that_cannot_be_stored_are_counted_as_skipped(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE shadow_predictions")
    shadow = Shadow(engine, "2", cast(Predictor, TenureModel()))
    shadow.offer(*_request("a", 10, 20))
    shadow.close()
    assert (shadow.scored, shadow.skipped) == (0, 2)


def test_a_shadow_that_cannot_score_some_customers_skips_them_and_scores_the_next(engine: sa.Engine) -> None:
    shadow = Shadow(engine, "2", cast(Predictor, TenureModel()), batch=1)
    bad = ("bad", [{"customer_id": "x", "tenure": None}], _request("bad", 0)[2])  # the model raises
    for request in (_request("a", 10), bad, _request("c", 30)):
        shadow.offer(*request)
    shadow.close()
    assert [row[0] for row in _stored(engine)] == ["a-0", "c-0"]
    assert (shadow.scored, shadow.skipped) == (2, 1)
