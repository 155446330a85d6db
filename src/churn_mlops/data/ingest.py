"""The ingestion job: read a source, validate it, quarantine bad rows, store valid rows in the lake."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from churn_mlops.data.lake import Lake, LakeVersion
from churn_mlops.data.sources import Source, read_source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.validation import ValidationReport, ValidationResult, snapshot_key, validate
from churn_mlops.errors import DataValidationError


@dataclass(frozen=True)
class IngestResult:
    """What an ingestion did: the validation counts, the lake version, where bad rows went."""

    report: ValidationReport
    version: LakeVersion | None
    quarantine_path: Path | None

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary for reports and `--json`."""
        version = self.version
        return {
            **asdict(self.report),
            "lake_version": version.manifest.version if version else None,
            "lake_path": str(version.data_path) if version else None,
            "created": version.created if version else None,
            "quarantine_path": str(self.quarantine_path) if self.quarantine_path else None,
        }


def check(
    source: Source, spec: DatasetSpec, *, quarantine_dir: Path | None, require_target: bool = True
) -> IngestResult:
    """Validate a source without touching the lake; bad rows still go to the quarantine."""
    result = _validate(source, spec, require_target)
    return IngestResult(result.report, None, _quarantine(result, quarantine_dir, spec))


def ingest(
    source: Source, spec: DatasetSpec, *, lake: Lake, quarantine_dir: Path, require_target: bool = True
) -> IngestResult:
    """Validate a source and store its valid rows as a lake version (found again if it exists).

    Rows are stored sorted by id (and snapshot time, for a table with history): a customer table
    is a set, and a database returns it in any order, so the version depends only on what it holds.
    """
    result = _validate(source, spec, require_target)
    quarantine_path = _quarantine(result, quarantine_dir, spec)
    version = lake.write(
        result.valid.sort(snapshot_key(spec, result.valid.columns)),
        dataset=spec.name,
        source=source.describe(),
        spec=spec.name,
        spec_digest=spec.digest(),
        validation=asdict(result.report),
    )
    return IngestResult(result.report, version, quarantine_path)


def _validate(source: Source, spec: DatasetSpec, require_target: bool) -> ValidationResult:
    raw = read_source(source, recover=True)
    try:
        return validate(raw, spec, require_target=require_target)
    except DataValidationError as exc:
        raise DataValidationError(f"{source.describe()}: {exc}") from exc


def _quarantine(result: ValidationResult, directory: Path | None, spec: DatasetSpec) -> Path | None:
    """Write quarantined rows and the run's report beside them; None when there are none."""
    if directory is None or result.quarantine.height == 0:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(result.quarantine.write_csv().encode()).hexdigest()[:8]
    path = directory / spec.name / f"{stamp}-{digest}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.quarantine.write_parquet(path)
    path.with_suffix(".json").write_text(json.dumps(asdict(result.report), indent=2) + "\n")
    return path
