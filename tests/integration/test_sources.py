"""Sources: the same customers from CSV, Parquet, SQLite and PostgreSQL land as one lake version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from churn_mlops.data.history import history
from churn_mlops.data.ingest import ingest
from churn_mlops.data.lake import Lake
from churn_mlops.data.sinks import write_frames
from churn_mlops.data.sources import Source, iter_source, read_source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import SourceError
from tests.factories import raw_customers


def _version(source: Source, spec: DatasetSpec, home: Path) -> str:
    result = ingest(source, spec, lake=Lake(home / "lake"), quarantine_dir=home / "quarantine")
    assert result.version is not None
    return result.version.manifest.version


def _typed(raw: pl.DataFrame) -> pl.DataFrame:
    """The CSV's text as a database would type it: numbers as numbers, 0/1 flags as integers."""
    return raw.with_columns(
        pl.col("SeniorCitizen", "tenure").cast(pl.Int64),
        pl.col("MonthlyCharges").cast(pl.Float64),
        pl.col("TotalCharges").str.strip_chars().replace("", None).cast(pl.Float64),
    )


@pytest.mark.postgres
def test_telco_lands_as_one_version_from_every_source(
    telco_csv: Path, spec: DatasetSpec, tmp_path: Path, postgres_engine: sa.Engine, postgres_table: str
) -> None:
    typed = _typed(pl.read_csv(telco_csv, infer_schema=False))
    (tmp_path / "folder").mkdir()
    typed.write_parquet(tmp_path / "telco.parquet")
    typed.head(3000).write_parquet(tmp_path / "folder" / "part-0.parquet")
    typed.slice(3000).write_parquet(tmp_path / "folder" / "part-1.parquet")
    sqlite_url = f"sqlite:///{tmp_path / 'telco.db'}"
    write_frames([typed], Source(sqlite_url, table="customers"))
    postgres_url = postgres_engine.url.render_as_string(hide_password=False)
    write_frames([typed], Source(postgres_url, table=postgres_table))
    sources = [
        Source(str(telco_csv)),
        Source(str(tmp_path / "telco.parquet")),
        Source(str(tmp_path / "folder")),
        Source(sqlite_url, table="customers"),
        Source(postgres_url, table=postgres_table),
        Source(postgres_url, query=f'SELECT * FROM {postgres_table} ORDER BY "tenure"'),
    ]
    versions = [_version(s, spec, tmp_path / "home") for s in sources]
    assert len(set(versions)) == 1, versions
    assert len(Lake(tmp_path / "home" / "lake").versions()) == 1


def test_parquet_and_sqlite_round_trip_the_raw_text(spec: DatasetSpec, tmp_path: Path) -> None:
    raw = raw_customers(100)
    write_frames([raw], Source(str(tmp_path / "c.parquet")))
    write_frames([raw], Source(f"sqlite:///{tmp_path / 'c.db'}", table="customers"))
    assert read_source(Source(str(tmp_path / "c.parquet"))).equals(raw)
    assert read_source(Source(f"sqlite:///{tmp_path / 'c.db'}", table="customers")).equals(raw)


