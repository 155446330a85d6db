"""Delayed labels: ingest with quarantine, and the join of predictions with their outcomes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from churn_mlops.cli import app
from churn_mlops.data.spec import load_spec
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.labels import parse_labels
from churn_mlops.monitoring.performance import ClassCounts, add_by_slice
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.settings import get_settings

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = int(datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitorStore]:
    monitor_store = MonitorStore(f"sqlite:///{tmp_path / 'serving.db'}")
    yield monitor_store
    monitor_store.close()


def add_scores(store: MonitorStore, rows: list[tuple[int, str, int, float, int]]) -> None:
    """Scored predictions: (id, customer, at_ms, probability, decision), all by version 1."""
    frame = pl.DataFrame(
        rows, schema=["prediction_id", "customer_id", "at_ms", "probability", "prediction"], orient="row"
    ).with_columns(model_version=pl.lit("1"))
    with store.engine.begin() as connection:
        store.outcomes.add_scores(frame, connection)


def add_labels(store: MonitorStore, rows: list[tuple[str, bool, int]]) -> tuple[int, int]:
    frame = pl.DataFrame(rows, schema=["customer_id", "churned", "observed_ms"], orient="row")
    return store.outcomes.add_labels(frame, "test")


def joined(store: MonitorStore, horizon_days: float = 30) -> list[tuple[float, float, float]]:
    batches = store.outcomes.labelled("1", T0 - DAY_MS, T0 + DAY_MS, int(horizon_days * DAY_MS), 1000)
    return sorted(
        (float(p), float(d), float(y))
        for ps, ds, ys, _ in batches
        for p, d, y in zip(ps, ds, ys, strict=True)
    )


def test_an_outcome_counts_within_the_horizon_after_the_prediction_only(store: MonitorStore) -> None:
    add_scores(
        store,
        [
            (1, "at-prediction", T0, 0.1, 0),
            (2, "at-horizon", T0, 0.2, 0),
            (3, "past-horizon", T0, 0.3, 0),
            (4, "just-after", T0, 0.4, 0),
        ],
    )
    add_labels(
        store,
        [
            ("at-prediction", True, T0),  # not after the prediction: it cannot be its outcome
            ("at-horizon", True, T0 + 30 * DAY_MS),
            ("past-horizon", True, T0 + 30 * DAY_MS + 1),  # too late
            ("just-after", False, T0 + 1),
        ],
    )
    assert joined(store) == [(0.2, 0.0, 1.0), (0.4, 0.0, 0.0)]
    assert joined(store, horizon_days=60) == [(0.2, 0.0, 1.0), (0.3, 0.0, 1.0), (0.4, 0.0, 0.0)]


def test_the_first_outcome_after_a_prediction_wins_and_duplicates_are_counted(store: MonitorStore) -> None:
    add_scores(store, [(1, "c1", T0, 0.7, 1), (2, "c1", T0 + 10 * DAY_MS, 0.9, 1)])
    assert add_labels(store, [("c1", False, T0 + 5 * DAY_MS), ("c1", True, T0 + 20 * DAY_MS)]) == (2, 0)
    assert add_labels(store, [("c1", False, T0 + 5 * DAY_MS), ("c2", True, T0)]) == (1, 1)
    # The first prediction's first outcome is "stayed"; the second prediction's is "churned".
    batches = store.outcomes.labelled("1", T0 - DAY_MS, T0 + 11 * DAY_MS, 30 * DAY_MS, 1000)
    pairs = sorted((float(p), float(y)) for ps, _, ys, _ in batches for p, y in zip(ps, ys, strict=True))
    assert pairs == [(0.7, 0.0), (0.9, 1.0)]
    with store.engine.connect() as connection:
        assert len(connection.execute(tables.labels.select()).all()) == 3


def test_bad_label_rows_are_quarantined_with_reasons() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    raw = pl.DataFrame(
        {
            "customerID": ["a", "", "c", "d", "e", "f", None],
            "Churn": ["Yes", "No", "maybe", "no", "1", "true", "No"],
            "observed_at": [
                "2026-11-01T10:00:00Z",
                "2026-11-01",
                "2026-11-02 08:00",
                "yesterday",
                "2027-06-01",
                "2026-11-03T10:00:00+02:00",
                "2026-11-04",
            ],
        }
    )
    valid, quarantined = parse_labels(raw, load_spec(), now)
    assert valid.height + quarantined.height == raw.height
    assert valid.to_dicts() == [
        {
            "customer_id": "a",
            "churned": True,
            "observed_ms": int(datetime(2026, 11, 1, 10, tzinfo=UTC).timestamp() * 1000),
        },
        {
            "customer_id": "f",
            "churned": True,
            "observed_ms": int(datetime(2026, 11, 3, 8, tzinfo=UTC).timestamp() * 1000),
        },
    ]
    reasons = dict(zip(quarantined.get_column("_row"), quarantined.get_column("_reasons"), strict=True))
    assert reasons == {
        2: "customer id is missing",
        3: "maybe is not an outcome (yes/no, true/false, 1/0)",
        4: "yesterday is not a time",
        5: "observed_at is in the future",
        7: "customer id is missing",
    }


def test_labels_ingest_counts_add_up_and_unknown_customers_are_counted(
    tmp_path: Path, churn_home: Path
) -> None:
    source = tmp_path / "outcomes.csv"
    pl.DataFrame(
        {
            "customer_id": ["known", "stranger", "", "known"],
            "churned": ["yes", "no", "yes", "yes"],
            "observed_at": ["2026-11-05", "2026-11-05", "2026-11-05", "2026-11-05"],
        }
    ).write_csv(source)
    store = MonitorStore(f"sqlite:///{churn_home / 'serving.db'}")
    try:
        add_scores(store, [(1, "known", T0, 0.5, 1)])
    finally:
        store.close()
    runner = CliRunner()
    first = runner.invoke(app, ["labels", "ingest", "--source", str(source), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["rows_in"] == 4
    assert (summary["added"], summary["duplicates"], summary["quarantined"]) == (2, 1, 1)
    assert summary["unknown_customers"] == 1
    assert Path(summary["quarantine_path"]).exists()
    again = json.loads(runner.invoke(app, ["labels", "ingest", "--source", str(source), "--json"]).stdout)
    assert (again["added"], again["duplicates"]) == (0, 3)


def test_a_bad_outcome_in_a_churned_column_is_quarantined_not_stored() -> None:
    raw = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "churned": ["maybe", None, "1.0", "no"],
            "observed_at": ["2026-11-01", "2026-11-01", "2026-11-01", "2026-11-01"],
        }
    )
    valid, quarantined = parse_labels(raw, load_spec(), datetime(2026, 12, 1, tzinfo=UTC))
    assert valid.get_column("customer_id").to_list() == ["c", "d"]
    assert valid.get_column("churned").to_list() == [True, False]
    assert quarantined.get_column("churned").to_list() == ["maybe", None], "the raw values are kept"
    assert quarantined.get_column("_reasons").to_list() == [
        "maybe is not an outcome (yes/no, true/false, 1/0)",
        "missing is not an outcome (yes/no, true/false, 1/0)",
    ]


def test_labels_without_an_outcome_column_are_refused_by_name(tmp_path: Path, churn_home: Path) -> None:
    source = tmp_path / "outcomes.csv"
    pl.DataFrame({"customer_id": ["a"], "observed_at": ["2026-11-05"]}).write_csv(source)
    result = CliRunner().invoke(app, ["labels", "ingest", "--source", str(source)])
    assert result.exit_code == 4
    assert "no column for the outcome (churned)" in result.output


def test_realised_figures_per_slice_count_each_prediction_in_its_slices(store: MonitorStore) -> None:
    keys = ['{"keys": ["contract=One year", "tenure=<12"]}', '{"keys": ["contract=Two year", "tenure=<12"]}']
    rows = [(i, f"c{i}", T0 + i, (i % 10) / 10 + 0.05, int(i % 10 >= 5)) for i in range(40)]
    frame = pl.DataFrame(
        rows, schema=["prediction_id", "customer_id", "at_ms", "probability", "prediction"], orient="row"
    ).with_columns(model_version=pl.lit("1"), slices=pl.Series([keys[i % 2] for i in range(40)]))
    with store.engine.begin() as connection:
        store.outcomes.add_scores(frame, connection)
    add_labels(store, [(f"c{i}", i % 3 == 0, T0 + DAY_MS) for i in range(40)])
    by_slice: dict[str, ClassCounts] = {}
    for batch in store.outcomes.labelled("1", T0 - DAY_MS, T0 + DAY_MS, 30 * DAY_MS, 7):
        add_by_slice(by_slice, batch.slices, batch.probabilities, batch.decisions, batch.outcomes)
    assert sorted(by_slice) == ["contract=One year", "contract=Two year", "tenure=<12"]
    assert by_slice["tenure=<12"].total == 40
    one_year = [r for r in rows if r[0] % 2 == 0]
    expected = ClassCounts.empty()
    expected.add([r[3] for r in one_year], [r[4] for r in one_year], [r[0] % 3 == 0 for r in one_year])
    assert by_slice["contract=One year"].positives.tolist() == expected.positives.tolist()
    assert (by_slice["contract=One year"].tp, by_slice["contract=One year"].fn) == (expected.tp, expected.fn)


def test_an_unreachable_store_is_a_one_line_error(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_SERVING__DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    get_settings.cache_clear()
    for command in (["monitor", "run"], ["monitor", "show"], ["alerts", "list"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 8, result.output
        assert result.output.startswith(
            "error: monitoring store at postgresql+psycopg://nobody@127.0.0.1:9/none"
        )
        assert result.output.count("\n") == 1


def test_a_malformed_label_record_is_quarantined_with_its_line_and_the_rest_stored(
    tmp_path: Path, churn_home: Path
) -> None:
    source = tmp_path / "outcomes.csv"
    source.write_bytes(
        b"customer_id,churned,observed_at\n"
        b"a,yes,2026-11-05\n"
        b"b,no,2026-11-05,extra\n"
        b"c\xff,no,2026-11-05\n"
        b"d,yes,2026-11-05\n"
    )
    result = CliRunner().invoke(app, ["labels", "ingest", "--source", str(source), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows_in"], summary["added"], summary["quarantined"]) == (4, 2, 2)
    quarantined = pl.read_parquet(summary["quarantine_path"]).sort("_row")
    assert quarantined.get_column("_reasons").str.slice(0, 7).to_list() == ["line 3:", "line 4:"]
    assert "_malformed" not in quarantined.columns
