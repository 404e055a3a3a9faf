"""Training SSA (or the plain baseline) with accelerate: recipes, the model and optimiser they describe, and a run in
four steps (`build_run`, `prepare_run`, `training_loop`, `save_run`, chained by `train`).

A recipe (`Recipe`, shipped as package data: `Recipe.load("ade20k")` or a JSON path) holds the paper's schedule (see
docs/method.md, "Training recipes"): AdamW with mmcv-style custom keys (longest key first, ties alphabetical, first
match wins: `head` x10 learning rate, no weight decay on `norm` and `pos_block`), a linear warm-up from
`warmup_ratio` over `warmup_iters`, then poly decay, per iteration.

A run folder describes itself: `run.json` holds the effective recipe (after command-line overrides), the seed, the
package version and the git commit; `history.json` holds every step's losses and every evaluation, and grows on
resume; `checkpoints/step_N` are `accelerator.save_state` folders that `resume` continues exactly; `final/` is a
`save_pretrained` folder with its `SSAImageProcessor`, ready for `pipeline("image-segmentation")`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from . import convert_afformer, convert_cgrseg, convert_hrnet, convert_seaformer, convert_segnext
from .checkpoints import CheckpointError, is_complete, load_checkpoint, read_state, write_failure
from .checkpoints import save_checkpoint as save_checkpoint_folder
from .data import (
    DataError,
    LabelConvention,
    SegmentationDataset,
    StreamingSegmentationDataset,
    label_names,
    load_split,
    named_convention,
    training_convention,
)
from .evaluation import evaluate_dataset, results_table
from .model.configuration_ssa import MIT_VARIANTS, SSAConfig
from .model.image_processing_ssa import SSAImageProcessor
from .model.modeling_ssa import SSAForSemanticSegmentation, checkpoint_name
from .run_folder import RunFolderBusy, RunFolderLock, check_output_folder, remove_failed_start
from .transforms import TrainTransform
from .version import __version__

SUMMARY_METRICS = ("mean_iou", "mean_accuracy", "overall_accuracy")


def available_recipes() -> list[str]:
    """Names of the recipes shipped with the package (`ssa-seg train --recipe NAME`)."""
    return sorted(p.name[: -len(".json")] for p in resources.files("ssa_hf").joinpath("recipes").iterdir()
                  if p.name.endswith(".json"))


@dataclass
class Recipe:
    """A training recipe: data convention, model, crops and scales, schedule. Scales and sizes are (width, height)
    pairs as in mmseg configs except `crop_size`, which is (height, width)."""

    name: str = "custom"
    convention: str | None = None  # a named label convention (ssa_hf.data.CONVENTIONS) of the raw annotations
    num_labels: int = 150
    id2label: dict | None = None
    reduce_zero_label: bool = False  # with remap: the convention of raw annotations when `convention` is not set
    remap: dict = field(default_factory=dict)
    # MiT variant or SegFormer hub id / folder; with decoder_type "upernet" a backbone or UperNet checkpoint; with
    # "seaformer"/"ham"/"cgr"/"afformer"/"ocr" a SeaFormer/MSCAN/EfficientFormerV2/AFFormer/HRNet size
    # ("seaformer-base", "mscan-t", "efficientformerv2-s2", "afformer-base", "hrnetv2-w48"), an official .pth or a
    # converted folder
    encoder: str = "b0"
    decoder_type: str = "segformer"  # RECIPE_DECODERS; "upernet" comes with the auxiliary FCN head, weight 0.4
    decoder_hidden_size: int | None = None  # default: the SegFormer checkpoint's / 512 for UperNet
    crop_size: tuple = (512, 512)
    scale: tuple = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    eval_scale: tuple = (2048, 512)
    eval_size_divisor: int | None = None
    iterations: int = 160000
    batch_size: int = 4
    teacher_group_size: int | None = None
    optimizer: str = "adamw"  # "adamw" (betas 0.9, 0.999: the transformer recipes) or "sgd" (OCRNet's)
    momentum: float = 0.9  # SGD's momentum
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

    def __post_init__(self):
        """Every field type- and range-checked, so a bad value is named before anything starts."""
        for name, rule in _RECIPE_RULES.items():
            problem = rule(getattr(self, name))
            if problem:
                raise ValueError(f"recipe field {name!r} must be {problem}, got {getattr(self, name)!r}")
        if self.ratio_range[0] > self.ratio_range[1]:
            raise ValueError(f"recipe field 'ratio_range' must be [low, high] with low <= high, got "
                             f"{self.ratio_range!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"recipe field 'min_lr' ({self.min_lr}) must not exceed 'lr' ({self.lr})")

    @classmethod
    def load(cls, name_or_path: str | Path, **overrides) -> Recipe:
        """A shipped recipe by name (`available_recipes()`) or a JSON file; `overrides` that are not None replace
        its fields (the command-line flags)."""
        path = Path(name_or_path)
        if path.suffix == ".json" or path.exists():
            try:
                values = json.loads(path.read_text())
            except FileNotFoundError as error:
                raise ValueError(f"recipe file {path} does not exist") from error
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot read recipe {path}: {error}") from error
        elif str(name_or_path) in available_recipes():
            values = json.loads(resources.files("ssa_hf").joinpath(f"recipes/{name_or_path}.json").read_text())
        else:
            raise ValueError(f"unknown recipe {str(name_or_path)!r}: give a JSON file or one of "
                             f"{', '.join(available_recipes())}")
        if not isinstance(values, dict):
            raise ValueError(f"{name_or_path}: a recipe is a JSON object of fields")
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{name_or_path}: unknown recipe fields {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{name_or_path}: {error}") from None


    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def label_convention(self) -> LabelConvention:
        if self.convention is not None:
            convention = named_convention(self.convention)
            if convention.num_labels != self.num_labels:
                raise ValueError(f"recipe num_labels {self.num_labels} != {self.convention}'s {convention.num_labels}")
            return convention
        return LabelConvention(self.num_labels, self.reduce_zero_label, {int(k): v for k, v in self.remap.items()})

    def image_processor(self, convention: LabelConvention) -> SSAImageProcessor:
        """The processor saved with the model: this recipe's evaluation resize (keep ratio, size divisor), ImageNet
        normalisation, and the convention of the raw annotations a user would feed it."""
        return SSAImageProcessor(size={"shortest_edge": min(self.eval_scale), "longest_edge": max(self.eval_scale)},
                                 size_divisor=self.eval_size_divisor, do_reduce_labels=convention.reduce_zero_label,
                                 label_remap=convention.remap or None, ignore_index=convention.ignore_index)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(minimum: int, optional: bool = False):
    def rule(value):
        if (value is None and optional) or (_is_int(value) and value >= minimum):
            return None
        return f"an integer >= {minimum}" + (" or null" if optional else "")
    return rule


def _number(minimum: float, strictly: bool = False, maximum: float | None = None):
    def rule(value):
        if _is_number(value) and (value > minimum if strictly else value >= minimum) and (
                maximum is None or value <= maximum):
            return None
        bounds = f"> {minimum}" if strictly else f">= {minimum}"
        return f"a number {bounds}" + (f" and <= {maximum}" if maximum is not None else "")
    return rule


def _pair(check, what: str):
    def rule(value):
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(check(v) and v > 0 for v in value):
            return None
        return f"a pair {what} of positive {'integers' if check is _is_int else 'numbers'}"
    return rule


def _of_type(kind, what: str, optional: bool = False):
    def rule(value):
        return None if isinstance(value, kind) or (optional and value is None) else what
    return rule


def _convention_name(value):
    from .data import CONVENTIONS

    return None if value is None or value in CONVENTIONS else f"null or one of {', '.join(sorted(CONVENTIONS))}"


def _custom_keys(value):
    if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, dict) and set(v) <= {"lr_mult", "decay_mult"}
            and all(_is_number(m) and m >= 0 for m in v.values()) for k, v in value.items()):
        return None
    return 'an object {"key in parameter names": {"lr_mult": number >= 0, "decay_mult": number >= 0}}'


_RECIPE_RULES = {
    "name": _of_type(str, "a string"),
    "convention": _convention_name,
    "num_labels": _integer(1),
    "id2label": _of_type(dict, "an object {index: name} or null", optional=True),
    "reduce_zero_label": _of_type(bool, "true or false"),
    "remap": _of_type(dict, "an object {raw value: label}"),
    "encoder": lambda v: None if isinstance(v, str) and v else "an MiT variant name, a folder or a hub id",
    "decoder_type": lambda v: None if v in RECIPE_DECODERS else " or ".join(f'"{d}"' for d in RECIPE_DECODERS),
    "decoder_hidden_size": _integer(1, optional=True),
    "crop_size": _pair(_is_int, "[height, width]"),
    "scale": _pair(_is_int, "[width, height]"),
    "ratio_range": _pair(_is_number, "[low, high]"),
    "eval_scale": _pair(_is_int, "[width, height]"),
    "eval_size_divisor": _integer(1, optional=True),
    "iterations": _integer(1),
    "batch_size": _integer(1),
    "teacher_group_size": _integer(1, optional=True),
    "optimizer": lambda v: None if v in ("adamw", "sgd") else '"adamw" or "sgd"',
    "momentum": _number(0, maximum=1),
    "lr": _number(0, strictly=True),
    "weight_decay": _number(0),
    "custom_keys": _custom_keys,
    "warmup_iters": _integer(0),
    "warmup_ratio": _number(0, maximum=1),
    "poly_power": _number(0, strictly=True),
    "min_lr": _number(0),
    "eval_every": _integer(1),
    "save_every": _integer(1),
    "gradient_accumulation_steps": _integer(1),
    "seed": _integer(0),
}


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


def peak_learning_rate(recipe: Recipe, iterations: int) -> float:
    """The highest base learning rate that steps 1..iterations of the recipe's schedule reach."""
    return recipe.lr * max(lr_factor(step, recipe) for step in range(min(iterations, recipe.iterations) + 1))


