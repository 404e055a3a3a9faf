"""The learning-curve plots: the moving average against a loop, and the figure's panels, axes and legends."""

import pytest

from ssa_hf.plots import _moving_average, learning_curves

matplotlib = pytest.importorskip("matplotlib")


def test_moving_average_is_the_mean_of_the_last_window_values():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    for window in (1, 2, 3, 7, 10):
        expected = [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
                    for i in range(len(values))]
        assert _moving_average(values, window) == pytest.approx(expected)


def test_learning_curves_label_both_panels_and_name_the_final_miou(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *args, **kwargs: (saved.append(self), original(self, *args, **kwargs))[1])
    history_ssa = [{"step": s, "loss": 10.0 / s, "loss/main": 1.0 / s} for s in range(1, 41)]
    history_ssa += [{"step": 20, "eval": {"mean_iou": 0.25}}, {"step": 40, "eval": {"mean_iou": 0.3257}}]
    history_base = [{"step": s, "loss": 2.0 / s} for s in range(1, 41)] + [{"step": 40, "eval": {"mean_iou": 0.2}}]
    path = learning_curves({"SSA": history_ssa, "SegFormer": history_base}, tmp_path / "curves.png", "a test run")
    assert path.stat().st_size > 10_000
    (figure,) = saved
    loss_axis, miou_axis = figure.axes
    assert loss_axis.get_xlabel() == miou_axis.get_xlabel() == "iteration"
    assert "cross-entropy" in loss_axis.get_ylabel() and miou_axis.get_ylabel() == "validation mIoU (%)"
    assert [t.get_text() for t in miou_axis.get_legend().get_texts()] == ["SSA: 32.57 mIoU", "SegFormer: 20.00 mIoU"]
    ssa_loss = loss_axis.get_lines()[0].get_ydata()
    assert ssa_loss[0] == pytest.approx(1.0)  # SSA's main term, not its sum of eight terms
    # One evaluation per model at the same step (the demo): bars, one a model, with the value on top.
    saved.clear()
    learning_curves({"SSA": history_ssa[:-2] + history_ssa[-1:], "SegFormer": history_base}, tmp_path / "one.png",
                    "one evaluation")
    bars = saved[0].axes[1]
    assert [round(p.get_height(), 2) for p in bars.patches] == [32.57, 20.0]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["SSA", "SegFormer"]
    assert bars.get_title() == "Validation mIoU at iteration 40"
    only_evaluations = {"SSA": [{"step": 100, "eval": {"mean_iou": 0.2}}]}
    saved.clear()
    learning_curves(only_evaluations, tmp_path / "evals.png", "evaluations only")
    assert len(saved[0].axes) == 1
