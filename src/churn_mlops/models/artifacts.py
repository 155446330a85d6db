"""Model artifacts on disk: write a self-describing version, and load it back only if intact.

A version is a folder: the model (LightGBM's text model `model.txt`, or the logistic
regression's numbers `linear.json`), the fitted feature spec, `model.json` (model kind,
calibration, threshold, lineage), metrics, the reference profile, the model card, plots and
`checksums.json` (sha256 of every other file). Nothing here is a pickle.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from churn_mlops.errors import ChecksumError, ModelNotFoundError
from churn_mlops.features import Columns, FeatureSpec, transform
from churn_mlops.features.row import Record, RowTransform
from churn_mlops.models.booster import Booster
from churn_mlops.models.calibration import Calibration
from churn_mlops.models.linear import LinearModel
from churn_mlops.models.single_row import SingleRowBooster

MODEL_FILE = "model.txt"
LINEAR_FILE = "linear.json"
FEATURES_FILE = "features.json"
META_FILE = "model.json"
CHECKSUMS_FILE = "checksums.json"
REQUIRED = (FEATURES_FILE, META_FILE)  # and the model's own file, by its kind
MODEL_FILES = {"lightgbm": MODEL_FILE, "logistic_regression": LINEAR_FILE}  # model.json's model_kind
FORMAT_VERSION = 1


class Scorer(Protocol):
    """What a Predictor needs of a model: raw scores and per-feature contributions of a matrix."""

    def raw_score(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Log-odds of the rows."""
        ...

    def contributions(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Per-feature contributions, then the base value."""
        ...


class RowScorer(Protocol):
    """The one-row path of a model."""

    def raw_score(self, row: list[float]) -> float:
        """Log-odds of one row."""
        ...


@dataclass(frozen=True)
class Predictor:
    """A verified model version, ready to score raw canonical records."""

    booster: Scorer  # LightGBM's Booster, or the LinearModel
    features: FeatureSpec
    calibration: Calibration
    threshold: float
    meta: dict[str, Any]
    num_threads: int = 0  # LightGBM's default (OpenMP's choice) when 0

    def with_threads(self, num_threads: int) -> Predictor:
        """The same predictor scoring with num_threads LightGBM threads."""
        return dataclasses.replace(self, num_threads=num_threads)

    def predict_proba(self, data: Columns) -> np.ndarray:
        """Calibrated churn probabilities for canonical columns (one row or many)."""
        return self.proba_of_matrix(transform(data, self.features))

    def proba_of_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities of a feature matrix (`transform`'s output)."""
        return self.calibration.apply(self.booster.raw_score(matrix, self.num_threads))

    def predict(self, data: Columns) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and 0/1 decisions at the version's threshold."""
        return self.predict_matrix(transform(data, self.features))

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and 0/1 decisions of a feature matrix (`transform`'s output)."""
        probabilities = self.proba_of_matrix(matrix)
        return probabilities, (probabilities >= self.threshold).astype(np.int8)

    def predict_one(self, record: Record) -> tuple[float, int]:
        """The probability and decision for one record: `predict` on one row, in microseconds."""
        row_transform, booster = self.single_row
        raw = booster.raw_score(row_transform(record))
        probability = float(self.calibration.apply_one(raw))
        return probability, int(probability >= self.threshold)

    def risk(self, probability: float) -> str:
        """high at or above the decision threshold, medium above half of it, else low."""
        return risk_band(probability, self.threshold)

    def reasons(self, data: Mapping[str, Sequence[Any]], top: int = 5) -> list[list[dict[str, Any]]]:
        """Each row's strongest feature contributions (SHAP values), largest first.

        A feature's value is the customer's own, or the computed one for a derived feature.
        """
        matrix = transform(data, self.features)
        contributions = self.booster.contributions(matrix, self.num_threads)[:, :-1]
        names = self.features.feature_names
        order = np.argsort(-np.abs(contributions), axis=1)[:, :top]
        return [
            [
                {
                    "feature": names[i],
                    "value": data[names[i]][row] if names[i] in data else round(float(matrix[row, i]), 6),
                    "contribution": float(contributions[row, i]),
                }
                for i in columns
            ]
            for row, columns in enumerate(order)
        ]

    @property
    def kind(self) -> str:
        """The model's kind: lightgbm or logistic_regression."""
        return "lightgbm" if isinstance(self.booster, Booster) else "logistic_regression"

    @functools.cached_property
    def single_row(self) -> tuple[RowTransform, RowScorer]:
        """The one-record path, built on first use (touch it at load time to pay for it then)."""
        if isinstance(self.booster, Booster):
            return RowTransform(self.features), SingleRowBooster(self.booster, self.num_threads)
        assert isinstance(self.booster, LinearModel)
        return RowTransform(self.features), _LinearRow(self.booster)


def risk_band(probability: float, threshold: float) -> str:
    """high at or above the decision threshold, medium at or above half of it, else low."""
    return "high" if probability >= threshold else "medium" if probability >= threshold / 2 else "low"


RISK_LEVELS = ("low", "medium", "high")  # `risk_band`'s bands, by level


def risk_levels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Each probability's band as its position in RISK_LEVELS, for a batch."""
    return np.where(probabilities >= threshold, 2, np.where(probabilities >= threshold / 2, 1, 0))


def risk_bands(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """`risk_band` of every probability at once, for a batch."""
    bands: np.ndarray = np.asarray(RISK_LEVELS)[risk_levels(probabilities, threshold)]
    return bands


@dataclass(frozen=True)
class _LinearRow:
    model: LinearModel

    def raw_score(self, row: list[float]) -> float:
        return self.model.raw_score_one(row)


def write_artifacts(
    directory: Path,
    *,
    model_text: str,
    features: FeatureSpec,
    meta: dict[str, Any],
    documents: dict[str, str],
    model_kind: str = "lightgbm",
) -> dict[str, str]:
    """Write a version's files and their checksums; `documents` maps file names to text.

    `model_text` is LightGBM's text model, or the LinearModel's JSON for a logistic regression.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILES[model_kind]).write_text(model_text)
    (directory / FEATURES_FILE).write_text(features.to_json())
    meta = {"format_version": FORMAT_VERSION, "model_kind": model_kind, **meta}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    for name, text in documents.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    checksums = {
        p.relative_to(directory).as_posix(): _sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS_FILE
    }
    (directory / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=2))
    return checksums


def verify(directory: Path) -> dict[str, str]:
    """Check every file against checksums.json; raise ChecksumError naming the first bad file."""
    listing = directory / CHECKSUMS_FILE
    if not listing.exists():
        raise ModelNotFoundError(f"{directory}: no {CHECKSUMS_FILE}; not a model version")
    checksums: dict[str, str] = json.loads(listing.read_text())
    _check_listing(directory, checksums, lambda name: _sha256_of_file(directory / name))
    return checksums


def load_predictor(directory: Path) -> Predictor:
    """A Predictor from a version folder, after verifying every checksum."""
    checksums = verify(directory)
    return _predictor(directory, lambda name: (directory / name).read_text(), checksums)


def _sha256_of_file(path: Path) -> str | None:
    return _sha256(path) if path.is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def predictor_from_files(files: Mapping[str, bytes], where: Path = Path("<model files>")) -> Predictor:
    """A Predictor from a version's file contents (name to bytes), after verifying every checksum.

    `where` names the version in errors.
    """
    if CHECKSUMS_FILE not in files:
        raise ModelNotFoundError(f"{where}: no {CHECKSUMS_FILE}; not a model version")
    checksums: dict[str, str] = json.loads(files[CHECKSUMS_FILE])

    def digest(name: str) -> str | None:
        return hashlib.sha256(files[name]).hexdigest() if name in files else None

    _check_listing(where, checksums, digest)
    return _predictor(where, lambda name: files[name].decode(), checksums)


def _check_listing(where: Path, checksums: Mapping[str, str], digest: Callable[[str], str | None]) -> None:
    """Raise ChecksumError unless the listing covers the required files and every file matches it."""
    for name in REQUIRED:
        if name not in checksums:
            raise ChecksumError(f"{where}: {name} is not covered by {CHECKSUMS_FILE}")
    if not any(name in checksums for name in MODEL_FILES.values()):
        files = " or ".join(MODEL_FILES.values())
        raise ChecksumError(f"{where}: the model file ({files}) is not covered by {CHECKSUMS_FILE}")
    for name, expected in checksums.items():
        actual = digest(name)
        if actual is None:
            raise ChecksumError(f"{where / name}: missing from the model version")
        if actual != expected:
            raise ChecksumError(f"{where / name}: checksum mismatch (the artifact was changed or corrupted)")


def _predictor(where: Path, text: Callable[[str], str], verified: Mapping[str, str]) -> Predictor:
    """Build a Predictor from verified files, given a reader of their text by name."""
    meta = json.loads(text(META_FILE))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ChecksumError(f"{where}: artifact format {meta.get('format_version')} is not supported")
    kind = meta.get("model_kind", "lightgbm")
    if kind not in MODEL_FILES:
        raise ChecksumError(f"{where}: model kind {kind!r} is not supported")
    if MODEL_FILES[kind] not in verified:
        raise ChecksumError(f"{where}: {MODEL_FILES[kind]} is not covered by {CHECKSUMS_FILE}")
    booster: Scorer = (
        Booster(text(MODEL_FILE)) if kind == "lightgbm" else LinearModel.from_json(text(LINEAR_FILE))
    )
    features = FeatureSpec.from_json(text(FEATURES_FILE))
    calibration = Calibration(**meta["calibration"])
    return Predictor(booster, features, calibration, float(meta["threshold"]), meta)
