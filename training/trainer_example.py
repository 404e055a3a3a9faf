"""Fine-tuning SSA with `transformers.Trainer`, evaluated with a streaming mIoU.

    python training/trainer_example.py --data ../shared/data/camvid --recipe camvid --output runs/trainer

The recipe names the classes, the label convention and the evaluation resize; the output folder (`final/`) holds the
model and its `SSAImageProcessor`, so it works in `pipeline("image-segmentation")` as it was evaluated here.

Two settings matter (see the comments below):
- `remove_unused_columns=False`: the dataset produces `pixel_values` / `labels` on the fly with `set_transform`, so
  Trainer must not drop the raw columns the transform reads.
- `batch_eval_metrics=True` with a `compute_metrics(eval_pred, compute_result)` that updates a running confusion
  matrix: by default Trainer keeps every image's logits until the end of evaluation (about 20 GB for ADE20K val at
  1/4 resolution); with it, each batch is scored and dropped.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from ssa_hf import SSAConfig, SSAForSemanticSegmentation, SSAImageProcessor, StreamingMeanIoU
from ssa_hf.data import LabelConvention, decode_pair, load_split
from ssa_hf.training import Recipe
from ssa_hf.transforms import TrainTransform


def with_transform(rows, convention: LabelConvention, transform):
    """`set_transform` turning decoded (image, annotation) rows into model inputs, batch by batch."""

    def apply(batch):
        pairs = [decode_pair({"image": image, "annotation": mask}, convention)
                 for image, mask in zip(batch["image"], batch["annotation"])]
        outputs = [transform(image, labels) for image, labels in pairs]
        return {"pixel_values": [o["pixel_values"] for o in outputs], "labels": [o["labels"] for o in outputs]}

    rows = rows.with_format(None)
    rows.set_transform(apply)
    return rows


class StreamingSegmentationMetrics:
    """`compute_metrics` for `batch_eval_metrics=True`: scores each batch into a confusion matrix, reports at the end."""

    def __init__(self, num_labels: int, ignore_index: int):
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


def evaluation_transform(processor: SSAImageProcessor):
    """Evaluation inputs through the image processor saved with the model (as `pipeline` preprocesses); labels stay
    at their original size and the metric resizes the logits to them."""

    def transform(image, labels):
        return {"pixel_values": processor(images=image, return_tensors="pt")["pixel_values"][0],
                "labels": torch.from_numpy(labels)}

    return transform


def build_trainer(data: str, convention: LabelConvention, output: str, id2label: dict, encoder: str = "b0",
                  crop_size=(128, 128), scale=(160, 128), max_steps: int = 200, batch_size: int = 8,
                  eval_steps: int = 100, learning_rate: float = 3e-4, teacher_group_size=None,
                  processor: SSAImageProcessor | None = None):
    """A `Trainer` for SSA on `data`, and its streaming metric. `processor` (default: keep-ratio resize to `scale`
    in this convention) preprocesses evaluation images and is saved with the model by `trainer.save_model`."""
    from transformers import Trainer, TrainingArguments

    processor = processor or SSAImageProcessor(
        size={"shortest_edge": min(scale), "longest_edge": max(scale)}, do_reduce_labels=convention.reduce_zero_label,
        label_remap=convention.remap or None, ignore_index=convention.ignore_index)
    train_rows = with_transform(load_split(data, "train"), convention,
                                TrainTransform(crop_size=crop_size, scale=scale))
    eval_rows = with_transform(load_split(data, "validation"), convention, evaluation_transform(processor))
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
    # processing_class: Trainer saves the processor beside the model, so the saved folder is pipeline-ready.
    trainer = Trainer(model=model, args=arguments, train_dataset=train_rows, eval_dataset=eval_rows,
                      compute_metrics=metrics, processing_class=processor)
    return trainer, metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe", required=True, help="a shipped recipe name (e.g. camvid) or a recipe JSON")
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-steps", type=int, default=200)
    args = parser.parse_args(argv)
    recipe = Recipe.load(args.recipe)
    convention = recipe.label_convention()
    id2label = {int(k): v for k, v in (recipe.id2label or {}).items()} or {i: f"class_{i}" for i in
                                                                           range(recipe.num_labels)}
    trainer, _ = build_trainer(args.data, convention, args.output, id2label=id2label, max_steps=args.max_steps,
                               eval_steps=args.max_steps, processor=recipe.image_processor(convention))
    trainer.train()  # evaluates once at the end (eval_steps = max_steps)
    result = next((entry for entry in reversed(trainer.state.log_history) if "eval_mean_iou" in entry), {})
    trainer.save_model(str(Path(args.output) / "final"))
    print({k: v for k, v in result.items() if k.startswith("eval_")})
    return result


if __name__ == "__main__":
    main()
