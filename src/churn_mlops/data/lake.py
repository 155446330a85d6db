"""The versioned lake: validated tables as Parquet under CHURN_HOME, addressed by content hash.

A version is a folder `lake/<dataset>/<version>/` holding `data.parquet` and `manifest.json`.
The version id is derived from the data alone, so writing the same rows twice, from any
source, finds the existing version instead of making a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from churn_mlops.errors import VersionNotFoundError

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What a lake version holds and where it came from."""

    dataset: str
    version: str
    content_hash: str
    rows: int
    columns: list[str]
    source: str
    spec: str
    spec_digest: str
    created_at: str
    validation: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class LakeVersion:
    """A version in the lake, and whether this write created it or found it already there."""

    manifest: Manifest
    path: Path
    created: bool

    @property
    def data_path(self) -> Path:
        """The Parquet file of this version."""
        return self.path / DATA_FILE


def content_hash(frame: pl.DataFrame) -> str:
    """A sha256 of column names, types, nulls and values; independent of how it was read."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame.get_column(name).rechunk()
        digest.update(f"{name}:{column.dtype}\0".encode())
        digest.update(_raw_bytes(column.is_null().to_numpy()))
        for buffer in _value_buffers(column):
            digest.update(buffer)
    return digest.hexdigest()


def _value_buffers(column: pl.Series) -> list[memoryview | bytes]:
    """The bytes of a column's values, nulls filled, as views rather than copies where possible."""
    if column.dtype == pl.String:
        array = pa.array(column.fill_null("").to_arrow(), type=pa.large_string())
        return [memoryview(b) for b in array.buffers()[1:] if b is not None]
    if column.dtype == pl.Boolean:
        return [_raw_bytes(column.fill_null(False).cast(pl.UInt8).to_numpy())]
    if column.dtype.is_temporal():  # snapshot and label times: their integer ticks (the unit is in the name)
        column = column.to_physical()
    return [_raw_bytes(column.fill_null(0).to_numpy())]


def _raw_bytes(array: np.ndarray) -> memoryview | bytes:
    """The array's memory without a copy when it is a contiguous plain number array, else its bytes."""
    if array.dtype.kind in "biuf" and array.flags.c_contiguous:
        return array.data.cast("B")
    return array.tobytes()


class Lake:
    """Versioned Parquet tables under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(
        self,
        frame: pl.DataFrame,
        *,
        dataset: str,
        source: str,
        spec: str,
        spec_digest: str,
        validation: dict[str, object],
    ) -> LakeVersion:
        """Store a validated frame, or find the version that already holds the same data."""
        digest = content_hash(frame)
        version = digest[:12]
        path = self.root / dataset / version
        if (path / MANIFEST_FILE).exists():
            return LakeVersion(self._manifest(path), path, created=False)
        manifest = Manifest(
            dataset=dataset,
            version=version,
            content_hash=digest,
            rows=frame.height,
            columns=frame.columns,
            source=source,
            spec=spec,
            spec_digest=spec_digest,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            validation=validation,
        )
        self._write_atomically(path, frame, manifest)
        return LakeVersion(manifest, path, created=True)

    def versions(self, dataset: str | None = None) -> list[LakeVersion]:
        """All versions, oldest first, optionally of one dataset."""
        pattern = f"{dataset or '*'}/*/{MANIFEST_FILE}"
        found = [LakeVersion(self._manifest(p.parent), p.parent, False) for p in self.root.glob(pattern)]
        return sorted(found, key=lambda v: (v.manifest.created_at, v.manifest.version))

    def get(self, version: str, dataset: str | None = None) -> LakeVersion:
        """A version by id (a unique prefix will do), or `latest`."""
        candidates = self.versions(dataset)
        if version == "latest" and candidates:
            return candidates[-1]
        matches = [v for v in candidates if v.manifest.version.startswith(version)]
        if len(matches) != 1:
            problem = "no lake version" if not matches else "more than one lake version"
            raise VersionNotFoundError(f"{problem} matches {version!r} (see `churn data list`)")
        return matches[0]

    def read(self, version: LakeVersion) -> pl.DataFrame:
        """The data of a version."""
        return pl.read_parquet(version.data_path)

    def _manifest(self, path: Path) -> Manifest:
        return Manifest(**json.loads((path / MANIFEST_FILE).read_text()))

    def _write_atomically(self, path: Path, frame: pl.DataFrame, manifest: Manifest) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=path.parent))
        try:
            frame.write_parquet(staging / DATA_FILE, statistics=True)
            (staging / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
            os.replace(staging, path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (path / MANIFEST_FILE).exists():
                raise