def test_writers_refuse_to_overwrite_unless_forced(tmp_path: Path) -> None:
    raw = raw_customers(5)
    for target in (Source(str(tmp_path / "c.csv")), Source(f"sqlite:///{tmp_path / 'c.db'}", table="t")):
        write_frames([raw], target)
        with pytest.raises(SourceError, match="already exists"):
            write_frames([raw], target)
        assert write_frames([raw.head(2)], target, overwrite=True) == 2
        assert read_source(target).height == 2


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (Source("missing.csv"), "missing.csv: no such file"),
        (Source("data.xlsx"), "no such file"),
        (Source("sqlite:///missing.db", table="customers"), "missing.db: no such SQLite database file"),
        (Source("nosuchdb://host/db", table="t"), "unsupported database"),
        (Source("postgresql://postgres@127.0.0.1:1/test", table="t"), "connection"),
        (Source("sqlite:///:memory:"), "needs a table or a query"),
        (Source("sqlite:///:memory:", table="t", query="select 1"), "either a table or a query"),
        (Source("sqlite:///:memory:", table="t; drop table x"), "not a valid table name"),
        (Source("sqlite:///:memory:", table="customers"), "no such table: customers"),
    ],
)
def test_unreadable_sources_are_clear_errors(source: Source, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        read_source(source)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("a,b\n1,2\n")
    unknown = tmp_path / "data.xlsx"
    unknown.write_text("x")
    for path, message in [
        (binary, "cannot read as CSV"),
        (not_parquet, "cannot read as Parquet"),
        (unknown, "unknown file type"),
    ]:
        with pytest.raises(SourceError, match=f"{path.name}.*{message}"):
            read_source(Source(str(path)))


def test_passwords_are_hidden_in_descriptions() -> None:
    source = Source("postgresql://user:secret@db.internal/churn", table="customers")
    assert "secret" not in source.describe()
    assert "customers" in source.describe()


def test_reading_with_recovery_keeps_every_good_record_in_place(telco_csv: Path, tmp_path: Path) -> None:
    header, *rows = telco_csv.read_bytes().splitlines()[:301]
    rows[9] = rows[9] + b',"a quoted\nline break"'  # too many fields, over two lines
    rows[120] = rows[120].replace(b"-", b"-\xc3(", 1)
    rows[250] = rows[250].rsplit(b",", 2)[0]
    (tmp_path / "bad.csv").write_bytes(b"\n".join([header, *rows]) + b"\n")
    clean = pl.read_csv(telco_csv, infer_schema=False, n_rows=300)
    whole = read_source(Source(str(tmp_path / "bad.csv")), recover=True)
    streamed = pl.concat(iter_source(Source(str(tmp_path / "bad.csv")), 64, recover=True))
    assert whole.equals(streamed)
    marked = whole.get_column("_malformed")
    assert marked.drop_nulls().to_list() == [
        "line 11: 22 fields, the header has 21",
        "line 123: not valid UTF-8 (byte 0xc3)",
        "line 253: 19 fields, the header has 21",
    ]
    good = whole.filter(marked.is_null()).drop("_malformed")
    assert good.equals(clean.filter(~pl.int_range(pl.len()).is_in([9, 120, 250])))
    assert pl.concat(iter_source(Source(str(telco_csv)), 1000, recover=True)).height == 7043


def test_without_recovery_a_malformed_record_still_fails_the_read(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,2\n3,4,5\n")
    with pytest.raises(SourceError, match=r"bad\.csv: cannot read as CSV"):
        read_source(Source(str(tmp_path / "bad.csv")))


@pytest.mark.postgres
def test_a_history_lands_as_one_version_with_text_or_typed_timestamps(
    spec: DatasetSpec, tmp_path: Path, postgres_engine: sa.Engine, postgres_table: str
) -> None:
    text = pl.concat(list(history(200, days=40, seed=2, end=datetime(2026, 3, 1, tzinfo=UTC))))
    typed = text.with_columns(pl.col("snapshot_at", "churn_observed_at").str.to_datetime(time_zone="UTC"))
    text.write_csv(tmp_path / "history.csv")
    typed.write_parquet(tmp_path / "history.parquet")
    postgres_url = postgres_engine.url.render_as_string(hide_password=False)
    write_frames([text], Source(postgres_url, table=postgres_table))
    with postgres_engine.begin() as connection:
        for column in ("snapshot_at", "churn_observed_at"):
            to_timestamp = f"TYPE timestamptz USING {column}::timestamptz"
            connection.execute(sa.text(f"ALTER TABLE {postgres_table} ALTER COLUMN {column} {to_timestamp}"))
    sources = [
        Source(str(tmp_path / "history.csv")),
        Source(str(tmp_path / "history.parquet")),
        Source(postgres_url, table=postgres_table),
    ]
    versions = [_version(s, spec, tmp_path / "home") for s in sources]
    assert len(set(versions)) == 1, versions
    (version,) = Lake(tmp_path / "home" / "lake").versions()
    assert version.manifest.rows == text.height
    assert version.manifest.columns[:2] == ["customer_id", "snapshot_at"]
