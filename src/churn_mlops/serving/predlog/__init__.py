"""The durable prediction log: every served prediction lands in one SQL table, group-committed.

`PredictionLog.write` returns only once its records are committed, so an acknowledged prediction
is in the database: on SQLite (WAL, synchronous=NORMAL) it survives a killed process, though not a
power cut. Writes that wait together are committed together, in one transaction of multi-row
INSERTs (`log`: where and when a batch commits; `window`: when a batch waits for more). A
failed commit reaches each of its waiters as a `PredictionLogError` and the log goes on with the
next batch; `close` commits everything written before it and refuses later writes. SQLite is the
default and PostgreSQL works the same by URL; `at` reads back as a UTC-aware datetime on both. On
SQLite a checkpointer thread keeps the WAL small (`checkpoint`), so no commit has to.
"""

from churn_mlops.serving.predlog.log import PredictionLog
from churn_mlops.serving.predlog.record import PredictionRecord
from churn_mlops.serving.predlog.table import Insert, PredictionLogError, predictions_table

__all__ = ["Insert", "PredictionLog", "PredictionLogError", "PredictionRecord", "predictions_table"]
