"""The Spark session of a batch run: the active one, or one started for the run and stopped after.

A local master keeps Spark on loopback and runs its Python workers with this interpreter (the one
that has churn_mlops, however `churn` was started), unless PYSPARK_PYTHON names another. The
run's SQL settings (Arrow batches of the run's size, UTC microsecond timestamps) are set for the
run; a reused session gets its own values back afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from churn_mlops.errors import ConfigError, first_line
from churn_mlops.settings import BatchSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger("churn_mlops.batch.spark")
APP_NAME = "churn-batch-score"


@contextmanager
def spark_session(batch: BatchSettings) -> Iterator[SparkSession]:
    """The active SparkSession, or a new one on `batch.spark_master` that is stopped afterwards."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(
            "the spark engine needs pyspark: install the spark extra: uv sync --extra spark"
        ) from exc
    spark = SparkSession.getActiveSession()
    owned = spark is None
    spark = spark or _start(batch.spark_master)
    try:
        with _runtime_conf(spark, batch.batch_rows):
            yield spark
    finally:
        if owned:
            spark.stop()


def _start(master: str) -> SparkSession:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ConfigError("the spark engine needs Java 17 or later: install a JDK or set JAVA_HOME")
    builder = SparkSession.builder.master(master).appName(APP_NAME)
    for key, value in _session_conf(master).items():
        builder = builder.config(key, value)
    started = time.perf_counter()
    try:
        with _worker_python(master):
            spark = builder.getOrCreate()
    except (PySparkException, Py4JError, OSError) as exc:
        raise ConfigError(
            f"cannot start Spark on {master} ({first_line(exc)}); it needs Java 17 or later"
        ) from exc
    spark.sparkContext.setLogLevel("WARN")
    logger.info("Spark %s on %s started in %.1f s", spark.version, master, time.perf_counter() - started)
    return spark


def _session_conf(master: str) -> dict[str, str]:
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    if master.startswith("local"):
        # One machine: stay on loopback, and run Python workers with this interpreter and its packages.
        conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    return conf


@contextmanager
def _worker_python(master: str) -> Iterator[None]:
    """Have the Python workers of a local Spark session run this interpreter, unless PYSPARK_PYTHON is set.

    PySpark takes the workers' interpreter from PYSPARK_PYTHON when the context starts (else
    `python3` from PATH, which may lack churn_mlops), not from the `spark.pyspark.python` setting.
    """
    if not master.startswith("local") or os.environ.get("PYSPARK_PYTHON"):
        yield
        return
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        yield
    finally:
        os.environ.pop("PYSPARK_PYTHON", None)


@contextmanager
def _runtime_conf(spark: SparkSession, batch_rows: int) -> Iterator[None]:
    """Set the run's SQL settings; a reused session gets its own values back afterwards."""
    wanted = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows),
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # read back as UTC microseconds
    }
    before = {key: spark.conf.get(key, None) for key in wanted}
    for key, value in wanted.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)
