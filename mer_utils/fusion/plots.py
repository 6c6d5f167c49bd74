"""Figures of the fusion results: reliability diagrams, weights by emotion, robustness curves."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mer_utils.fusion.calibration import ECE_BINS, expected_calibration_error, reliability_curve
from mer_utils.fusion.fitting import GUARDED_METHOD, MAIN_METHOD, SINGLE_PREFIX


def plot_reliability_diagrams(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    targets: np.ndarray,
    bins: int = ECE_BINS,
):
    """Reliability diagrams per modality (columns), before and after temperature scaling (rows)."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    names = list(before)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7), squeeze=False)
    for column, name in enumerate(names):
        for row, (stage, probabilities) in enumerate((("before", before[name]), ("after", after[name]))):
            ax = axes[row, column]
            curve = reliability_curve(probabilities, targets, bins)
            centres = (curve["bin_low"] + curve["bin_high"]) / 2
            ax.bar(
                centres,
                curve["accuracy"].fillna(0),
                width=1.0 / bins,
                edgecolor="black",
                alpha=0.7,
                label="accuracy",
            )
            ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
            ece = expected_calibration_error(probabilities, targets, bins)
            ax.set_title(f"{name} {stage}: ECE {ece:.3f}")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence (top probability)")
            ax.set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_weights_by_emotion(
    weights: pd.DataFrame, spread: pd.DataFrame | None = None, title: str = "entropy x trust weights"
):
    """Grouped bars: mean fusion weight of each modality per true emotion (error bars: ``spread``)."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(weights), 4))
    width = 0.8 / max(1, weights.shape[1])
    positions = np.arange(len(weights))
    for m, name in enumerate(weights.columns):
        errors = spread[name].reindex(weights.index) if spread is not None else None
        offset = (m - (weights.shape[1] - 1) / 2) * width
        ax.bar(positions + offset, weights[name], width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(positions, weights.index, rotation=45, ha="right")
    ax.set_ylabel("mean weight" + (" (bars: std over clips)" if spread is not None else ""))
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_robustness_curves(
    curve: pd.DataFrame,
    x: str,
    panel: str,
    title: str = "{}",
    metric: str = "accuracy",
    xlabel: str | None = None,
):
    """One panel per value of ``panel`` (e.g. missing_modality), one line per method over ``x``.

    ``title`` is formatted with the panel value. Single modalities are dashed, the chosen method bold.
    """
    from mer_utils.plotting import pyplot

    plt = pyplot()
    panels = list(dict.fromkeys(curve[panel]))
    methods = list(dict.fromkeys(curve["method"]))
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, value in zip(axes[0], panels, strict=True):
        subset = curve[curve[panel] == value]
        for number, method in enumerate(methods):
            line = subset[subset["method"] == method].sort_values(x)
            # The validation-chosen default is bold black, the seed's rule dark grey.
            main = method == GUARDED_METHOD
            seed_rule = method == MAIN_METHOD
            ax.plot(
                line[x],
                line[metric],
                marker="o",
                ms=3,
                lw=2.8 if main else 2.0 if seed_rule else 1.2,
                color="black" if main else "dimgray" if seed_rule else colours(number % 20),
                linestyle="--" if method.startswith(SINGLE_PREFIX) else ":" if seed_rule else "-",
                label=method,
            )
        ax.set_title(title.format(value))
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig
