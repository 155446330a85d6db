"""One malformed CSV record is quarantined with its line number; the good rows are still read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from churn_mlops.settings import get_settings
from tests.commands import churn
from tests.integration.serving_fixtures import TrainedHome

BAD_LINE = 152  # the bad record comes after 150 good ones: line 1 is the header

DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "non-UTF-8 id": (lambda line: line.replace(b"-", b"-\xff", 1), "not valid UTF-8 (byte 0xff)"),
    "extra field": (lambda line: line + b",surplus", "22 fields, the header has 21"),
    "missing field": (lambda line: line.rsplit(b",", 1)[0], "20 fields, the header has 21"),
    "unterminated quote": (lambda line: b'"' + line, "a quote is never closed"),
}


def _telco_lines(telco_csv: Path) -> tuple[bytes, list[bytes]]:
    header, *rows = telco_csv.read_bytes().splitlines()
    return header, rows


def _damaged_csv(telco_csv: Path, path: Path, damage: Callable[[bytes], bytes]) -> tuple[list[str], str]:
    """200 good Telco rows and one damaged one at BAD_LINE; return the good ids and the bad one's."""
    header, rows = _telco_lines(telco_csv)
    good, bad = rows[:200], rows[200]
    path.write_bytes(b"\n".join([header, *good[: BAD_LINE - 2], damage(bad), *good[BAD_LINE - 2 :]]) + b"\n")
    return [r.split(b",", 1)[0].decode() for r in good], bad.split(b",", 1)[0].decode()


def _ingest(*args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    output = churn("data", *args, "--json", code=code)
    return json.loads(output) if code == 0 else {"error": output}


def _assert_quarantined(quarantine: pl.DataFrame, reason: str) -> None:
    assert quarantine.height == 1
    record = quarantine.row(0, named=True)
    assert record["_reasons"] == f"line {BAD_LINE}: {reason}"
    assert (record["_row"], record["_columns"]) == (BAD_LINE - 1, "_record")


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_ingest_quarantines_the_bad_record_and_stores_the_rest(
    damage: str, churn_home: Path, telco_csv: Path, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    good_ids, bad_id = _damaged_csv(telco_csv, path, DAMAGE[damage][0])
    report = _ingest("ingest", "--source", str(path))
    assert (report["rows_in"], report["rows_valid"], report["rows_quarantined"]) == (201, 200, 1)
    assert report["failures"] == [
        {
            "column": "_record",
            "check": "malformed",
            "rows": 1,
            "example": f"line {BAD_LINE}: {DAMAGE[damage][1]}",
        }
    ]
    lake = pl.read_parquet(report["lake_path"])
    assert sorted(lake.get_column("customer_id")) == sorted(good_ids)
    assert bad_id not in set(lake.get_column("customer_id"))
    _assert_quarantined(pl.read_parquet(report["quarantine_path"]), DAMAGE[damage][1])


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_validate_reports_the_bad_record(
    damage: str, churn_home: Path, telco_csv: Path, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    _damaged_csv(telco_csv, path, DAMAGE[damage][0])
    report = _ingest("validate", "--source", str(path))
    assert (report["rows_valid"], report["rows_quarantined"]) == (200, 1)
    _assert_quarantined(pl.read_parquet(report["quarantine_path"]), DAMAGE[damage][1])


def test_line_numbers_count_the_line_breaks_inside_quoted_fields(
    churn_home: Path, telco_csv: Path, tmp_path: Path
) -> None:
    header, rows = _telco_lines(telco_csv)
    noted = [header + b",note"] + [
        r + (b',"two\r\nlines"' if i == 3 else b",") for i, r in enumerate(rows[:100])
    ]
    noted[40] = noted[40].replace(b"-", b"-\xfe", 1)  # record 40 starts on line 42: one quoted break above
    (tmp_path / "notes.csv").write_bytes(b"\r\n".join(noted) + b"\r\n")
    report = _ingest("ingest", "--source", str(tmp_path / "notes.csv"))
    assert (report["rows_valid"], report["rows_quarantined"]) == (99, 1)
    quarantine = pl.read_parquet(report["quarantine_path"])
    assert quarantine.select("_row", "_reasons").row(0) == (40, "line 42: not valid UTF-8 (byte 0xfe)")


def test_a_file_of_mostly_bad_records_is_still_refused(
    churn_home: Path, telco_csv: Path, tmp_path: Path
) -> None:
    header, rows = _telco_lines(telco_csv)
    (tmp_path / "bad.csv").write_bytes(b"\n".join([header, *(r + b",x" for r in rows[:150]), *rows[150:200]]))
    error = _ingest("ingest", "--source", str(tmp_path / "bad.csv"), code=4)["error"]
    assert "150 of 200 rows failed validation" in error
    assert "line 2: 22 fields, the header has 21" in error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, "line 1 is not a header of text columns"),
        (b"", "cannot read as CSV"),
    ],
    ids=["binary", "empty"],
)
def test_a_file_that_is_not_csv_is_one_line(
    content: bytes, message: str, churn_home: Path, tmp_path: Path
) -> None:
    (tmp_path / "data.csv").write_bytes(content)
    error = _ingest("ingest", "--source", str(tmp_path / "data.csv"), code=3)["error"]
    assert message in error
    assert "data.csv" in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_batch_scoring_quarantines_the_bad_record_and_scores_the_rest(
    damage: str, home: TrainedHome, telco_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_BATCH__BATCH_ROWS", "100")  # a clean batch comes first, then the bad one
    get_settings.cache_clear()
    path = tmp_path / "customers.csv"
    good_ids, _ = _damaged_csv(telco_csv, path, DAMAGE[damage][0])
    output = churn(
        "batch", "score", "--input", str(path), "--output", str(tmp_path / "scores.parquet"), "--json"
    )
    summary = json.loads(output)
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (201, 200, 1)
    scored = pl.read_parquet(tmp_path / "scores.parquet").get_column("customer_id")
    assert scored.to_list() == good_ids
    _assert_quarantined(pl.read_parquet(summary["quarantine_path"]), DAMAGE[damage][1])
