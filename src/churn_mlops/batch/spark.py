"""The Spark batch engine: the local engine's `score_batch`, run on every Arrow batch by mapInArrow.

Spark reads the source (CSV as text under the header's names; Parquet files in the local engine's
order), executors score each Arrow batch with the Predictor they build once per Python worker
from broadcast, checksum-verified model files (its trees compiled on the worker's machine where
`batch.compiled` allows), and Spark writes one union table (scores, and
quarantined rows encoded as JSON) to a temporary Parquet folder. The driver streams that folder
back in source order into the local engine's ScoreWriter, QuarantineWriter and RunTotals, so both
engines write the same scores, quarantine file, top customers and summary.

Executors number rows within their partition; partitions follow the source order, so the driver
turns those numbers into the local engine's source row numbers (see `spark_table.py`).

Limits, and follow-ups:
- SQL sources are read on the driver with `iter_source` and handed to Spark batch by batch:
  reading them in Spark needs a JDBC driver jar, and nothing is downloaded.
- A CSV record must hold one field per header column on one line: Spark reads FAILFAST, so a
  malformed record fails the run, where the local engine quarantines it with its line number.
- Scores come back through a folder under CHURN_HOME/batch/.spark, which executors must be able
  to write: true for local[*]. On a cluster, write the scores from Spark straight to object
  storage instead and bring back only the totals and the quarantine.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from churn_mlops.batch.drain import QuarantineWriter, drain
from churn_mlops.batch.output import ScoreWriter
from churn_mlops.batch.scoring import ScoredBatch, ScoringContext, score_batch
from churn_mlops.batch.spark_session import spark_session
from churn_mlops.batch.spark_table import arrow_frame, encode, failure, read_back, spark_schema
from churn_mlops.batch.staging import claim_folder, sweep
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.sources import CSV_SUFFIXES, PARQUET_SUFFIXES, Source, iter_source, parquet_files
from churn_mlops.errors import ChecksumError, ChurnError, SourceError, first_line
from churn_mlops.models.artifacts import CHECKSUMS_FILE, Predictor, predictor_from_files
from churn_mlops.models.compiled import Mode, cache_dir, with_compiled_trees
from churn_mlops.settings import Settings

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

    from churn_mlops.models.registry import Registry

logger = logging.getLogger(__name__)

_SPARK_ERROR = re.compile(r"\[([A-Z_]+)(?:\.[A-Z_]+)?\] ([^\n]*?)(?:\s+SQLSTATE: \w+)?\s*$", re.MULTILINE)
_PREDICTORS: dict[str, Predictor] = {}  # in each Python worker: the current job's model, by checksums digest


def run_spark(
    source: Source,
    writer: ScoreWriter,
    context: ScoringContext,
    *,
    registry: Registry,
    settings: Settings,
    totals: RunTotals,
    quarantine: QuarantineWriter,
) -> float:
    """Score every row of the source on Spark into the writer, as the local engine would; return seconds."""
    started = time.perf_counter()
    drain(_session_batches(source, context, registry, settings), writer, quarantine, totals, context.spec)
    return time.perf_counter() - started


def _session_batches(
    source: Source, context: ScoringContext, registry: Registry, settings: Settings
) -> Iterator[ScoredBatch]:
    """Scored batches from a Spark job; the session and scratch space live as long as the iteration."""
    with (
        spark_session(settings.batch) as spark,
        _scratch(settings) as scratch,
        _shipped(spark, registry, context, scratch, settings) as job,
    ):
        yield from _scored_batches(spark, source, job, scratch, settings.batch.batch_rows)


@contextmanager
def _scratch(settings: Settings) -> Iterator[Path]:
    """A locked folder for the run's Spark output; those of killed runs are swept by the next run."""
    staging = settings.home / "batch" / ".spark"
    sweep(staging)
    folder = claim_folder(staging, prefix="run-")
    try:
        yield folder.path
    finally:
        folder.discard()


@dataclass(frozen=True)
class _Job:
    """What an executor needs to score: the model's files, and the run's context less its Predictor."""

    files: Broadcast[dict[str, bytes]]
    digest: str
    num_threads: int
    shared: dict[str, Any]  # every ScoringContext field but the predictor
    compiled: Mode  # batch.compiled: each worker compiles the trees for its own machine
    compiled_cache: str  # the workers' local cache of compiled trees

    def context(self) -> ScoringContext:
        """The ScoringContext on an executor, with this worker's verified Predictor."""
        return ScoringContext(predictor=_worker_predictor(self), **self.shared)


@contextmanager
def _shipped(
    spark: SparkSession, registry: Registry, context: ScoringContext, scratch: Path, settings: Settings
) -> Iterator[_Job]:
    """Broadcast the version's verified files for the run, and drop them afterwards."""
    folder = registry.fetch(context.model_version, scratch / "model")
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
    shared = {f.name: getattr(context, f.name) for f in fields(context) if f.name != "predictor"}
    threads = int(spark.sparkContext.getConf().get("spark.task.cpus", "1") or "1")
    broadcast = spark.sparkContext.broadcast(files)
    digest = hashlib.sha256(files[CHECKSUMS_FILE]).hexdigest()
    compiled = settings.batch.compiled, str(cache_dir(settings.home))
    try:
        yield _Job(broadcast, digest, threads, shared, *compiled)
    finally:
        broadcast.destroy()


