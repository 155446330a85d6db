"""Evaluation plots as PNG files, drawn with matplotlib's Figure API (no pyplot global state)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from churn_mlops.models.evaluation import calibration_bins

TOP_FEATURES = 20
_DPI = 120


def save_plots(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    threshold: float,
    importance: Mapping[str, float],
    directory: Path,
) -> list[Path]:
    """Write ROC, PR, calibration, confusion matrix and feature importance PNGs; return their paths."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    directory.mkdir(parents=True, exist_ok=True)
    figures = {
        "roc.png": roc_figure(y, p),
        "pr.png": pr_figure(y, p),
        "calibration.png": calibration_figure(y, p),
        "confusion_matrix.png": confusion_figure(y, p, threshold),
        "feature_importance.png": importance_figure(importance),
    }
    paths = []
    for name, figure in figures.items():
        path = directory / name
        figure.savefig(path, dpi=_DPI)
        paths.append(path)
    return paths


def roc_figure(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> Figure:
    """The ROC curve against the diagonal of a random ranking."""
    figure, axes = _canvas()
    fpr, tpr, _ = roc_curve(y, p)
    axes.plot(fpr, tpr, label=f"model (AUC = {roc_auc_score(y, p):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    _label(axes, "ROC curve", "False positive rate", "True positive rate")
    return figure


def pr_figure(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> Figure:
    """The precision-recall curve against the churn rate a random ranking achieves."""
    figure, axes = _canvas()
    precision, recall, _ = precision_recall_curve(y, p)
    axes.step(recall, precision, where="post", label=f"model (AP = {average_precision_score(y, p):.3f})")
    axes.axhline(float(y.mean()), linestyle="--", color="grey", label=f"churn rate ({y.mean():.3f})")
    _label(axes, "Precision-recall curve", "Recall", "Precision")
    return figure


def calibration_figure(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> Figure:
    """Observed churn rate per probability bin against the diagonal of perfect calibration."""
    figure, axes = _canvas()
    mean_prob, rate, counts = calibration_bins(y, p)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(mean_prob, rate, marker="o", label="model")
    for x, observed, n in zip(mean_prob, rate, counts, strict=True):
        axes.annotate(f"{int(n)}", (x, observed), textcoords="offset points", xytext=(4, -10), fontsize=7)
    title = "Calibration (10 equal-width bins, row counts shown)"
    _label(axes, title, "Mean predicted probability", "Observed churn rate")
    return figure


def confusion_figure(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], threshold: float) -> Figure:
    """The confusion matrix of predictions at the threshold, with counts in each cell."""
    figure, axes = _canvas(size=(5.0, 4.5))
    matrix = confusion_matrix(y, (p >= threshold).astype(np.int64), labels=[0, 1])
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, f"{count:,}", ha="center", va="center", color=colour, fontsize=12)
    names = ["stays", "churns"]
    axes.set_xticks([0, 1], [f"predicted {name}" for name in names])
    axes.set_yticks([0, 1], [f"actually {name}" for name in names])
    axes.set_title(f"Confusion matrix at threshold {threshold:.3f}")
    return figure


def importance_figure(importance: Mapping[str, float]) -> Figure:
    """Horizontal bars of the top features by absolute importance, largest at the top."""
    top = sorted(importance.items(), key=lambda item: (-abs(item[1]), item[0]))[:TOP_FEATURES]
    figure, axes = _canvas(size=(8.0, max(3.0, 0.35 * len(top) + 1.5)))
    if top:
        names, values = zip(*reversed(top), strict=True)
        axes.barh(list(names), list(values), color="tab:blue")
    else:
        axes.text(0.5, 0.5, "no feature importances", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"Feature importance (top {min(len(top), TOP_FEATURES)})")
    axes.set_xlabel("Importance")
    return figure


def _canvas(size: tuple[float, float] = (6.0, 5.0)) -> tuple[Figure, Axes]:
    """A new figure, detached from pyplot, with one set of axes."""
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()


def _label(axes: Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, unit limits, grid and legend for a curve plot."""
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