RECIPE_DECODERS = ("segformer", "upernet", "seaformer", "ham", "cgr", "afformer", "ocr")
# The decoders of encoder families this package adds: their SSAConfig derivation and the family's conversion module.
_FAMILY_DECODERS = {"seaformer": (SSAConfig.from_seaformer_config, convert_seaformer),
                    "ham": (SSAConfig.from_mscan_config, convert_segnext),
                    "cgr": (SSAConfig.from_efficientformer_v2_config, convert_cgrseg),
                    "afformer": (SSAConfig.from_afformer_config, convert_afformer),
                    "ocr": (SSAConfig.from_hrnet_config, convert_hrnet)}


def build_model(recipe: Recipe, baseline: bool = False):
    """SSA (or the plain model with `baseline`) for the recipe: on SegFormer, a MiT variant from scratch or a SegFormer
    checkpoint (hub id or folder); on UperNet, an UperNet checkpoint or a backbone checkpoint (e.g. an ImageNet Swin)
    under a fresh UperNet decoder with the auxiliary head. An encoder that cannot be found or read is named."""
    try:
        return _build_model(recipe, baseline)
    except OSError as error:  # transformers' "not a local folder / cannot reach the hub / no such repository"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = "a local folder that cannot be read" if Path(recipe.encoder).exists() else (
            f"not an MiT variant ({', '.join(MIT_VARIANTS)}), not a local folder, and not loadable from the hub")
        raise ValueError(f"encoder {recipe.encoder!r}: {where} ({reason})") from error


