"""Fine-tuning SSA with `transformers.Trainer`, evaluated with a streaming mIoU.

    python training/trainer_example.py --data ../shared/data/camvid --convention camvid --output runs/trainer

Two settings matter (see the comments below):
- `remove_unused_columns=False`: the dataset produces `pixel_values` / `labels` on the fly with `set_transform`, so
  Trainer must not drop the raw columns the transform reads.
- `batch_eval_metrics=True` with a `compute_metrics(eval_pred, compute_result)` that updates a running confusion
  matrix: by default Trainer keeps every image's logits until the end of evaluation (about 20 GB for ADE20K val at
  1/4 resolution); with it, each batch is scored and dropped.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssa_hf import SSAConfig, SSAForSemanticSegmentation, StreamingMeanIoU  # noqa: E402
from ssa_hf.data import CONVENTIONS, LabelConvention  # noqa: E402
from ssa_hf.transforms import EvalTransform, TrainTransform  # noqa: E402
from training.train import load_split  # noqa: E402


def with_transform(rows, convention: LabelConvention, transform):
    """`set_transform` turning decoded (image, annotation) rows into model inputs, batch by batch."""

    def apply(batch):
        outputs = [transform(image.convert("RGB"), convention.apply(np.array(mask)))
                   for image, mask in zip(batch["image"], batch["annotation"])]
        return {"pixel_values": [o["pixel_values"] for o in outputs], "labels": [o["labels"] for o in outputs]}

    rows = rows.with_format(None)
    rows.set_transform(apply)
    return rows


class StreamingSegmentationMetrics:
    """`compute_metrics` for `batch_eval_metrics=True`: scores each batch into a confusion matrix, reports at the end."""

    def __init__(self, num_labels: int, ignore_index: int = 255):
        self.metric = StreamingMeanIoU(num_labels, ignore_index=ignore_index)
        self.batches_seen = []  # batch sizes, for the test that nothing is accumulated

    def __call__(self, eval_pred, compute_result: bool = False) -> dict:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
        self.batches_seen.append(logits.shape[0])
        upsampled = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        self.metric.update(upsampled.argmax(1), labels)
        if not compute_result:
            return {}
        result = self.metric.compute()
        self.metric.reset()
        return {k: result[k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}


def build_trainer(data: str, convention: LabelConvention, output: str, id2label: dict, encoder: str = "b0",
                  crop_size=(128, 128), scale=(160, 128), max_steps: int = 200, batch_size: int = 8,
                  eval_steps: int = 100, learning_rate: float = 3e-4, teacher_group_size=None):
    from transformers import Trainer, TrainingArguments

    train_rows = with_transform(load_split(data, "train"), convention,
                                TrainTransform(crop_size=crop_size, scale=scale))
    eval_rows = with_transform(load_split(data, "validation"), convention, EvalTransform(scale=scale))
    model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(
        encoder, id2label=id2label, teacher_group_size=teacher_group_size))
    metrics = StreamingSegmentationMetrics(convention.num_labels, convention.ignore_index)
    arguments = TrainingArguments(
        output_dir=output,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=1,  # evaluation images keep their own sizes
        max_steps=max_steps,
        learning_rate=learning_rate,
        lr_scheduler_type="polynomial",
        warmup_steps=max(1, max_steps // 10),
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="no",
        logging_steps=max(1, eval_steps // 4),
        remove_unused_columns=False,  # the transform needs the raw image / annotation columns
        batch_eval_metrics=True,  # score each batch into the confusion matrix instead of keeping all logits
        dataloader_num_workers=0,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=train_rows, eval_dataset=eval_rows,
                      compute_metrics=metrics)
    return trainer, metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--convention", required=True, choices=sorted(CONVENTIONS))
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-steps", type=int, default=200)
    args = parser.parse_args(argv)
    convention = CONVENTIONS[args.convention]
    trainer, _ = build_trainer(args.data, convention, args.output,
                               id2label={i: str(i) for i in range(convention.num_labels)}, max_steps=args.max_steps)
    trainer.train()
    result = trainer.evaluate()
    trainer.save_model(str(Path(args.output) / "final"))
    print(result)
    return result


if __name__ == "__main__":
    main()
