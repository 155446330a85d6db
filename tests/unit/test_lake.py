"""The versioned lake: content-addressed, idempotent, found by id, prefix or 'latest'."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from churn_mlops.data.lake import Lake, content_hash
from churn_mlops.errors import VersionNotFoundError

FRAME = pl.DataFrame({"id": ["a", "b", None], "x": [1.5, None, 3.0], "flag": [True, None, False]})


def _write(lake: Lake, frame: pl.DataFrame, source: str = "test.csv"):  # type: ignore[no-untyped-def]
    return lake.write(frame, dataset="telco", source=source, spec="telco", spec_digest="d", validation={})


def test_hash_depends_on_content_not_chunking() -> None:
    chunked = pl.concat([FRAME.head(1), FRAME.tail(2)], rechunk=False)
    assert content_hash(chunked) == content_hash(FRAME)
    assert content_hash(FRAME.with_columns(pl.col("x").fill_null(0.0))) != content_hash(FRAME)
    assert content_hash(FRAME.with_columns(pl.col("id").fill_null(""))) != content_hash(FRAME)
    assert content_hash(FRAME.rename({"x": "y"})) != content_hash(FRAME)
    assert content_hash(FRAME.reverse()) != content_hash(FRAME)


def test_hash_is_stable_across_releases() -> None:
    # Lake version ids are prefixes of this digest: a change here orphans every stored version.
    assert content_hash(FRAME) == "f5c25bff86ee30768a1253a72298dc204af5396ffe586db819c5f5c32ef73af2"
    with_ints = FRAME.with_columns(n=pl.Series([1, None, 3], dtype=pl.Int64))
    assert content_hash(with_ints) == "e3dc599a5b31f91f1dcfeb513d0427841fdf8ff1a5326fc0aae7f67654754813"


def test_writing_the_same_data_twice_finds_the_existing_version(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = _write(lake, FRAME, "a.csv")
    second = _write(lake, FRAME.clone(), "b.parquet")
    assert first.created
    assert not second.created
    assert second.manifest == first.manifest
    assert len(lake.versions()) == 1
    assert lake.read(first).equals(FRAME)


def test_versions_are_found_by_id_prefix_and_latest(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = _write(lake, FRAME)
    second = _write(lake, FRAME.head(2))
    assert lake.get(first.manifest.version).path == first.path
    assert lake.get(second.manifest.version[:6]).path == second.path
    assert {v.manifest.version for v in lake.versions("telco")} == {
        first.manifest.version,
        second.manifest.version,
    }
    assert lake.get("latest").manifest.created_at >= first.manifest.created_at


def test_an_unknown_version_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VersionNotFoundError, match="no lake version matches 'ffff'"):
        Lake(tmp_path).get("ffff")


def test_a_version_is_complete_or_absent(tmp_path: Path) -> None:
    version = _write(Lake(tmp_path), FRAME)
    assert sorted(p.name for p in version.path.iterdir()) == ["data.parquet", "manifest.json"]
    assert not list(version.path.parent.glob(".staging-*"))


def test_snapshot_times_are_part_of_a_versions_content(tmp_path: Path) -> None:
    base = pl.DataFrame({"customer_id": ["a", "a"], "tenure": [1, 2]})
    times = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)]
    first = base.with_columns(pl.Series("snapshot_at", times, dtype=pl.Datetime("us", "UTC")))
    later = base.with_columns(pl.Series("snapshot_at", times[::-1], dtype=pl.Datetime("us", "UTC")))
    assert content_hash(first) == content_hash(first.clone())
    assert content_hash(first) != content_hash(later)
    lake = Lake(tmp_path)
    stored = lake.read(_write(lake, first))
    assert stored.equals(first), "the lake keeps the snapshots and their times"
