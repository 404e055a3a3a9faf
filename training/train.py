"""Train SSA (or the plain SegFormer baseline) with accelerate, on local folders or hub datasets.

    python training/train.py --recipe training/recipes/camvid.json --data ../shared/data/camvid --output runs/camvid
    accelerate launch --multi_gpu --num_processes 2 training/train.py --recipe ... (several GPUs)

The recipe (JSON) holds the paper's schedule (spec section 9.2): AdamW, mmcv-style custom keys (longest key first,
ties alphabetical, first match wins: `head` x10 learning rate, no weight decay on `norm` and `pos_block`), a linear
warm-up from `warmup_ratio` over `warmup_iters` then poly decay, per iteration. Command-line flags override it.
Checkpoints are `accelerator.save_state` folders; `--resume` continues exactly. At the end the output folder holds a
`save_pretrained` model with its image processor, ready for `pipeline("image-segmentation", ...)`.
"""

import argparse
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

from ssa_hf import MIT_VARIANTS, SSAConfig, SSAForSemanticSegmentation, StreamingMeanIoU
from ssa_hf.data import (  # noqa: F401 (SegmentationDataset and load_split are re-exported)
    CONVENTIONS,
    LabelConvention,
    SegmentationDataset,
    label_names,
    load_split,
    training_convention,
)
from ssa_hf.evaluation import predict_probabilities
from ssa_hf.transforms import EvalTransform, TrainTransform


