"""The streaming mIoU against a reference of the `evaluate` mean_iou definitions (per-image areas, summed)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER

from ssa_hf.evaluation import StreamingMeanIoU


def reference_mean_iou(predictions, references, num_labels, ignore_index=255):
    """evaluate's mean_iou: per-image intersect/union/label/prediction areas, summed; NaN-means over classes."""
    total = {key: np.zeros(num_labels) for key in ("intersect", "union", "prediction", "label")}
    for prediction, reference in zip(predictions, references):
        mask = reference != ignore_index
        prediction, reference = prediction[mask], reference[mask]
        intersect = prediction[prediction == reference]
        area = {
            "intersect": np.histogram(intersect, bins=num_labels, range=(0, num_labels - 1))[0],
            "prediction": np.histogram(prediction, bins=num_labels, range=(0, num_labels - 1))[0],
            "label": np.histogram(reference, bins=num_labels, range=(0, num_labels - 1))[0],
        }
        area["union"] = area["prediction"] + area["label"] - area["intersect"]
        for key in total:
            total[key] += area[key]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = total["intersect"] / total["union"]
        accuracy = total["intersect"] / total["label"]
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(accuracy),
        "overall_accuracy": total["intersect"].sum() / total["label"].sum(),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


def random_batches(num_batches=4, num_labels=6, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(num_batches):
        references = rng.integers(0, num_labels - 1, size=(3, 17, 23))  # the last class never occurs: NaN entries
        references[rng.random(references.shape) < 0.15] = 255
        predictions = np.where(rng.random(references.shape) < 0.6, references, rng.integers(0, num_labels - 1, references.shape))
        predictions[predictions == 255] = 0
        yield predictions, references


def test_streaming_matches_the_mean_iou_definitions():
    metric = StreamingMeanIoU(num_labels=6)
    all_predictions, all_references = [], []
    for predictions, references in random_batches():
        metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
        all_predictions += list(predictions)
        all_references += list(references)
    got = metric.compute()
    expected = reference_mean_iou(all_predictions, all_references, 6)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    for key in ("per_category_iou", "per_category_accuracy"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-12, equal_nan=True)
    assert np.isnan(got["per_category_iou"][5])  # absent class: excluded from the mean, as in mean_iou


def test_memory_is_constant_and_order_does_not_matter():
    batches = list(random_batches(num_batches=6, seed=1))
    forward, backward = StreamingMeanIoU(6), StreamingMeanIoU(6)
    size = forward.confusion.numel()
    for predictions, references in batches:
        forward.update(torch.from_numpy(predictions), torch.from_numpy(references))
    for predictions, references in reversed(batches):
        backward.update(torch.from_numpy(predictions), torch.from_numpy(references))
    assert forward.confusion.numel() == size
    assert torch.equal(forward.confusion_matrix, backward.confusion_matrix)
    assert int(forward.confusion_matrix.sum()) == sum(int((r != 255).sum()) for _, r in batches)
    forward.reset()
    assert forward.confusion.sum() == 0


def test_bad_inputs_are_clear_errors():
    metric = StreamingMeanIoU(num_labels=3)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer label maps"):
        metric.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"label values \[3, 7\] are outside \[0, 3\)"):
        metric.update(torch.tensor([[0, 1], [3, 2]]), torch.tensor([[0, 7], [1, 255]]))
    with pytest.raises(ValueError, match="num_labels must be positive"):
        StreamingMeanIoU(num_labels=0)


def test_model_predictions_flow_into_the_metric():
    from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(
        dict(TINY_SEGFORMER), num_labels=4)).eval()
    pixel_values = torch.randn(2, 3, 48, 64)
    references = torch.randint(0, 4, (2, 48, 64))
    with torch.no_grad():
        logits = model(pixel_values).logits
    predictions = torch.nn.functional.interpolate(logits, size=(48, 64), mode="bilinear").argmax(1)
    metric = StreamingMeanIoU(num_labels=4)
    metric.update(predictions, references)
    result = metric.compute()
    expected = reference_mean_iou(predictions.numpy(), references.numpy(), 4)
    assert result["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert 0 <= result["overall_accuracy"] <= 1


METRIC_DIR = Path(__file__).resolve().parents[1] / "training" / "metrics" / "segmentation_mean_iou"


def test_evaluate_module_loads_offline_and_agrees(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    metric = evaluate.load(str(METRIC_DIR))
    streaming = StreamingMeanIoU(6)
    all_predictions, all_references = [], []
    for predictions, references in random_batches(num_batches=3, seed=2):
        metric.add_batch(predictions=list(predictions), references=list(references))
        streaming.update(torch.from_numpy(predictions), torch.from_numpy(references))
        all_predictions += list(predictions)
        all_references += list(references)
    got = metric.compute(num_labels=6, ignore_index=255)
    expected = streaming.compute()
    reference = reference_mean_iou(all_predictions, all_references, 6)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert got[key] == pytest.approx(expected[key]) == pytest.approx(reference[key]), key
    np.testing.assert_allclose(got["per_category_iou"], expected["per_category_iou"], equal_nan=True)
    # reduce_labels: 0 -> ignored, k -> k - 1 (the ADE20K convention)
    raw = np.array([[0, 1, 2], [3, 3, 0]])
    result = metric.compute(predictions=[np.array([[5, 0, 1], [2, 1, 5]])], references=[raw], num_labels=3,
                            ignore_index=255, reduce_labels=True)
    assert result["overall_accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="outside"):
        metric.compute(predictions=[np.array([[7]])], references=[np.array([[1]])], num_labels=3, ignore_index=255)
