"""What both batch engines do with scored batches: write them, check the run, commit or abort.

Scores and quarantined rows go to their outputs as they come; the run's table-level checks
(rows at all, not mostly bad rows) decide at the end whether the scores are committed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from churn_mlops.batch.output import ScoreWriter
from churn_mlops.batch.scoring import ScoredBatch
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import DataValidationError


def drain(
    batches: Iterable[ScoredBatch],
    writer: ScoreWriter,
    quarantine: QuarantineWriter,
    totals: RunTotals,
    spec: DatasetSpec,
) -> None:
    """Write every scored batch, check the run's totals, commit both outputs; on failure abort both."""
    iterator = iter(batches)
    try:
        for scored in iterator:
            writer.write(scored.scores)
            quarantine.write(scored.quarantine)
            totals.add(scored.scores, scored.quarantine.height, scored.rows_in, scored.profile)
        check_totals(totals, spec.max_quarantine_fraction)
        writer.commit()
    except BaseException:
        writer.abort()
        quarantine.abort()
        raise
    finally:
        if isinstance(iterator, Generator):
            iterator.close()
    quarantine.commit()


def check_totals(totals: RunTotals, max_quarantine_fraction: float) -> None:
    """Table-level checks over the whole input: rows at all, and not mostly bad rows."""
    if totals.rows_in == 0:
        raise DataValidationError("the input has no rows")
    if totals.rows_quarantined > max_quarantine_fraction * totals.rows_in:
        raise DataValidationError(
            f"{totals.rows_quarantined} of {totals.rows_in} rows failed validation; the input does not "
            "match the dataset spec (see the quarantine file)"
        )
    if totals.rows_scored == 0:
        raise DataValidationError("no valid rows to score (see the quarantine file)")


class QuarantineWriter:
    """Streams quarantined rows (all text, plus reasons) to one Parquet file, if there are any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Add quarantined rows."""
        if frame.height == 0:
            return
        table = frame.to_arrow()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def commit(self) -> None:
        """Close the file."""
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        """Close the file; quarantined rows of a failed run are kept for inspection."""
        self.commit()

    @property
    def written(self) -> Path | None:
        """The quarantine file, if any row was quarantined."""
        return self.path if self._writer is not None else None