@dataclass
class Recipe:
    name: str = "custom"
    convention: str | None = None
    num_labels: int = 150
    id2label: dict | None = None
    reduce_zero_label: bool = False
    remap: dict = field(default_factory=dict)
    encoder: str = "b0"  # MiT variant, a SegFormer hub id / folder, or (decoder_type "upernet") a backbone or UperNet
    decoder_type: str = "segformer"  # "segformer" or "upernet" (then with the auxiliary FCN head, weight 0.4)
    decoder_hidden_size: int | None = None  # default: the SegFormer checkpoint's / 512 for UperNet
    crop_size: tuple = (512, 512)
    scale: tuple = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    eval_scale: tuple = (2048, 512)
    eval_size_divisor: int | None = None
    iterations: int = 160000
    batch_size: int = 4
    teacher_group_size: int | None = None
    lr: float = 6e-5
    weight_decay: float = 0.01
    custom_keys: dict = field(default_factory=lambda: {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0},
                                                        "pos_block": {"decay_mult": 0.0}})
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr: float = 0.0
    eval_every: int = 16000
    save_every: int = 16000
    gradient_accumulation_steps: int = 1
    seed: int = 0

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "Recipe":
        values = json.loads(Path(path).read_text())
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown recipe fields {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def label_convention(self) -> LabelConvention:
        if self.convention is not None:
            convention = CONVENTIONS[self.convention]
            if convention.num_labels != self.num_labels:
                raise ValueError(f"recipe num_labels {self.num_labels} != {self.convention}'s {convention.num_labels}")
            return convention
        return LabelConvention(self.num_labels, self.reduce_zero_label, {int(k): v for k, v in self.remap.items()})


def parameter_groups(model: torch.nn.Module, lr: float, weight_decay: float, custom_keys: dict) -> list[dict]:
    """mmcv DefaultOptimizerConstructor: each parameter takes the settings of the first custom key contained in its
    name, keys tried longest first (ties alphabetical); `lr_mult` and `decay_mult` scale the base values."""
    ordered_keys = sorted(sorted(custom_keys), key=len, reverse=True)
    groups: dict[tuple, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        settings = next((custom_keys[key] for key in ordered_keys if key in name), {})
        group_lr = lr * settings.get("lr_mult", 1.0)
        group_decay = weight_decay * settings.get("decay_mult", 1.0)
        group = groups.setdefault((group_lr, group_decay), {"params": [], "names": [], "lr": group_lr,
                                                             "weight_decay": group_decay})
        group["params"].append(parameter)
        group["names"].append(name)
    return list(groups.values())


def lr_factor(step: int, recipe: Recipe) -> float:
    """Multiplier of each group's base lr at iteration `step`: poly decay (to min_lr) times the linear warm-up."""
    progress = min(step, recipe.iterations) / recipe.iterations
    poly = (1 - recipe.min_lr / recipe.lr) * (1 - progress) ** recipe.poly_power + recipe.min_lr / recipe.lr
    if step < recipe.warmup_iters:
        poly *= 1 - (1 - step / recipe.warmup_iters) * (1 - recipe.warmup_ratio)
    return poly


def build_model(recipe: Recipe, baseline: bool = False):
    """SSA (or the plain model with `baseline`) for the recipe: on SegFormer, a MiT variant from scratch or a SegFormer
    checkpoint (hub id or folder); on UperNet, an UperNet checkpoint or a backbone checkpoint (e.g. an ImageNet Swin)
    under a fresh UperNet decoder with the auxiliary head."""
    id2label = {int(k): v for k, v in (recipe.id2label or {}).items()} or None
    if recipe.decoder_type == "upernet":
        return _build_upernet(recipe, id2label, baseline)
    if recipe.encoder.lower() in MIT_VARIANTS:
        segformer_config = SegformerConfig(**MIT_VARIANTS[recipe.encoder.lower()])
        config = SSAConfig.from_segformer_config(segformer_config, num_labels=recipe.num_labels, id2label=id2label,
                                                 teacher_group_size=recipe.teacher_group_size)
        if baseline:
            return SegformerForSemanticSegmentation(SegformerConfig(
                **config.backbone_config.to_dict() | {"num_labels": recipe.num_labels, "id2label": config.id2label,
                                                      "label2id": config.label2id,
                                                      "decoder_hidden_size": config.decoder_hidden_size}))
        return SSAForSemanticSegmentation(config)
    if baseline:
        return SegformerForSemanticSegmentation.from_pretrained(
            recipe.encoder, num_labels=recipe.num_labels, id2label=id2label, ignore_mismatched_sizes=True)
    return SSAForSemanticSegmentation.from_segformer(recipe.encoder, num_labels=recipe.num_labels, id2label=id2label,
                                                     teacher_group_size=recipe.teacher_group_size)


_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _build_upernet(recipe: Recipe, id2label: dict | None, baseline: bool):
    from transformers import AutoConfig, UperNetConfig, UperNetForSemanticSegmentation
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING

    source = AutoConfig.from_pretrained(recipe.encoder)
    if source.model_type == "upernet":  # fine-tune an UperNet checkpoint
        if baseline:
            return UperNetForSemanticSegmentation.from_pretrained(
                recipe.encoder, num_labels=recipe.num_labels, id2label=id2label, ignore_mismatched_sizes=True)
        return SSAForSemanticSegmentation.from_upernet(recipe.encoder, num_labels=recipe.num_labels,
                                                       id2label=id2label, teacher_group_size=recipe.teacher_group_size)
    # A backbone checkpoint (the paper: ImageNet Swin) under a fresh UperNet decoder. The backbone class comes from
    # the mapping: AutoBackbone.from_pretrained asks the hub about every name, local folders included.
    config = AutoConfig.from_pretrained(recipe.encoder, out_features=_STAGES)
    backbone = MODEL_FOR_BACKBONE_MAPPING[type(config)].from_pretrained(recipe.encoder, config=config)
    id2label = id2label or {i: f"LABEL_{i}" for i in range(recipe.num_labels)}
    head = {"hidden_size": recipe.decoder_hidden_size or 512, "use_auxiliary_head": True,
            "auxiliary_loss_weight": 0.4, "auxiliary_channels": 256, "num_labels": recipe.num_labels,
            "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if baseline:
        model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone.config, **head))
    else:
        model = SSAForSemanticSegmentation(SSAConfig(
            backbone_config=backbone.config, decoder_type="upernet", decoder_hidden_size=head["hidden_size"],
            use_auxiliary_head=True, auxiliary_loss_weight=0.4, auxiliary_channels=256, id2label=id2label,
            label2id=head["label2id"], teacher_group_size=recipe.teacher_group_size))
    model.backbone.load_state_dict(backbone.state_dict())
    return model


def epoch_order(num_items: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> list:
    """This process's (row, augmentation seed) keys for one epoch: a permutation shared by all processes (seeded by
    seed and epoch), split across processes, cut to whole batches."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    per_process = (num_items // world_size) // batch_size * batch_size
    base = (seed * 1_000_003 + epoch) * 1_000_003
    return [(order[position], base + position) for position in range(rank, per_process * world_size, world_size)]


@torch.no_grad()
def evaluate(model, dataset: SegmentationDataset, accelerator, num_labels: int, ignore_index: int = 255,
             progress: bool = True) -> dict:
    """Whole-image, single-scale evaluation (the paper's protocol): keep-ratio resize, logits resized back to the
    original label size (align_corners=False), argmax, streaming confusion matrix summed across processes."""
    from tqdm.auto import tqdm

    model.eval()
    metric = StreamingMeanIoU(num_labels, ignore_index=ignore_index, device=accelerator.device)
    indices = range(accelerator.process_index, len(dataset), accelerator.num_processes)  # each image once
    for index in tqdm(indices, desc="evaluating", disable=not (progress and accelerator.is_main_process)):
        item = dataset[index]
        probabilities = predict_probabilities(model, item["pixel_values"][None].to(accelerator.device),
                                              output_size=item["labels"].shape)
        metric.update(probabilities.argmax(1)[0], item["labels"].to(accelerator.device))
    metric.all_reduce()
    model.train()
    return metric.compute()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(recipe: Recipe, data: str, output: str | Path, baseline: bool = False, mixed_precision: str = "no",
          resume: str | None = None, max_iterations: int | None = None, num_workers: int = 2,
          train_split: str = "train", eval_split: str = "validation", eval_limit: int | None = None,
          progress: bool = True, cpu: bool = False, log_with: str | None = "auto") -> dict:
    """Run a recipe; returns {"model": unwrapped model, "metrics": last evaluation, "history": [...]}.

    `log_with`: an accelerate tracker ("tensorboard", "wandb", ...) for the loss terms, learning rate and evaluations,
    written under `output/logs`; "auto" uses TensorBoard when tensorboard or tensorboardX is installed; None disables.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available
    from tqdm.auto import tqdm

    # train() may run several times in one process (the demo, tests) with other settings: start from a fresh
    # accelerator state, keeping the process group.
    AcceleratorState._reset_state(reset_partial_state=False)
    output = Path(output)
    if log_with == "auto":
        log_with = "tensorboard" if is_tensorboard_available() else None
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=cpu, gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs"),
                                            automatic_checkpoint_naming=False),
    )
    if log_with:
        hyperparameters = {k: v for k, v in vars(recipe).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("ssa" if not baseline else "segformer", config=hyperparameters)
    _seed_everything(recipe.seed + accelerator.process_index)
    train_rows = load_split(data, train_split)
    eval_rows = load_split(data, eval_split)
    # A dataset built by ssa_hf.dataset_builders is already in the training convention and names its classes.
    names = label_names(train_rows)
    convention = training_convention(train_rows, recipe.label_convention(), source=str(data))
    if names is not None and recipe.id2label is None:
        recipe = dataclasses.replace(recipe, id2label=dict(enumerate(names)))
    if eval_limit:
        eval_rows = eval_rows.select(range(min(eval_limit, len(eval_rows))))
    train_set = SegmentationDataset(train_rows, convention, TrainTransform(
        crop_size=tuple(recipe.crop_size), scale=tuple(recipe.scale), ratio_range=tuple(recipe.ratio_range),
        ignore_index=convention.ignore_index))
    eval_set = SegmentationDataset(eval_rows, convention, EvalTransform(
        scale=tuple(recipe.eval_scale), size_divisor=recipe.eval_size_divisor))
    steps_per_epoch = (len(train_set) // accelerator.num_processes) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images are fewer than one batch of {recipe.batch_size} per process")

    model = build_model(recipe, baseline=baseline)
    if accelerator.num_processes > 1 and accelerator.device.type != "cpu":
        # BN statistics over all processes' images, as the official runs. PyTorch's SyncBatchNorm is GPU-only; CPU
        # processes keep per-process statistics (DDP broadcasts rank 0's buffers, so the model stays identical).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe.lr, recipe.weight_decay, recipe.custom_keys),
                                  lr=recipe.lr, betas=(0.9, 0.999), weight_decay=recipe.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step it once per process, while the recipe's schedule counts global iterations.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe))
    accelerator.register_for_checkpointing(scheduler)

    iterations = max_iterations or recipe.iterations
    step = 0
    if resume:
        accelerator.load_state(resume)
        step = json.loads((Path(resume) / "progress.json").read_text())["step"]
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
    history, metrics = [], {}
    micro_batches_per_step = recipe.gradient_accumulation_steps

    def batches():
        """Micro-batches from the current position on; an epoch's order depends only on the seed and the epoch."""
        micro_step = step * micro_batches_per_step
        while True:
            epoch, offset = divmod(micro_step, steps_per_epoch)
            keys = epoch_order(len(train_set), recipe.batch_size, recipe.seed, epoch, accelerator.process_index,
                               accelerator.num_processes)[offset * recipe.batch_size :]
            loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size, sampler=keys,
                                                 num_workers=num_workers)
            for batch in loader:
                yield {name: tensor.to(accelerator.device, non_blocking=True) for name, tensor in batch.items()}
                micro_step += 1

    stream = batches()
    bar = tqdm(total=iterations, initial=step, desc="SegFormer" if baseline else "SSA",
               disable=not (progress and accelerator.is_main_process))
    model.train()
    while step < iterations:
        batch = next(stream)
        with accelerator.accumulate(model):
            out = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
            accelerator.backward(out.loss)
            optimizer.step()  # skipped by accelerate until the last micro-batch of an accumulation
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            scheduler.step()
            step += 1
            record = {"step": step, "loss": out.loss.detach().float().item(), "lr": scheduler.get_last_lr()[0]}
            for name, value in (getattr(out, "loss_terms", None) or {}).items():
                record[f"loss/{name}"] = float(value)
            history.append(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            bar.update(1)
            if step % recipe.save_every == 0 or step == iterations:
                save_checkpoint(accelerator, output / "checkpoints" / f"step_{step}", step)
            if step % recipe.eval_every == 0 or step == iterations:
                metrics = evaluate(model, eval_set, accelerator, recipe.num_labels, convention.ignore_index, progress)
                evaluation = {k: metrics[k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}
                history.append({"step": step, "eval": evaluation})
                accelerator.log({f"eval/{k}": v for k, v in evaluation.items()}, step=step)
    bar.close()
    if accelerator.is_main_process:  # not end_training(): it also destroys the process group of the caller
        for tracker in accelerator.trackers:
            tracker.finish()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        final = output / "final"
        unwrapped.save_pretrained(final)
        processor = SegformerImageProcessor(
            size={"height": recipe.crop_size[0], "width": recipe.crop_size[1]},
            do_reduce_labels=convention.reduce_zero_label,
        )
        processor.save_pretrained(final)
        (output / "history.json").write_text(json.dumps(history, indent=1))
    accelerator.wait_for_everyone()
    return {"model": unwrapped, "metrics": metrics, "history": history, "world_size": accelerator.num_processes}


def save_checkpoint(accelerator, folder: Path, step: int) -> None:
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / "progress.json").write_text(json.dumps({"step": step}))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="recipe JSON (training/recipes/*.json)")
    parser.add_argument("--data", required=True, help="dataset folder, save_to_disk folder or hub id")
    parser.add_argument("--output", required=True)
    parser.add_argument("--baseline", action="store_true", help="train plain SegFormer with the same recipe")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--resume", help="a checkpoints/step_N folder of an earlier run")
    parser.add_argument("--iterations", type=int, help="override the recipe's iterations")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--gradient-accumulation-steps", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--save-every", type=int)
    parser.add_argument("--encoder", help="MiT variant (b0..b5) or a SegFormer hub id / folder")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--log-with", default="auto", help="accelerate tracker (default: tensorboard if installed)")
    args = parser.parse_args(argv)
    recipe = Recipe.from_file(args.recipe, iterations=args.iterations, batch_size=args.batch_size,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              eval_every=args.eval_every, save_every=args.save_every, encoder=args.encoder)
    output = Path(args.output)
    if (output / "final").exists() and not args.resume:
        raise SystemExit(f"{output / 'final'} exists: choose another --output or remove it (nothing was overwritten)")
    result = train(recipe, args.data, output, baseline=args.baseline, mixed_precision=args.mixed_precision,
                   resume=args.resume, num_workers=args.num_workers, cpu=args.cpu,
                   log_with=None if args.log_with == "none" else args.log_with)
    if result["metrics"]:
        print(json.dumps({k: result["metrics"][k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}))
    return result


if __name__ == "__main__":
    main()
