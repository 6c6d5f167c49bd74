"""The shared figure helpers draw what they are given: counts, recalls, AUCs, curves, grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_utils import plotting

LABELS = ["neutral", "happy", "sad"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plotting.pyplot().close("all")


def _image_data(ax) -> np.ndarray:
    return np.asarray(ax.get_images()[0].get_array())


def test_confusion_matrices_show_counts_and_row_normalised_recall():
    true = ["neutral", "neutral", "neutral", "happy", "happy", "sad"]
    predicted = ["neutral", "neutral", "happy", "happy", "happy", "neutral"]
    fig = plotting.plot_confusion_matrices(true, predicted, LABELS, title="demo")
    counts_ax, normalised_ax = fig.axes[0], fig.axes[1]
    counts = _image_data(counts_ax)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    recall = _image_data(normalised_ax)
    np.testing.assert_allclose(recall, [[2 / 3, 1 / 3, 0], [0, 1, 0], [1, 0, 0]])
    # Every cell is annotated with its value, in the counts and in the recall matrix.
    assert "2" in [t.get_text() for t in counts_ax.texts]
    assert "0.67" in [t.get_text() for t in normalised_ax.texts]
    assert [t.get_text() for t in counts_ax.get_xticklabels()] == LABELS
    assert counts_ax.get_title() == "demo counts"


def test_confusion_matrix_row_without_samples_is_zero_not_nan():
    fig = plotting.plot_confusion_matrices(["neutral"], ["happy"], LABELS)
    recall = _image_data(fig.axes[1])
    assert np.isfinite(recall).all()
    assert recall[1].sum() == 0 and recall[2].sum() == 0


def test_roc_curves_report_the_macro_auc_and_skip_absent_classes():
    true = ["neutral", "happy", "neutral", "happy"]
    perfect = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0], [0.1, 0.9, 0.0]])
    fig = plotting.plot_roc_curves(true, perfect, LABELS)
    ax = fig.axes[0]
    assert "macro AUC 1.000" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    # 'sad' never occurs, so it has no curve (an ROC needs positives and negatives).
    assert legend == ["neutral (AUC 1.00)", "happy (AUC 1.00)"]
    reversed_fig = plotting.plot_roc_curves(true, perfect[:, [1, 0, 2]], LABELS)
    assert "macro AUC 0.000" in reversed_fig.axes[0].get_title()


def test_training_curves_plot_train_and_validation_per_epoch():
    history = {"loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.7, 0.6], "accuracy": [0.3, 0.6, 0.9]}
    fig = plotting.plot_training_curves(history, title="net")
    loss_ax, accuracy_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train_loss", "val_loss"]
    assert list(loss_ax.get_lines()[1].get_ydata()) == [1.1, 0.7, 0.6]
    assert list(loss_ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    # No validation accuracy in the history: only the training line is drawn.
    assert [line.get_label() for line in accuracy_ax.get_lines()] == ["train_accuracy"]


def test_image_grid_has_one_titled_panel_per_image_and_hides_the_rest():
    images = [np.full((4, 4, 3), value, dtype=np.uint8) for value in (0, 120, 255)]
    fig = plotting.plot_image_grid(images, ["a", "b", "c"], columns=2)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", ""]
    assert not fig.axes[3].get_images()
    assert _image_data(fig.axes[2]).max() == 255


def test_waveform_and_mel_share_the_time_axis():
    sr = 1000
    audio = np.sin(np.linspace(0, 20, 2 * sr))
    log_mel = np.zeros((8, 50))
    fig = plotting.plot_waveform_and_mel(audio, sr, log_mel)
    wave_ax, mel_ax = fig.axes[0], fig.axes[1]
    assert wave_ax.get_lines()[0].get_xdata()[-1] == pytest.approx(2.0, abs=1e-3)
    assert mel_ax.get_images()[0].get_extent()[1] == pytest.approx(2.0)


def test_counts_draw_one_bar_per_cell():
    table = pd.DataFrame({"train": [3, 4], "test": [1, 2]}, index=["neutral", "happy"])
    fig = plotting.plot_counts(table, title="clips")
    heights = sorted(patch.get_height() for patch in fig.axes[0].patches)
    assert heights == [1, 2, 3, 4]


def test_save_figure_writes_a_png_into_the_given_folder(tmp_path):
    fig = plotting.plot_counts(pd.DataFrame({"n": [1]}, index=["a"]))
    path = plotting.save_figure(fig, "counts", folder=tmp_path / "figs")
    assert path == tmp_path / "figs" / "counts.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
