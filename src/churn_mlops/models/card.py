"""The model card: a plain markdown account of what a churn model is, how it did and where it falls short."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SLICE_COLUMNS = ("slice", "value", "n", "positive_rate", "roc_auc", "precision", "recall", "f1")
_COUNT_METRICS = frozenset({"n"})


@dataclass(frozen=True)
class ModelCardInfo:
    """Everything a model card states: identity, data lineage, test metrics, threshold and slices."""

    model_name: str
    version: str | None
    dataset: str
    data_version: str
    data_hash: str
    spec_name: str
    spec_digest: str
    rows: Mapping[str, int]
    metrics: Mapping[str, float]
    baseline_metrics: Mapping[str, float]
    slices: Sequence[Mapping[str, object]]
    threshold: float
    threshold_rule: str
    params: Mapping[str, object]
    created_at: str
    model_kind: str = "lightgbm"
    candidates: Sequence[Mapping[str, Any]] = ()
    selected_by: str = "roc_auc"
    training_set: str = ""  # how the rows were built: a lake table, newest snapshots, a feature store join


KINDS = {"lightgbm": "LightGBM", "logistic_regression": "logistic regression"}


def model_card(info: ModelCardInfo) -> str:
    """The model card of a trained churn model as markdown."""
    sections = [
        f"# Model card: {info.model_name}",
        _details(info),
        _INTENDED_USE,
        _data(info),
        _candidates(info),
        _metrics(info.metrics, info.baseline_metrics, _compared_with(info)),
        _threshold(info),
        _slices(info.slices),
        _LIMITATIONS,
    ]
    return "\n\n".join(sections) + "\n"


_INTENDED_USE = """## Intended use

The model ranks customers by their risk of churning so that a retention team can decide whom to
offer an incentive. It is a decision support tool: people choose the action. It is not meant for
automated adverse decisions about individuals, such as refusing service or changing prices."""

_LIMITATIONS = """## Limitations

- It is trained on historical data from one company; other customer bases and products may behave differently.
- Calibration may drift as prices, products and the customer mix change; monitor it and recalibrate.
- Slices with few rows give noisy metrics; read them as hints, not findings.
- It learns the churn label as the source defines it (a customer who left within the source's window),
  and inherits that definition's gaps."""


def _details(info: ModelCardInfo) -> str:
    """Name, version, creation time and hyperparameters."""
    params = "\n".join(f"  - `{key}`: {value}" for key, value in sorted(info.params.items()))
    return "\n".join(
        [
            "## Model details",
            "",
            f"- Name: {info.model_name}",
            f"- Version: {info.version or 'not registered'}",
            f"- Created: {info.created_at}",
            f"- Kind: {KINDS.get(info.model_kind, info.model_kind)}",
            "- Parameters:" + ("\n" + params if params else " none recorded"),
        ]
    )


def _candidates(info: ModelCardInfo) -> str:
    """Every candidate's validation and test figures, and which one was registered, and why."""
    if not info.candidates:
        return "## Candidates\n\nOne model was fitted."
    lines = [
        "## Candidates",
        "",
        f"Fitted on the same training rows; the best validation {info.selected_by} is registered.",
        "",
        "| candidate | valid ROC AUC | valid PR AUC | valid expected value | test ROC AUC "
        "| CV ROC AUC (95% CI) | registered |",
        "|---|---|---|---|---|---|---|",
    ]
    for candidate in info.candidates:
        valid, test = candidate["valid"], candidate["test"]
        name, chosen = KINDS.get(candidate["kind"], candidate["kind"]), "yes" if candidate["selected"] else ""
        figures = f"{valid['roc_auc']:.4f} | {valid['pr_auc']:.4f} | {valid['expected_value']:,.0f}"
        lines.append(
            f"| {name} | {figures} | {test['roc_auc']:.4f} | {_cv(candidate.get('cv'))} | {chosen} |"
        )
    folds = next((c["cv"]["folds"] for c in info.candidates if c.get("cv")), None)
    if folds:
        lines += [
            "",
            f"CV: stratified {folds}-fold ROC AUC over the training and validation rows (not the test rows).",
        ]
    return "\n".join(lines)


def _cv(found: Mapping[str, Any] | None) -> str:
    if not found:
        return "-"
    return f"{found['roc_auc_mean']:.4f} ({found['roc_auc_low']:.4f} to {found['roc_auc_high']:.4f})"


def _data(info: ModelCardInfo) -> str:
    """Dataset, lake version, content hash, spec and split sizes."""
    splits = ", ".join(f"{name} {count:,}" for name, count in info.rows.items())
    return "\n".join(
        [
            "## Data",
            "",
            f"- Dataset: {info.dataset}",
            f"- Lake version: {info.data_version}",
            f"- Content hash: `{info.data_hash}`",
            f"- Spec: {info.spec_name} (digest `{info.spec_digest}`)",
            f"- Rows: {splits or 'not recorded'}",
            *([f"- Training set: {info.training_set}"] if info.training_set else []),
        ]
    )


def _compared_with(info: ModelCardInfo) -> str:
    """The other candidate the metrics table compares with (the baseline when only one was fitted)."""
    others = [c["kind"] for c in info.candidates if not c["selected"]]
    return (
        f"Other candidate ({KINDS.get(others[0], others[0])})" if others else "Baseline (logistic regression)"
    )


def _metrics(metrics: Mapping[str, float], baseline: Mapping[str, float], compared: str) -> str:
    """Test metrics beside the other candidate's (the logistic regression baseline), with the difference."""
    names = [*metrics, *(name for name in baseline if name not in metrics)]
    rows = [
        [
            name,
            _number(name, metrics.get(name)),
            _number(name, baseline.get(name)),
            _delta(name, metrics, baseline),
        ]
        for name in names
    ]
    header = ["Metric", "Model", compared, "Difference"]
    return "## Metrics\n\nOn the held-out test split.\n\n" + _table(header, rows)


def _threshold(info: ModelCardInfo) -> str:
    """The decision threshold and how it was chosen."""
    return (
        "## Threshold\n\n"
        f"Customers with a churn probability of at least {info.threshold:.4f} are flagged "
        f"(rule: {info.threshold_rule})."
    )


def _slices(slices: Sequence[Mapping[str, object]]) -> str:
    """Per-slice metrics, or a note when none were computed."""
    if not slices:
        return "## Slices\n\nNo slices were evaluated."
    rows = [[_cell(row.get(column)) for column in _SLICE_COLUMNS] for row in slices]
    return "## Slices\n\n" + _table(list(_SLICE_COLUMNS), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _number(name: str, value: float | None) -> str:
    """A metric value: counts as integers, others to four decimals, absent as a dash."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if name in _COUNT_METRICS else f"{value:.4f}"


def _delta(name: str, metrics: Mapping[str, float], baseline: Mapping[str, float]) -> str:
    """The model's value minus the baseline's, signed; a dash when either is missing."""
    if name not in metrics or name not in baseline:
        return "-"
    difference = metrics[name] - baseline[name]
    return f"{difference:+,.0f}" if name in _COUNT_METRICS else f"{difference:+.4f}"


def _cell(value: object) -> str:
    """A table cell: floats to four decimals, None as n/a, pipes escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")
