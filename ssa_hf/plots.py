"""Learning curves a person reads: training cross-entropy and validation mIoU against iterations, one line per
model, from the `history.json` of training runs (matplotlib, the `bench` extra)."""

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install \"ssa-hf[bench]\"") from None
    return plt


def _moving_average(values: list[float], window: int) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def learning_curves(histories: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Two panels from each model's training history: the cross-entropy of its prediction (SSA's `main` term, the
    baseline's loss; a moving average over about a twentieth of the run) and the validation mIoU at each evaluation.

    Args:
        histories: model name -> its `history.json` rows (`{"step", "loss", "loss/main", ...}` and
            `{"step", "eval": {"mean_iou", ...}}`).
        path: the PNG to write.
        title: the figure's title (say the data, resolution and budget).
    """
    plt = _pyplot()
    has_losses = any(r.get("loss") is not None for history in histories.values() for r in history)
    if has_losses:
        figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    else:  # evaluations only (e.g. a results file that kept the validation curve alone)
        figure, miou_axis = plt.subplots(figsize=(6.5, 4.2))
        loss_axis = None
    evaluation_steps = {r["step"] for history in histories.values() for r in history if "eval" in r}
    one_evaluation = len(evaluation_steps) == 1  # e.g. the demo: a line would be single points; bars read better
    for index, (name, history) in enumerate(histories.items()):
        steps = [r["step"] for r in history if r.get("loss") is not None and "eval" not in r]
        losses = [r.get("loss/main", r["loss"]) for r in history if r.get("loss") is not None and "eval" not in r]
        if steps and loss_axis is not None:
            window = max(1, len(steps) // 20)
            (line,) = loss_axis.plot(steps, _moving_average(losses, window), label=name, linewidth=1.6)
            colour = line.get_color()
        else:
            colour = None
        evaluations = [(r["step"], 100 * r["eval"]["mean_iou"]) for r in history if "eval" in r]
        if evaluations and one_evaluation:
            value = evaluations[-1][1]
            miou_axis.bar(index, value, color=colour, label=f"{name}: {value:.2f} mIoU")
            miou_axis.text(index, value, f"{value:.2f}", ha="center", va="bottom")
        elif evaluations:
            x, y = zip(*evaluations)
            miou_axis.plot(x, y, marker="o", color=colour, linewidth=1.6, label=f"{name}: {y[-1]:.2f} mIoU")
    if loss_axis is not None:
        loss_axis.set_xlabel("iteration")
        loss_axis.set_ylabel("training cross-entropy (moving average)")
        loss_axis.set_title("Training loss of the prediction")
    miou_axis.set_ylabel("validation mIoU (%)")
    if one_evaluation:
        miou_axis.set_xticks(range(len(histories)), list(histories))
        miou_axis.set_ylim(0, 1.15 * max(p.get_height() for p in miou_axis.patches))  # room for the values
        miou_axis.set_title(f"Validation mIoU at iteration {next(iter(evaluation_steps))}")
    else:
        miou_axis.set_xlabel("iteration")
        miou_axis.set_title("Validation mIoU")
    for axis in (loss_axis, miou_axis) if loss_axis is not None else (miou_axis,):
        axis.grid(alpha=0.3)
        if not (axis is miou_axis and one_evaluation):  # the bars are named on their axis
            axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
