"""The documented Trainer fine-tuning example: it trains, and its evaluation scores batch by batch."""

import numpy as np
import pytest
import torch

from ssa_hf import StreamingMeanIoU
from ssa_hf.data import LabelConvention
from training.synthetic import CLASSES, generate
from training.trainer_example import build_trainer


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
