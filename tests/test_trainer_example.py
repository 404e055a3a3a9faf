"""The documented Trainer fine-tuning example: it trains, its evaluation scores batch by batch, and its saved folder
(model, image processor, class names) works in `pipeline`."""

import numpy as np
import pytest
import torch

from ssa_hf import StreamingMeanIoU
from ssa_hf.data import LabelConvention
from ssa_hf.synthetic import CLASSES, generate
from training.trainer_example import build_trainer, main


def test_trainer_fine_tunes_and_evaluates_without_keeping_logits(tmp_path):
    data = generate(tmp_path / "scenes", num_train=8, num_val=5, size=(64, 80), seed=3)
    convention = LabelConvention(len(CLASSES))
    trainer, metrics = build_trainer(str(data), convention, str(tmp_path / "out"), dict(enumerate(CLASSES)),
                                     crop_size=(64, 64), scale=(80, 64), max_steps=4, batch_size=2, eval_steps=4)
    assert trainer.args.world_size == 1
    train_output = trainer.train()
    assert np.isfinite(train_output.training_loss)
    metrics.batches_seen.clear()
    result = trainer.evaluate()
    # compute_metrics saw one image at a time (5 calls), never the whole split's logits at once.
    assert metrics.batches_seen == [1] * 5
    assert 0 <= result["eval_mean_iou"] <= 1 and np.isfinite(result["eval_loss"])

    # The streamed result equals scoring all images at once.
    model = trainer.model.eval()
    reference = StreamingMeanIoU(len(CLASSES))
    for index in range(5):
        item = trainer.eval_dataset[index]
        with torch.no_grad():
            logits = model(pixel_values=item["pixel_values"][None].to(model.device)).logits
        upsampled = torch.nn.functional.interpolate(logits, size=item["labels"].shape, mode="bilinear")
        reference.update(upsampled.argmax(1)[0].cpu(), item["labels"])
    assert result["eval_mean_iou"] == pytest.approx(reference.compute()["mean_iou"])


def test_trainer_example_command_evaluates_once_and_saves_a_pipeline_folder(tmp_path, capsys):
    import json

    from PIL import Image
    from transformers import pipeline

    data = generate(tmp_path / "scenes", num_train=8, num_val=3, size=(64, 80), seed=4)
    recipe = tmp_path / "scenes.json"
    recipe.write_text(json.dumps({"name": "scenes", "num_labels": len(CLASSES), "id2label": dict(enumerate(CLASSES)),
                                  "eval_scale": [80, 64]}))
    result = main(["--data", str(data), "--recipe", str(recipe), "--output", str(tmp_path / "out"),
                   "--max-steps", "2"])
    assert 0 <= result["eval_mean_iou"] <= 1
    final = tmp_path / "out" / "final"
    assert (final / "preprocessor_config.json").exists()
    segmenter = pipeline("image-segmentation", model=str(final))
    assert segmenter.model.config.id2label[0] == "sky"  # class names, not "0".."5"
    image = Image.open(next((data / "val" / "images").iterdir()))
    assert {r["label"] for r in segmenter(image)} <= set(CLASSES)
