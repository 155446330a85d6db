"""The dashboard's panels, built from hand-made snapshots of the stored results."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from churn_mlops.dashboard import panels
from churn_mlops.dashboard.store import Snapshot
from churn_mlops.monitoring.runs import BATCH, INGEST
from churn_mlops.serving.traffic import bucket_of, bucket_upper_ms

DAY = "2024-05-01"


def snapshot(**parts: Any) -> Snapshot:
    """A snapshot of one day with nothing stored, but for the parts given."""
    empty: dict[str, Any] = {
        "windows": [],
        "alerts": [],
        "volumes": [],
        "traffic": [],
        "runs": [],
        "last_monitor_run": None,
    }
    return Snapshot(since=date(2024, 5, 1), until=date(2024, 5, 1), **(empty | parts))


def served(ms: float, requests: int, status: int = 200, day: str = DAY) -> tuple[str, int, int, int]:
    """A serving_traffic row: `requests` answered with `status` in about `ms` milliseconds."""
    return (day, status, bucket_of(ms), requests)


def feature(name: str, value: float, threshold: float, method: str = "psi") -> dict[str, Any]:
    """One feature's drift result in a window."""
    return {"feature": name, "value": value, "threshold": threshold, "method": method, "drifted": False}


def window(start: str, *features: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """A stored monitoring window with its drift results."""
    return {"start": start, "model_version": version, "drift": {"features": list(features), "share": 0.0}}


def batch_run(run_date: str, customers: int) -> dict[str, Any]:
    """A recorded batch run with `customers` at-risk customers in its summary."""
    at_risk = [
        {"customer_id": f"c{i}", "churn_probability": 0.9, "revenue_at_risk": 100.0 - i, "risk": "high"}
        for i in range(customers)
    ]
    summary = {"run_date": run_date, "rows_scored": 1000, "revenue_at_risk": 5000.0, "at_risk": at_risk}
    return {"kind": BATCH, "finished_at": f"{run_date}T02:00:00", "model_version": "1", "summary": summary}


def near(bucket_ms: float | None, ms: float) -> bool:
    """Whether a quantile read from the buckets is the upper edge of the bucket holding `ms`."""
    return bucket_ms is not None and ms <= bucket_ms < ms * 1.12


def test_p50_and_p99_are_read_from_the_latency_buckets() -> None:
    one_slow = panels.traffic(snapshot(traffic=[served(2.0, 99), served(100.0, 1)]))
    assert bucket_upper_ms(bucket_of(2.0)) == one_slow["p50_ms"][0]
    assert near(one_slow["p50_ms"][0], 2.0)
    assert near(one_slow["p99_ms"][0], 2.0)  # 1% slow is at, not above, the 99th percentile

    two_slow = panels.traffic(snapshot(traffic=[served(2.0, 98), served(100.0, 2)]))
    assert near(two_slow["p50_ms"][0], 2.0)
    assert near(two_slow["p99_ms"][0], 100.0)


def test_errors_rate_limits_and_rejections_are_counted_apart() -> None:
    rows = [
        served(2.0, 10),
        served(2.0, 3, 500),
        served(2.0, 1, 503),
        served(2.0, 4, 429),
        served(2.0, 5, 422),
    ]
    found = panels.traffic(snapshot(traffic=rows))
    assert found["requests"] == [23]
    assert found["errors"] == [4]
    assert found["rate_limited"] == [4]
    assert found["rejected"] == [5]


def test_refused_and_failed_requests_do_not_count_in_the_latency() -> None:
    rows = [served(2.0, 10), served(500.0, 50, 500), served(300.0, 40, 429), served(200.0, 30, 401)]
    found = panels.traffic(snapshot(traffic=rows))
    assert near(found["p50_ms"][0], 2.0)
    assert near(found["p99_ms"][0], 2.0)


def test_online_and_batch_predictions_are_shown_per_day() -> None:
    volumes = [
        ("2024-05-01", "online", 300),
        ("2024-05-01", "online", 200),  # two model versions on the same day
        ("2024-05-01", "batch", 7000),
        ("2024-05-02", "online", 40),
    ]
    found = panels.traffic(snapshot(volumes=volumes, traffic=[served(2.0, 5, day="2024-05-03")]))
    assert found["days"] == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert found["online"] == [500, 40, 0]
    assert found["batch"] == [7000, 0, 0]
    assert found["requests"] == [0, 0, 5]
    assert found["p50_ms"][:2] == [None, None]  # no served request: no latency, not zero


def test_drift_cells_are_the_value_over_its_threshold() -> None:
    windows = [window("2024-05-01", feature("tenure", 0.3, 0.2), feature("monthly_charges", 0.05, 0.2))]
    found = panels.drift(windows)
    assert found["features"] == ["tenure", "monthly_charges"]
    assert found["ratio"] == [[1.5], [0.25]]


def test_a_chi2_p_value_below_its_threshold_is_a_ratio_above_one() -> None:
    drifted = feature("contract", 0.002, 0.01, method="chi2")
    steady = feature("contract", 0.5, 0.01, method="chi2")
    found = panels.drift([window("2024-05-01", steady), window("2024-05-02", drifted)])
    calm, moved = found["ratio"][0]
    assert calm < 1 < moved
    assert moved == pytest.approx(5.0)


def test_a_feature_missing_from_a_window_has_no_cell() -> None:
    windows = [
        window("2024-05-01", feature("tenure", 0.1, 0.2)),
        window("2024-05-02", feature("tenure", 0.1, 0.2), feature("contract", 0.4, 0.2)),
    ]
    found = panels.drift(windows)
    assert found["features"] == ["tenure", "contract"]
    assert found["ratio"] == [[0.5, 0.5], [None, 2.0]]
    assert found["cells"][1][0] is None


@pytest.mark.parametrize(
    ("panel", "command"),
    [
        ("traffic", "churn simulate"),
        ("scores", "churn monitor run"),
        ("drift", "churn monitor run"),
        ("performance", "churn monitor run"),
        ("alerts", "churn monitor run"),
        ("at-risk", "churn batch score"),
        ("data-quality", "churn batch score"),
    ],
)
def test_an_empty_panel_names_the_command_that_fills_it(panel: str, command: str) -> None:
    found = panels.build(snapshot(), model={})
    assert command in found[panel]["empty"]


def test_panels_with_data_are_not_empty() -> None:
    filled = snapshot(
        windows=[window("2024-05-01", feature("tenure", 0.1, 0.2)) | {"performance": _performance()}],
        traffic=[served(2.0, 1)],
        runs=[batch_run("2024-05-01", 1) | {"rows_in": 1, "rows_valid": 1, "rows_quarantined": 0}],
        last_monitor_run="2024-05-01T03:00:00+00:00",
    )
    found = panels.build(filled, model={})
    for panel in ("traffic", "drift", "performance", "alerts", "at-risk", "data-quality"):
        assert "empty" not in found[panel], panel


def test_at_risk_shows_the_latest_batch_run_and_its_top_customers() -> None:
    ingest = {"kind": INGEST, "finished_at": "2024-05-03T01:00:00", "summary": {}}
    runs = [ingest, batch_run("2024-05-02", panels.TOP_CUSTOMERS + 5), batch_run("2024-05-01", 3)]
    found = panels.at_risk(runs)  # the store lists runs newest first
    assert found["run_date"] == "2024-05-02"
    assert len(found["customers"]) == panels.TOP_CUSTOMERS
    assert found["customers"][0]["customer_id"] == "c0"
    assert found["revenue_at_risk"] == 5000.0


def _performance() -> dict[str, Any]:
    return {"realised": {}, "estimated": {}, "coverage": 0.0, "labels": 0, "labels_due": 0}