def _worker_predictor(job: _Job) -> Predictor:
    """The job's Predictor, verified and built (its trees compiled) once per Python worker."""
    predictor = _PREDICTORS.get(job.digest)
    if predictor is None:
        files = job.files.value
        if hashlib.sha256(files.get(CHECKSUMS_FILE, b"")).hexdigest() != job.digest:
            raise ChecksumError(
                f"{CHECKSUMS_FILE}: the broadcast model is not the version the driver fetched"
            )
        predictor = predictor_from_files(files).with_threads(job.num_threads)
        predictor = with_compiled_trees(predictor, job.compiled, Path(job.compiled_cache))
        _PREDICTORS.clear()
        _PREDICTORS[job.digest] = predictor
    return predictor


def _scored_batches(
    spark: SparkSession, source: Source, job: _Job, scratch: Path, batch_rows: int
) -> Iterator[ScoredBatch]:
    """Score each Spark input in turn and stream its results back, numbering rows across inputs."""
    first_row = 1
    for index, frame in enumerate(_inputs(spark, source, batch_rows)):
        folder = scratch / f"scores-{index}"
        _score_to(folder, frame, job, source)
        for scored in read_back(folder, batch_rows, first_row):
            first_row += scored.rows_in
            yield scored
        shutil.rmtree(folder)


def _score_to(folder: Path, frame: DataFrame, job: _Job, source: Source) -> None:
    """Run the Spark job: score every partition with mapInArrow and write the union table as Parquet."""
    started = time.perf_counter()
    with _spark_errors(source):
        scored = frame.mapInArrow(functools.partial(_score_partition, job), spark_schema())
        scored.write.parquet(str(folder))
    logger.info("Spark scored %s in %.1f s", folder.name, time.perf_counter() - started)


def _inputs(spark: SparkSession, source: Source, batch_rows: int) -> Iterator[DataFrame]:
    """The source as Spark frames in source order: one for files, one per driver-read batch for SQL."""
    if not source.is_sql:
        with _spark_errors(source):
            frame = _read_files(spark, Path(source.location))
        yield frame
        return
    for batch in iter_source(source, batch_rows):
        with _spark_errors(source):
            frame = spark.createDataFrame(batch.with_columns(pl.col(pl.Null).cast(pl.String)).to_arrow())
        yield frame


def _read_files(spark: SparkSession, path: Path) -> DataFrame:
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
        # One read per file, unioned in the local engine's order: a single read would pack files by size.
        frames = [spark.read.parquet(name) for name in parquet_files(path)]
        return functools.reduce(lambda a, b: a.unionByName(b), frames)
    if path.suffix.lower() in CSV_SUFFIXES:
        return _read_csv(spark, path)
    raise SourceError(f"{path}: unknown file type (use .csv, .parquet or a folder of Parquet files)")


def _read_csv(spark: SparkSession, path: Path) -> DataFrame:
    from pyspark.sql.types import StringType, StructField, StructType

    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            header = next(csv.reader(file, delimiter=separator), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{path}: cannot read as CSV ({exc})") from exc
    if not header:
        raise SourceError(f"{path}: cannot read as CSV (no header line)")
    schema = StructType([StructField(name, StringType()) for name in header])
    # As polars reads CSV: "" doubles a quote, an empty field is null, a quoted empty one is "".
    # Spark turns fields equal to nullValue into null, so it is set to text no CSV holds.
    options = {"sep": separator, "quote": '"', "escape": '"', "nullValue": "\u0000", "mode": "FAILFAST"}
    return spark.read.csv(str(path), schema=schema, header=True, **options)


def _score_partition(job: _Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Score a partition's Arrow batches (rows numbered from 1 in the partition); a ChurnError is a row."""
    from pyspark import TaskContext

    task = TaskContext.get()
    part = task.partitionId() if task else 0
    first_row = 1
    try:
        context = job.context()
        for batch in batches:
            raw = arrow_frame(batch)
            scored = score_batch(raw, context, first_row=first_row)
            first_row += raw.height
            yield from encode(part, scored).to_arrow().to_batches()
    except ChurnError as exc:
        yield from failure(part, exc).to_arrow().to_batches()


@contextmanager
def _spark_errors(source: Source) -> Iterator[None]:
    """Spark's own failures as one-line ChurnErrors: input it cannot read is a SourceError."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JError) as exc:
        raise _translate(exc, source) from exc


def _translate(exc: Exception, source: Source) -> ChurnError:
    from pyspark.errors import PythonException

    if isinstance(exc, PythonException):  # a bug, not a ChurnError: those come back as rows
        return ChurnError(f"the Spark job failed: {str(exc).strip().splitlines()[-1]}")
    found = dict(_SPARK_ERROR.findall(str(exc)))  # error class to message; the innermost cause wins
    malformed = found.get("MALFORMED_CSV_RECORD") or found.get("MALFORMED_RECORD_IN_PARSING")
    if malformed:
        return SourceError(
            f"{source.describe()}: cannot read as CSV ({malformed}; the spark engine needs "
            "one field per header column on every line)"
        )
    for kind in ("FAILED_READ_FILE", "PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA"):
        if kind in found:
            return SourceError(f"{source.describe()}: cannot read ({found[kind]})")
    return ChurnError(f"the Spark job failed: {next(iter(found.values()), first_line(exc))}")
