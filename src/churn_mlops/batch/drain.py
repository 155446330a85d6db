"""What both batch engines do with scored batches: write them, check the run, commit or abort.

Scores and quarantined rows go to temporary files as they come; the run's table-level checks
(rows at all, not mostly bad rows) decide at the end whether the scores are committed. The
quarantine file appears once the run has finished: with its scores, or with the ChurnError that
failed it (its rows explain the failure); an interrupted run leaves none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Iterable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from churn_mlops.batch.output import ScoreWriter
from churn_mlops.batch.scoring import ScoredBatch
from churn_mlops.batch.staging import Claim, claim_file, staging_folder, sweep
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import ChurnError, DataValidationError


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
            totals.add(
                scored.scores,
                scored.quarantine.height,
                scored.rows_in,
                scored.profile,
                scored.leaders,
                scored.scorer,
            )
        check_totals(totals, spec.max_quarantine_fraction)
        writer.commit()
    except BaseException as exc:
        writer.abort()
        quarantine.abort(keep=isinstance(exc, ChurnError))
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
    """Streams quarantined rows (all text, plus reasons) to one Parquet file, if there are any.

    The rows go to a locked file in the hidden staging folder beside the quarantine folder, renamed
    to `path` when the run finishes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._staging = staging_folder(path.parent)
        sweep(self._staging)
        self._staged: Claim | None = None
        self._writer: pq.ParquetWriter | None = None
        self._kept = False
        self.columns: Counter[str] = Counter()  # quarantined rows by the columns that failed

    def write(self, frame: pl.DataFrame) -> None:
        """Add quarantined rows."""
        if frame.height == 0:
            return
        if "_columns" in frame.columns:
            self.columns.update(dict(frame.get_column("_columns").value_counts().iter_rows()))
        table = frame.to_arrow()
        if self._writer is None:
            self._staged = claim_file(self._staging, prefix=f"{self.path.name}.")
            self._writer = pq.ParquetWriter(self._staged.path, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def commit(self) -> None:
        """Close the file and move it into the quarantine folder."""
        if self._writer is not None and self._staged is not None and self._staged.held:
            self._writer.close()
            self._staged.commit_to(self.path)
            self._kept = True

    def abort(self, *, keep: bool) -> None:
        """End a failed run: keep its rows for inspection, or drop them (an interrupted run)."""
        if keep:
            self.commit()
            return
        if self._writer is not None and self._staged is not None and self._staged.held:
            self._writer.close()
            self._staged.discard()

    @property
    def written(self) -> Path | None:
        """The quarantine file, if the run quarantined rows and finished."""
        return self.path if self._kept else None