def _build_model(recipe: Recipe, baseline: bool):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    id2label = {int(k): v for k, v in (recipe.id2label or {}).items()} or None
    if recipe.decoder_type == "upernet":
        return _build_upernet(recipe, id2label, baseline)
    if recipe.decoder_type in _FAMILY_DECODERS:
        return _build_family(recipe, id2label, baseline)
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


def _build_family(recipe: Recipe, id2label: dict | None, baseline: bool):
    """SeaFormer (light head), MSCAN (SegNeXt's head), EfficientFormerV2 (CGRSeg's head) or AFFormer (its light head)
    with SSA, or with the plain classifier (and CGRSeg's second stage) for `baseline`: a size
    from scratch, or starting weights (an official `.pth`, ImageNet encoder or whole model, or a converted folder) of
    which every tensor that fits is used and the rest is reported."""
    derive, family = _FAMILY_DECODERS[recipe.decoder_type]
    options = {"num_labels": recipe.num_labels, "id2label": id2label, "teacher_group_size": recipe.teacher_group_size,
               "classifier_type": "plain" if baseline else "ssa"}
    if not Path(recipe.encoder).exists():  # a size name
        return SSAForSemanticSegmentation(derive(recipe.encoder, **options))
    state = starting_weights(recipe.encoder)
    try:
        variant = family.variant_of(state)
    except ValueError as error:
        raise ValueError(f"encoder {recipe.encoder}: {error} (decoder_type {recipe.decoder_type!r} needs a "
                         f"{family.__name__.rsplit('_', 1)[-1]} encoder)") from None
    model = SSAForSemanticSegmentation(derive(variant, source_checkpoint=checkpoint_name(recipe.encoder), **options))
    own = model.state_dict()
    used = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    dropped = sorted(set(state) - set(used))
    model.load_state_dict(used, strict=False)
    encoder_used = sum(key.startswith("encoder.") for key in used)
    # Encoder tensors an ImageNet checkpoint has no value for and the official code starts fresh (EfficientFormerV2's
    # segmentation attention biases) do not count as missing.
    imagenet_format = next(name for name in family.FORMATS if name.endswith("_imagenet"))
    starts_fresh = getattr(family, "fresh", lambda key, source_format: False)
    encoder_total = sum(key.startswith("encoder.") and (key in used or not starts_fresh(key, imagenet_format))
                        for key in own)
    print(f"starting weights from {recipe.encoder}: {len(used)} tensors used ({encoder_used} of the encoder's "
          f"{encoder_total}, {len(used) - encoder_used} of the decoder); {len(dropped)} dropped"
          + (f" (not in this model or of another shape: {', '.join(dropped[:8])}{' ...' if len(dropped) > 8 else ''})"
             if dropped else ""), file=sys.stderr)
    if encoder_used < encoder_total:
        raise ValueError(f"encoder {recipe.encoder}: only {encoder_used} of the encoder's {encoder_total} tensors "
                         f"fit; it is not a {variant} encoder of this family")
    return model


def starting_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """Weights in this package's names from an official checkpoint file (any format `ssa-seg convert` reads;
    pickles with `weights_only=True` only) or a `save_pretrained` folder."""
    from .convert import ConversionError, convert_state_dict, load_torch_checkpoint

    path = Path(source)
    if path.is_dir():
        from safetensors.torch import load_file

        weights = path / "model.safetensors"
        if not weights.is_file():
            raise ValueError(f"encoder {source}: a folder without model.safetensors")
        return load_file(str(weights))
    try:
        converted, _ = convert_state_dict(load_torch_checkpoint(path))
    except ConversionError as error:
        raise ValueError(f"encoder {source}: {error}") from None
    return converted


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
    id2label = SSAConfig.resolve_labels(recipe.num_labels, id2label)
    upernet_config = UperNetConfig(  # the paper's UperNet head: 512 channels, auxiliary FCN head weighted 0.4
        backbone_config=backbone.config, hidden_size=recipe.decoder_hidden_size or 512, use_auxiliary_head=True,
        auxiliary_loss_weight=0.4, auxiliary_channels=256, id2label=id2label,
        label2id={name: index for index, name in id2label.items()})
    if baseline:
        model = UperNetForSemanticSegmentation(upernet_config)
    else:
        model = SSAForSemanticSegmentation(SSAConfig.from_upernet_config(
            upernet_config, teacher_group_size=recipe.teacher_group_size,
            source_checkpoint=checkpoint_name(recipe.encoder)))
    (model.backbone if baseline else model.encoder).load_state_dict(backbone.state_dict())
    return model


