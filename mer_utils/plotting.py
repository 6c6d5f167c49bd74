"""The one figure helper and the plots every notebook shares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mer_utils.config import figures_dir


def pyplot():
    """matplotlib.pyplot on a headless backend unless a notebook already chose an inline one."""
    import matplotlib

    # A headless backend unless a notebook already chose an inline one.
    if matplotlib.get_backend().lower() not in {"inline", "module://matplotlib_inline.backend_inline"}:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str, folder: str | Path | None = None, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` (default folder: figures/) and return the path."""
    folder = Path(folder) if folder is not None else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_confusion_matrices(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    labels: Sequence[str],
    title: str = "",
):
    """Confusion matrix as counts and row-normalised, side by side. Returns the figure."""
    from sklearn.metrics import confusion_matrix

    plt = pyplot()
    counts = confusion_matrix(
        [str(x) for x in true_labels], [str(x) for x in predicted_labels], labels=list(labels)
    )
    row_sums = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, row_sums, out=np.zeros_like(counts, dtype=float), where=row_sums > 0)
    size = 4 + 0.45 * len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, matrix, fmt, subtitle in (
        (axes[0], counts, "d", "counts"),
        (axes[1], normalised, ".2f", "row-normalised (recall)"),
    ):
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} {subtitle}".strip())
        threshold = matrix.max() / 2 if matrix.max() > 0 else 0.5
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(
                    j,
                    i,
                    format(matrix[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black",
                )
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def plot_roc_curves(
    true_labels: Sequence[str],
    probabilities: np.ndarray,
    labels: Sequence[str],
    title: str = "",
):
    """One-vs-rest ROC curve per class plus the macro-average AUC in the legend."""
    from sklearn.metrics import auc, roc_curve

    plt = pyplot()
    y = np.asarray([str(x) for x in true_labels])
    fig, ax = plt.subplots(figsize=(6, 5.5))
    aucs = []
    for k, label in enumerate(labels):
        positives = y == label
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, k])
        value = auc(fpr, tpr)
        aucs.append(value)
        ax.plot(fpr, tpr, lw=1.3, label=f"{label} (AUC {value:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    macro = float(np.mean(aucs)) if aucs else float("nan")
    ax.set_title(f"{title} ROC one-vs-rest, macro AUC {macro:.3f}".strip())
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_training_curves(history: dict, title: str = ""):
    """Loss and accuracy per epoch (train and validation) from a Keras ``history.history``.

    A whole history.json record (``{"history": ..., "phases": ..., "members": ...}``, see
    :mod:`mer_utils.pipelines.base`) is accepted too: its ``history`` is plotted.
    """
    if isinstance(history.get("history"), dict):
        history = history["history"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} {key}".strip())
        ax.legend()
    fig.tight_layout()
    return fig


def plot_image_grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4, size: float = 2.2):
    """A grid of RGB images with a title each (sample frames, face crops, spectrogram images)."""
    plt = pyplot()
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_waveform_and_mel(audio: np.ndarray, sr: int, log_mel: np.ndarray, title: str = ""):
    """Waveform above its log-mel spectrogram (dB), sharing the time axis."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    times = np.arange(len(audio)) / sr
    axes[0].plot(times, audio, lw=0.5)
    axes[0].set_ylabel("amplitude")
    axes[0].set_title(f"{title} waveform".strip())
    duration = len(audio) / sr
    image = axes[1].imshow(
        log_mel, origin="lower", aspect="auto", extent=(0, duration, 0, log_mel.shape[0]), cmap="magma"
    )
    axes[1].set_xlabel("time (s)")
    axes[1].set_ylabel("mel band")
    axes[1].set_title("log-mel spectrogram (dB)")
    fig.colorbar(image, ax=axes, fraction=0.03, pad=0.02)
    return fig


def plot_counts(table, title: str = "", ylabel: str = "clips"):
    """A grouped bar chart of a DataFrame (index on the x axis, one bar per column)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(table) + 3), 3.8))
    table.plot.bar(ax=ax, width=0.8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_timeline(table, title: str = ""):
    """Emotion over time (a `mer predict --timeline` table): a heat strip per modality, then the fused answer.

    Each strip shows one modality's probability of every label (rows) in every window (columns,
    placed at the window's centre); windows where the modality was unavailable are grey. The last
    panel draws the fused label's probability over time, each point coloured by the fused label.
    """
    plt = pyplot()
    labels = list(table.attrs["labels"])
    modalities = list(table.attrs["modalities"])
    centres = ((table["start"] + table["end"]) / 2).to_numpy(dtype=float)
    if len(centres) > 1:
        middles = (centres[1:] + centres[:-1]) / 2
        edges = np.concatenate([[2 * centres[0] - middles[0]], middles, [2 * centres[-1] - middles[-1]]])
    else:
        edges = np.array([table["start"].iloc[0], table["end"].iloc[0]], dtype=float)
    height = 0.22 * len(labels) + 0.5
    fig, axes = plt.subplots(
        len(modalities) + 1,
        1,
        figsize=(10, height * len(modalities) + 2.2),
        sharex=True,
        gridspec_kw={"height_ratios": [height] * len(modalities) + [2.0]},
        squeeze=False,
    )
    axes = axes[:, 0]
    colours = plt.get_cmap("tab10")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    image = None
    for ax, name in zip(axes, modalities, strict=False):
        values = table[[f"{name}_prob_{label}" for label in labels]].to_numpy(dtype=float).T
        image = ax.pcolormesh(
            edges, np.arange(len(labels) + 1), np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1
        )
        ax.set_yticks(np.arange(len(labels)) + 0.5, labels, fontsize=7)
        ax.invert_yaxis()
        share = float(table[f"{name}_available"].astype(bool).mean())
        ax.set_title(
            f"{name} (available in {share:.0%} of windows; grey: unavailable)", fontsize=9, loc="left"
        )
    line = axes[-1]
    fused = table["fused_probability"].to_numpy(dtype=float)
    line.plot(centres, fused, color="0.4", lw=1)
    for k, label in enumerate(labels):
        chosen = (table["fused_label"] == label).to_numpy()
        if chosen.any():
            line.scatter(centres[chosen], fused[chosen], color=colours(k % 10), s=18, label=label, zorder=3)
    line.set_ylim(0, 1.05)
    line.set_ylabel("fused p")
    line.set_xlabel("time (s, window centre)")
    line.set_title(f"fused label ({table.attrs.get('fusion', 'fusion')})", fontsize=9, loc="left")
    line.legend(fontsize=7, ncol=min(4, len(labels)), loc="lower right")
    if image is not None:
        fig.colorbar(image, ax=list(axes[:-1]), fraction=0.025, pad=0.01, label="probability")
    if title:
        fig.suptitle(title)
    return fig