def epoch_order(num_items: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> list:
    """This process's (row, augmentation seed) keys for one epoch: a permutation shared by all processes (seeded by
    seed and epoch), split across processes, cut to whole batches."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    per_process = (num_items // world_size) // batch_size * batch_size
    base = (seed * 1_000_003 + epoch) * 1_000_003
    return [(order[position], base + position) for position in range(rank, per_process * world_size, world_size)]


# --- the run folder ------------------------------------------------------------------------------------------------


def git_commit() -> str | None:
    """The commit of the source checkout this package runs from ("<sha>-dirty" with local changes), or None."""
    source = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def _write_json(path: Path, value) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def resolve_resume(output: Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: a path, or "latest" for the newest complete `checkpoints/step_N` of
    `output`. Half-written checkpoints (a run killed while saving) are named and never chosen."""
    if resume is None:
        return None
    folder = output / "checkpoints"
    complete = sorted((int(p.name[5:]), p) for p in folder.glob("step_*") if p.name[5:].isdigit() and is_complete(p))
    if resume == "latest":
        if not complete:
            partial = sorted(p.name for p in folder.glob(".step_*.partial"))
            raise CheckpointError(f"--resume latest: {folder} holds no complete checkpoint"
                                  + (f" (half-written: {', '.join(partial)})" if partial else ""))
        path = complete[-1][1]
    else:
        path = Path(resume)
    read_state(path)  # a clear error for partial, damaged or pickled checkpoints
    newer = [p.name for step, p in complete if path.name[5:].isdigit() and step > int(path.name[5:])]
    if path.parent.resolve() == folder.resolve() and newer:
        raise CheckpointError(f"{output} has checkpoints newer than {path.name} ({', '.join(sorted(newer))}); "
                              f"resuming from it would replace them. Move them out of {folder} first.")
    return path


@dataclass
class Run:
    """Everything a run works with, built once by `build_run` and `prepare_run`."""

    recipe: Recipe
    output: Path
    accelerator: object
    convention: LabelConvention
    processor: SSAImageProcessor
    train_set: torch.utils.data.Dataset
    eval_rows: object
    model: torch.nn.Module = None
    optimizer: torch.optim.Optimizer = None
    scheduler: object = None
    baseline: bool = False
    iterations: int = 0  # where this session stops
    step: int = 0
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    eval_limit: int | None = None
    num_workers: int = 2
    progress: bool = True
    metadata: dict = field(default_factory=dict)
    lock: RunFolderLock | None = None  # held by the main process from its first write to the folder
    created_folder: bool = False  # the output folder did not exist before this run


def build_run(recipe: Recipe, data: str, output: str | Path, baseline: bool = False, mixed_precision: str = "no",
              resume: str | None = None, max_iterations: int | None = None, num_workers: int = 2,
              train_split: str = "train", eval_split: str = "validation", eval_limit: int | None = None,
              progress: bool = True, cpu: bool = False, log_with: str | None = "auto", streaming: bool = False,
              command: list[str] | None = None) -> Run:
    """Accelerator, data (label convention applied where rows are decoded) and image processor of a run."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available

    output = Path(output)
    _check_options(mixed_precision=mixed_precision, max_iterations=max_iterations, num_workers=num_workers,
                   eval_limit=eval_limit)
    check_encoder_name(recipe)
    RunFolderLock(output).check_free()  # a folder another training holds is refused by its holder, first
    resume_path = resolve_resume(output, resume)
    check_output_folder(output, resume_path)
    _refuse_sharded_training()
    # train() may run several times in one process (the demo, tests) with other settings: start from a fresh
    # accelerator state, keeping the process group.
    AcceleratorState._reset_state(reset_partial_state=False)
    if log_with == "auto":
        log_with = "tensorboard" if is_tensorboard_available() else None
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=cpu, gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs"),
                                            automatic_checkpoint_naming=False),
    )
    _refuse_sharded_training(accelerator)
    _seed_everything(recipe.seed + accelerator.process_index)
    train_rows = load_split(data, train_split, streaming=streaming)
    eval_rows = load_split(data, eval_split, streaming=streaming)
    # A dataset built by ssa_hf.dataset_builders is already in the training convention and names its classes.
    names = label_names(train_rows)
    convention = training_convention(train_rows, recipe.label_convention(), source=str(data))
    if names is not None and recipe.id2label is None:
        recipe = dataclasses.replace(recipe, id2label=dict(enumerate(names)))
    processor = recipe.image_processor(convention)
    transform = TrainTransform(crop_size=tuple(recipe.crop_size), scale=tuple(recipe.scale),
                               ratio_range=tuple(recipe.ratio_range), ignore_index=convention.ignore_index,
                               mean=tuple(255 * m for m in processor.image_mean),
                               std=tuple(255 * s for s in processor.image_std))
    if streaming:
        if accelerator.num_processes > 1:
            from datasets.distributed import split_dataset_by_node

            train_rows = split_dataset_by_node(train_rows, accelerator.process_index, accelerator.num_processes)
        train_set = StreamingSegmentationDataset(train_rows, convention, transform, seed=recipe.seed,
                                                 batch_size=recipe.batch_size)
    else:
        train_set = SegmentationDataset(train_rows, convention, transform)
        if (len(train_set) // accelerator.num_processes) // recipe.batch_size == 0:
            raise ValueError(f"{len(train_set)} training images are fewer than one batch of {recipe.batch_size} per "
                             f"process")
    iterations = min(max_iterations or recipe.iterations, recipe.iterations)
    metadata = {"name": recipe.name, "recipe": recipe.to_dict(), "seed": recipe.seed, "baseline": baseline,
                "data": str(data), "train_split": train_split, "eval_split": eval_split, "streaming": streaming,
                "eval_limit": eval_limit, "mixed_precision": mixed_precision, "world_size": accelerator.num_processes,
                "ssa_hf_version": __version__, "git_commit": git_commit(), "command": command,
                "log_with": log_with}
    run = Run(recipe=recipe, output=output, accelerator=accelerator, convention=convention, processor=processor,
              train_set=train_set, eval_rows=eval_rows, baseline=baseline, iterations=iterations,
              eval_limit=eval_limit, num_workers=num_workers, progress=progress, metadata=metadata,
              created_folder=not output.exists())
    run.metadata["resume"] = str(resume_path) if resume_path else None
    return run


def _check_options(mixed_precision: str, max_iterations, num_workers, eval_limit) -> None:
    """The run options that are not recipe fields, checked before anything starts."""
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    for name, value, minimum in (("max_iterations", max_iterations, 1), ("num_workers", num_workers, 0),
                                 ("eval_limit", eval_limit, 1)):
        if value is not None and not (_is_int(value) and value >= minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_encoder_name(recipe: Recipe) -> None:
    """An encoder that looks like an MiT variant name (`b` and a number) must be one; checked before the hub is
    asked about it, which offline would only say that it cannot connect."""
    name = recipe.encoder
    if re.fullmatch(r"[bB]\d+", name) and name.lower() not in MIT_VARIANTS and not Path(name).exists():
        raise ValueError(f"encoder {name!r} is not an MiT variant: the variants are {', '.join(MIT_VARIANTS)}; "
                         f"an encoder may also be a folder or a hub id")


def _refuse_sharded_training(accelerator=None) -> None:
    """Checkpoints hold the whole unwrapped model and optimiser, saved by the main process: sharded training (FSDP,
    DeepSpeed, Megatron-LM) would save shards that no run could resume. Refused before anything is written: from
    `accelerate launch`'s environment before the accelerator exists, and from the accelerator's own setting."""
    from accelerate.utils import DistributedType, parse_flag_from_env

    requested = [name for name in ("FSDP", "DEEPSPEED", "MEGATRON_LM") if parse_flag_from_env(f"ACCELERATE_USE_{name}")]
    if accelerator is not None and accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED,
                                                                    DistributedType.MEGATRON_LM):
        requested.append(accelerator.distributed_type.value)
    if requested:
        raise ValueError(f"{requested[0]} is not supported: ssa-seg train checkpoints the whole model and optimiser "
                         f"from the main process, and a sharded run could not resume from them. Use data-parallel "
                         f"training (accelerate launch --multi_gpu); every SSA model fits on one GPU.")


def _open_run_folder(run: Run) -> None:
    """The first write to the run folder, once data and model are known to be good: the main process takes the
    folder's lock (a second training is refused by name), checks the folder again under it, then starts the
    trackers. The other processes learn the outcome and raise the same error."""
    from accelerate.utils import broadcast_object_list

    accelerator = run.accelerator
    failure = [None]
    if accelerator.is_main_process:
        lock = RunFolderLock(run.output)
        try:
            lock.acquire()
            check_output_folder(run.output, Path(run.metadata["resume"]) if run.metadata["resume"] else None)
        except ValueError as error:
            lock.release()
            if run.created_folder and run.output.is_dir() and not any(run.output.iterdir()):
                run.output.rmdir()
            failure = [str(error)]
        else:
            run.lock = lock
    if accelerator.num_processes > 1:
        broadcast_object_list(failure)
    if failure[0] is not None:
        raise RunFolderBusy(failure[0]) if "in use" in failure[0] or "locked" in failure[0] else ValueError(failure[0])
    log_with = run.metadata["log_with"]
    if log_with:
        hyperparameters = {k: v for k, v in vars(run.recipe).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(_model_name(run).lower(), config=hyperparameters)


def prepare_run(run: Run) -> Run:
    """Model, optimiser and schedule; the state of the checkpoint when resuming; `run.json` and the history."""
    recipe, accelerator = run.recipe, run.accelerator
    model = build_model(recipe, baseline=run.baseline)
    if accelerator.num_processes > 1 and accelerator.device.type != "cpu":
        # BN statistics over all processes' images, as the official runs. PyTorch's SyncBatchNorm is GPU-only; CPU
        # processes keep per-process statistics (DDP broadcasts rank 0's buffers, so the model stays identical).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    groups = parameter_groups(model, recipe.lr, recipe.weight_decay, recipe.custom_keys)
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999), weight_decay=recipe.weight_decay)
    run.model, run.optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step it once per process, while the recipe's schedule counts global iterations.
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda step: lr_factor(step, recipe))

    run_file = run.output / "run.json"
    if run.metadata["resume"]:
        resume = Path(run.metadata["resume"])
        stored = json.loads(run_file.read_text()) if run_file.exists() else None
        if stored is not None:
            _check_same_settings(stored, run, run_file)
        run.step, run.history = load_checkpoint(resume, accelerator.unwrap_model(run.model), run.optimizer,
                                                run.scheduler, accelerator.scaler)
        run.history.append({"step": run.step, "resumed_from": str(resume)})
        sessions = (stored or {}).get("sessions", [])
    else:
        sessions = []
    run.metadata["sessions"] = sessions + [{"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_step": run.step,
                                            "command": run.metadata.pop("command", None)}]
    _open_run_folder(run)
    if accelerator.is_main_process:
        _write_json(run_file, run.metadata)
        if recipe.warmup_iters > run.iterations:
            print(f"warning: the warm-up ({recipe.warmup_iters} iterations) is longer than this run "
                  f"({run.iterations} iterations): the learning rate peaks at "
                  f"{peak_learning_rate(recipe, run.iterations):.3g} instead of {recipe.lr:g}. Shorten it with "
                  f"--warmup-iters.", file=sys.stderr)
    return run


def _model_name(run: Run) -> str:
    """What the run trains, in its progress bar and tracker: "SSA", or the baseline's name."""
    if not run.baseline:
        return "SSA"
    return {"upernet": "UperNet", "seaformer": "SeaFormer", "ham": "SegNeXt", "cgr": "CGRSeg",
            "afformer": "AFFormer", "ocr": "OCRNet"}.get(run.recipe.decoder_type, "SegFormer")


def _check_same_settings(stored: dict, run: Run, run_file: Path) -> None:
    """A resumed run continues what was trained: its recipe, baseline flag and mixed precision must be the run's."""
    changed = sorted(k for k in set(stored["recipe"]) | set(run.metadata["recipe"])
                     if stored["recipe"].get(k) != run.metadata["recipe"].get(k))
    changed += [k for k in ("baseline", "mixed_precision") if k in stored and stored[k] != run.metadata[k]]
    if changed:
        flags = {"baseline": "--baseline", "mixed_precision": f"--mixed-precision {stored.get('mixed_precision')}"}
        hint = ", ".join(flags[k] for k in changed if k in flags)
        raise ValueError(f"{run.output} was started with another recipe or flags (differs in {changed}); resume it with the "
                         f"recipe and flags of {run_file}" + (f" ({hint})" if hint else ""))


def _batches(run: Run):
    """Training batches from the current step on. An epoch's order and each item's augmentation depend only on the
    seed and the position in the run, so a resumed run draws what the uninterrupted one would have."""
    recipe, accelerator = run.recipe, run.accelerator
    micro_step = run.step * recipe.gradient_accumulation_steps
    if isinstance(run.train_set, StreamingSegmentationDataset):
        run.train_set.start_item = micro_step * recipe.batch_size
        loader = torch.utils.data.DataLoader(run.train_set, batch_size=recipe.batch_size, num_workers=0)
        for batch in loader:  # endless: the stream restarts each epoch
            yield {name: tensor.to(accelerator.device, non_blocking=True) for name, tensor in batch.items()}
        return
    steps_per_epoch = (len(run.train_set) // accelerator.num_processes) // recipe.batch_size
    while True:
        epoch, offset = divmod(micro_step, steps_per_epoch)
        keys = epoch_order(len(run.train_set), recipe.batch_size, recipe.seed, epoch, accelerator.process_index,
                           accelerator.num_processes)[offset * recipe.batch_size :]
        # Its own generator: starting the loader's workers draws a seed, never from the global RNG.
        loader = torch.utils.data.DataLoader(run.train_set, batch_size=recipe.batch_size, sampler=keys,
                                             num_workers=run.num_workers,
                                             generator=torch.Generator().manual_seed(recipe.seed + epoch))
        with _worker_errors_as_raised():
            for batch in loader:
                yield {name: tensor.to(accelerator.device, non_blocking=True) for name, tensor in batch.items()}
                micro_step += 1


@contextlib.contextmanager
def _worker_errors_as_raised():
    """A data error raised in a loader worker arrives wrapped in the worker's traceback text: re-raise it with the
    message that names the file, as in the main process."""
    try:
        yield
    except (ValueError, OSError) as error:
        message = str(error)
        if "Original Traceback" not in message:
            raise
        last = message.strip().splitlines()[-1]  # "ssa_hf.data.DataError: frame.png: ..."
        raise (DataError if isinstance(error, ValueError) else OSError)(last.split(": ", 1)[-1]) from None


def evaluate_run(run: Run, bar=None) -> dict:
    """Evaluate the model being trained (each image by one process), log it, and print a short table."""
    model = run.accelerator.unwrap_model(run.model)
    metrics = evaluate_dataset(model, run.processor, run.eval_rows, run.convention, limit=run.eval_limit,
                               accelerator=run.accelerator, progress=run.progress,
                               description=f"evaluating step {run.step}")
    summary = {k: metrics[k] for k in SUMMARY_METRICS}
    run.history.append({"step": run.step, "eval": summary, "images": metrics["images"]})
    run.accelerator.log({f"eval/{k}": v for k, v in summary.items()}, step=run.step)
    if run.progress and run.accelerator.is_main_process:
        id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
        names = [id2label.get(i, str(i)) for i in range(run.convention.num_labels)]
        text = results_table(metrics, names, max_rows=None if len(names) <= 20 else 8)
        (bar.write if bar is not None else print)(f"evaluation at step {run.step}:\n{text}")
    return metrics


def iteration_seed(seed: int, micro_step: int, process_index: int) -> int:
    """The seed of the model's randomness (dropout, drop path) at one micro-batch: set before every forward pass,
    so that a resumed run draws what the uninterrupted one did, whatever data loading consumed in between."""
    return ((seed * 1_000_003 + micro_step) * 1_009 + process_index) % 2**63


class NonFiniteLossError(RuntimeError):
    """Too many iterations in a row had a non-finite loss."""


def training_loop(run: Run) -> Run:
    """Optimiser steps up to `run.iterations`, with evaluations and checkpoints on the recipe's schedule.

    An iteration whose loss is not finite (on any process) changes nothing: no optimiser step, batch-norm statistics
    restored; it is warned about and recorded, and `MAX_NON_FINITE_IN_A_ROW` of them stop the run. The progress bar's
    rate counts training only; evaluations have their own bar, and the last mIoU stays in the postfix."""
    from tqdm.auto import tqdm

    recipe, accelerator, model = run.recipe, run.accelerator, run.model
    bar = tqdm(total=run.iterations, initial=run.step, desc=_model_name(run), unit="it",
               disable=not (run.progress and accelerator.is_main_process), dynamic_ncols=True)
    postfix = {}
    stream = _batches(run)
    micro_step = run.step * recipe.gradient_accumulation_steps
    non_finite, non_finite_in_a_row = False, 0
    statistics = _batch_norm_statistics(model)
    model.train()
    while run.step < run.iterations:
        batch = next(stream)
        torch.manual_seed(iteration_seed(recipe.seed, micro_step, accelerator.process_index))
        micro_step += 1
        with accelerator.accumulate(model):
            saved = [buffer.clone() for buffer in statistics]
            out = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
            value = out.loss.detach().float().item()  # the one host read of the iteration
            accelerator.backward(out.loss)
            if not math.isfinite(value):  # restored after backward, which reads the buffers the forward pass used
                non_finite = True
                for buffer, copy in zip(statistics, saved):
                    buffer.copy_(copy)
            skip = accelerator.sync_gradients and _any_process(accelerator, non_finite)
            if not skip:
                run.optimizer.step()  # skipped by accelerate until the last micro-batch of an accumulation
            run.optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        with warnings.catch_warnings():  # a skipped step still counts in the schedule, on purpose
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            run.scheduler.step()
        run.step += 1
        record = {"step": run.step, "loss": value if math.isfinite(value) else None,
                  "lr": run.scheduler.get_last_lr()[0]}
        if skip:
            non_finite_in_a_row += 1
            record["skipped"] = "non-finite loss"
            bar.write(f"warning: step {run.step}: the loss is not finite; the optimiser step is skipped and the "
                      f"batch-norm statistics are kept ({non_finite_in_a_row} in a row)", file=sys.stderr)
            if non_finite_in_a_row >= MAX_NON_FINITE_IN_A_ROW:
                bar.close()
                raise NonFiniteLossError(
                    f"{non_finite_in_a_row} iterations in a row had a non-finite loss (up to step {run.step}): the "
                    f"model did not change in them. Lower the learning rate (--lr), check the data, or resume from "
                    f"the last checkpoint in {run.output / 'checkpoints'}.")
        else:
            non_finite_in_a_row = 0
        non_finite = False
        for name, term in (getattr(out, "loss_terms", None) or {}).items():
            record[f"loss/{name}"] = float(term) if math.isfinite(float(term)) else None
        run.history.append(record)
        accelerator.log({k: v for k, v in record.items() if k not in ("step", "skipped") and v is not None},
                        step=run.step)
        postfix["loss"] = f"{value:.3f}"
        bar.set_postfix(postfix)
        bar.update(1)
        last = run.step == run.iterations
        if run.step % recipe.eval_every == 0 or last:  # before the checkpoint, whose history then holds it
            started = time.monotonic()
            run.metrics = evaluate_run(run, bar)
            _leave_out_of_rate(bar, time.monotonic() - started)
            postfix["mIoU"] = f"{100 * run.metrics['mean_iou']:.2f}"
            bar.set_postfix(postfix)
            model.train()
        if run.step % recipe.save_every == 0 or last:
            save_checkpoint(run)
    bar.close()
    return run


MAX_NON_FINITE_IN_A_ROW = 5


def _batch_norm_statistics(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every batch-norm running statistic, copied before each forward pass to undo the update of a non-finite
    batch."""
    return [buffer for module in model.modules()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked) if buffer is not None]


def _any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` holds on any process (the processes must agree on skipping a step)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="sum").item())


def _leave_out_of_rate(bar, seconds: float) -> None:
    """Shift a tqdm bar's clocks by `seconds`, so that its elapsed time and rate count training iterations only."""
    if not bar.disable:
        bar.start_t += seconds
        bar.last_print_t += seconds


def save_checkpoint(run: Run) -> None:
    """`checkpoints/step_N` (written whole, then renamed) and the history so far."""
    accelerator = run.accelerator
    if accelerator.is_main_process:
        save_checkpoint_folder(run.output / "checkpoints" / f"step_{run.step}", accelerator.unwrap_model(run.model),
                               run.optimizer, run.scheduler, accelerator.scaler, run.step, run.history)
        _write_json(run.output / "history.json", run.history)
    accelerator.wait_for_everyone()


def save_run(run: Run) -> dict:
    """`final/`: the model (safetensors, config, remote code), its image processor and `training_run.json`; the
    history. Returns train()'s result."""
    accelerator = run.accelerator
    if accelerator.is_main_process:  # not end_training(): it also destroys the process group of the caller
        for tracker in accelerator.trackers:
            tracker.finish()
    unwrapped = accelerator.unwrap_model(run.model)
    if accelerator.is_main_process:
        final = run.output / "final"
        partial = run.output / ".final.partial"
        if partial.exists():  # left by a run killed while writing it
            shutil.rmtree(partial)
        trained = {"trained_iterations": run.step, "final_evaluation": run.metrics and {
            **{k: run.metrics[k] for k in SUMMARY_METRICS}, "images": run.metrics["images"],
            "eval_limit": run.eval_limit, "protocol": run.metrics["protocol"]}}
        try:
            unwrapped.save_pretrained(partial)
            run.processor.save_pretrained(partial)
            _write_json(partial / "training_run.json", run.metadata | trained)
        except (OSError, SafetensorError) as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise CheckpointError(f"could not write {final}: {write_failure(error)}; checkpoint step_{run.step} is "
                                  f"complete, so the same command with --resume latest writes it again.") from error
        _keep_previous_final(final)
        os.replace(partial, final)
        _write_json(run.output / "run.json", run.metadata | trained)
        _write_json(run.output / "history.json", run.history)
    accelerator.wait_for_everyone()
    return {"model": unwrapped, "metrics": run.metrics, "history": run.history,
            "world_size": accelerator.num_processes, "processor": run.processor, "output": run.output,
            "is_main_process": accelerator.is_main_process}


def _keep_previous_final(final: Path) -> None:
    """A `final/` of an earlier session (stopped with --max-iterations, then resumed) may hold the user's evaluations
    and card: it is renamed `final_step_N`, never overwritten."""
    if not final.exists():
        return
    try:
        step = json.loads((final / "training_run.json").read_text())["trained_iterations"]
    except (OSError, ValueError, KeyError):
        step = "unknown"
    previous, count = final.with_name(f"final_step_{step}"), 1
    while previous.exists():
        count += 1
        previous = final.with_name(f"final_step_{step}_{count}")
    os.replace(final, previous)
    print(f"note: the previous {final} is kept as {previous}", file=sys.stderr)


def train(recipe: Recipe, data: str, output: str | Path, **options) -> dict:
    """Run a recipe; returns {"model": unwrapped model, "metrics": last evaluation, "history": [...], ...}.

    Options (all keyword): `baseline`, `mixed_precision` ("no", "fp16", "bf16"), `resume` (a checkpoint folder or
    "latest"), `max_iterations` (stop early; the schedule keeps the recipe's length), `num_workers`, `train_split`,
    `eval_split`, `eval_limit` (evaluate on the first N images), `progress`, `cpu`, `log_with` (an accelerate tracker;
    "auto": TensorBoard when tensorboard or tensorboardX is installed; None disables), `streaming` (read a hub or
    parquet dataset as a stream), `command` (recorded in run.json).
    """
    run = build_run(recipe, data, output, **options)
    try:
        return save_run(training_loop(prepare_run(run)))
    except BaseException:
        if run.accelerator.is_main_process and run.lock is not None and not run.metadata["resume"]:
            removed = remove_failed_start(run.output, run.created_folder)
            if removed:  # a new run that saved no checkpoint: nothing to resume, nothing to keep
                print(f"note: the run stopped before its first checkpoint; removed what it wrote to {run.output} "
                      f"({', '.join(removed)}), so the same command can start it again", file=sys.stderr)
        raise
    finally:
        if run.lock is not None:
            run.lock.release()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


__all__ = ["Recipe", "Run", "available_recipes", "build_model", "build_run", "epoch_order", "evaluate_run",
           "lr_factor", "parameter_groups", "peak_learning_rate", "prepare_run", "save_run", "train", "training_loop"]
