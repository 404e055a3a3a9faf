"""Checkpoint conversion to `SSAForSemanticSegmentation`.

Sources (detected from the key names):
- `nvlabs_mit`: an NVlabs ImageNet MiT encoder (`mit_b0.pth` ... `mit_b5.pth`: `patch_embed1.proj`, `block1.0.attn.q`);
- `nvlabs_segformer`: an NVlabs SegFormer (`segformer.b0.512x512.ade.160k.pth`: `backbone.patch_embed1...`,
  `decode_head.linear_c1.proj`, `decode_head.linear_fuse.conv`, `decode_head.linear_pred`) -> transformers layout;
- `mmseg_mit`: an mmseg 0.30 MiT encoder (`mit2mmseg` output: `layers.0.0.projection`, `layers.0.1.0.attn.attn`);
- `mmseg_segformer`: an mmseg 0.30 SegFormer (`backbone.layers...`, `decode_head.convs.0.conv`,
  `decode_head.fusion_conv`, `decode_head.conv_seg`) -> the `segformer_mmseg` decoder layout;
- `ssa_official`: `mmseg_segformer` plus the SSA layers of the official SSA code (`decode_head.get_feat_pos`,
  `center_pos`, `center_content_proj`, `center_pos_proj`, `center_proj` and the teacher's `gt_*`; docs/method.md, section 1);
- the other model families, each in its own module (`FAMILIES`): `convert_seaformer` (`seaformer_ssa`,
  `seaformer_plain`, `seaformer_imagenet`), `convert_segnext` (`segnext_ssa`, `segnext_plain`, `mscan_imagenet`),
  `convert_cgrseg` (`cgrseg_ssa`, `cgrseg_plain`, `efficientformer_v2_imagenet`), `convert_afformer`
  (`afformer_ssa`, `afformer_plain`, `afformer_imagenet`) and `convert_swin` (`upernet_swin_ssa`,
  `upernet_swin_plain`, `swin_imagenet`: mmseg's Swin onto transformers' Swin backbone) and `convert_hrnet`
  (`ocrnet_hrnet_ssa`, `ocrnet_hrnet_plain`, `hrnet_imagenet`).

A plain source (a segmenter without SSA layers) becomes an SSA model whose SSA layers start fresh, or, with
`classifier_type="plain"` (`ssa-seg convert --baseline`), the published model itself, its own classifier kept.

Every source key is mapped, or listed as ignored with a reason; anything else is reported as unexpected, and every
model parameter that no source key fills is reported as missing (SSA layers of a plain SegFormer source are reported
separately as freshly initialised). `.pth` files are read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import convert_afformer, convert_cgrseg, convert_hrnet, convert_seaformer, convert_segnext, convert_swin
from .model.configuration_ssa import SSAConfig
from .model.modeling_ssa import SSAForSemanticSegmentation

# MiT hyper-parameters shared by b0..b5 (SegFormer paper, table 6); sizes and depths come from the checkpoint.
_MIT_FIXED = {
    "num_attention_heads": [1, 2, 5, 8],
    "sr_ratios": [8, 4, 2, 1],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "mlp_ratios": [4, 4, 4, 4],
}

# Source keys that carry no model weight.
_IGNORED = {
    "head.weight": "ImageNet classification head of the MiT encoder",
    "head.bias": "ImageNet classification head of the MiT encoder",
    "decode_head.ssa_loss.criterion.empty_weight": "unused loss buffer of the official SSA code",
}

# Official SSA sub-module names (docs/method.md, section 1) -> ours, under decode_head.classifier.
_SSA_NAMES = {
    "conv_seg": "",  # the fixed prototypes: classifier.weight / classifier.bias
    "get_feat_pos": "position_encoder",
    "center_pos": "class_position_basis",
    "center_content_proj.0": "semantic_fusion.reduce",
    "center_content_proj.2": "semantic_fusion.expand",
    "center_pos_proj.0": "spatial_fusion.reduce",
    "center_pos_proj.2": "spatial_fusion.expand",
    "center_proj": "prototype_projection",
    "gt_center_content_proj.0": "teacher_semantic_fusion.reduce",
    "gt_center_content_proj.2": "teacher_semantic_fusion.expand",
    "gt_center_pos_proj.0": "teacher_spatial_fusion.reduce",
    "gt_center_pos_proj.2": "teacher_spatial_fusion.expand",
    "gt_center_proj": "teacher_prototype_projection",
}

MIT_FORMATS = ("nvlabs_mit", "nvlabs_segformer", "mmseg_mit", "mmseg_segformer", "ssa_official")


# The other model families, each converted by its own module, by the formats it names.
FAMILIES = {name: module for module in (convert_seaformer, convert_segnext, convert_cgrseg, convert_afformer,
                                        convert_swin, convert_hrnet)
            for name in module.FORMATS}
FORMATS = MIT_FORMATS + tuple(FAMILIES)


class ConversionError(ValueError):
    """A checkpoint that cannot be converted (unknown layout, unmapped or missing weights, unreadable file)."""


@dataclass
class ConversionReport:
    """What happened to every key: `mapped` source -> target, `ignored` source -> reason, `unexpected` source keys
    that map to nothing, `missing` model keys that nothing filled, `fresh` SSA/decoder keys initialised anew because
    the source has no such layer (expected for a plain SegFormer or an encoder-only source)."""

    source_format: str
    mapped: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    max_abs_logit_difference: float | None = None

    def summary(self) -> str:
        lines = [
            f"source format: {self.source_format}",
            f"mapped {len(self.mapped)} source tensors; ignored {len(self.ignored)}; "
            f"freshly initialised {len(self.fresh)} model tensors",
        ]
        by_reason: dict[str, list[str]] = {}
        for key, reason in sorted(self.ignored.items()):
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():  # every key is in conversion_report.json; a few here
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            lines.append(f"  ignored {shown}: {reason}")
        if self.fresh:
            lines.append(f"  fresh: {_compact(self.fresh)}")
        if self.unexpected:
            lines.append(f"UNEXPECTED source keys ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        if self.missing:
            lines.append(f"MISSING model keys ({len(self.missing)}): {', '.join(self.missing)}")
        if self.max_abs_logit_difference is not None:
            lines.append(f"parity: reloaded from disk, max |logit difference| = {self.max_abs_logit_difference:.2e}")
        return "\n".join(lines)


def _compact(keys: list[str]) -> str:
    modules = sorted({key.rsplit(".", 1)[0] for key in keys})
    return ", ".join(modules)


def load_torch_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor state dict of a `.pth`/`.bin`/`.safetensors` file (unwrapping mmcv's `state_dict` / `model`).
    Pickles are read with `weights_only=True`: a file that needs arbitrary code to unpickle is refused."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - any parse failure is a corrupt file for the user
            raise ConversionError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise ConversionError(
            f"{path} could not be loaded with torch.load(weights_only=True): {str(error).splitlines()[0]}. "
            "Only plain tensor checkpoints are accepted (a truncated download or a pickle that needs code)."
        ) from error
    if isinstance(checkpoint, dict):
        for wrapper in ("state_dict_ema", "state_dict", "model"):  # the EMA weights first, as SeaFormer loads them
            if isinstance(checkpoint.get(wrapper), dict):
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, dict) or not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f"{path} holds no state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """Name the layout of a state dict (one of `FORMATS`) from its keys."""
    keys = set(state)
    if "patch_embed1.proj.weight" in keys:
        return "nvlabs_mit"
    if "backbone.patch_embed1.proj.weight" in keys:
        return "nvlabs_segformer"
    if "layers.0.0.projection.weight" in keys:
        return "mmseg_mit"
    if "backbone.layers.0.0.projection.weight" in keys:
        return "ssa_official" if "decode_head.get_feat_pos.weight" in keys else "mmseg_segformer"
    for module in dict.fromkeys(FAMILIES.values()):
        if found := module.detect(keys):
            return found
    shown = ", ".join(sorted(keys)[:6])
    raise ConversionError(
        f"unrecognised checkpoint layout (first keys: {shown}). Expected an NVlabs or mmseg 0.30 MiT/SegFormer, an "
        f"official SSA checkpoint (SegFormer, SeaFormer, SegNeXt, CGRSeg, AFFormer, UperNet-Swin, OCRNet-HRNet) or "
        f"its plain segmenter, or a SeaFormer/MSCAN/EfficientFormerV2/AFFormer/Swin/HRNet ImageNet encoder; a transformers "
        f"segmenter's folder or hub id converts with from_transformers."
    )


# --- encoder -----------------------------------------------------------------------------------------------------

_NVLABS_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.q": "attention.q_proj",
    "attn.proj": "attention.o_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.fc2",
}
_MMSEG_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.attn.out_proj": "attention.o_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "ffn.layers.0": "mlp.fc1",
    "ffn.layers.1": "mlp.dwconv.dwconv",
    "ffn.layers.4": "mlp.fc2",
}


def _encoder_nvlabs(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    if match := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(weight|bias)", key):
        stage, part, kind = int(match[1]) - 1, match[2], match[3]
        name = "proj" if part == "proj" else "layer_norm"
        return [(f"encoder.stages.{stage}.patch_embeddings.{name}.{kind}", value)]
    if match := re.fullmatch(r"norm(\d)\.(weight|bias)", key):
        return [(f"encoder.stages.{int(match[1]) - 1}.layer_norm.{match[2]}", value)]
    if match := re.fullmatch(r"block(\d)\.(\d+)\.(.+)\.(weight|bias)", key):
        prefix = f"encoder.stages.{int(match[1]) - 1}.blocks.{match[2]}"
        module, kind = match[3], match[4]
        if module == "attn.kv":  # keys and values stacked: (2C, C)
            k, v = value.chunk(2, dim=0)
            return [(f"{prefix}.attention.k_proj.{kind}", k), (f"{prefix}.attention.v_proj.{kind}", v)]
        if module in _NVLABS_BLOCK:
            return [(f"{prefix}.{_NVLABS_BLOCK[module]}.{kind}", value)]
    return None


def _encoder_mmseg(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    if match := re.fullmatch(r"layers\.(\d)\.0\.(projection|norm)\.(weight|bias)", key):
        name = "proj" if match[2] == "projection" else "layer_norm"
        return [(f"encoder.stages.{match[1]}.patch_embeddings.{name}.{match[3]}", value)]
    if match := re.fullmatch(r"layers\.(\d)\.2\.(weight|bias)", key):
        return [(f"encoder.stages.{match[1]}.layer_norm.{match[2]}", value)]
    if match := re.fullmatch(r"layers\.(\d)\.1\.(\d+)\.(.+)\.(weight|bias)", key):
        prefix = f"encoder.stages.{match[1]}.blocks.{match[2]}"
        module, kind = match[3], match[4]
        if module in _MMSEG_BLOCK:
            target = _MMSEG_BLOCK[module]
            if target in ("mlp.fc1", "mlp.fc2") and kind == "weight":  # 1x1 convs -> Linear
                value = value.flatten(1)
            return [(f"{prefix}.{target}.{kind}", value)]
    if match := re.fullmatch(r"layers\.(\d)\.1\.(\d+)\.attn\.attn\.in_proj_(weight|bias)", key):
        prefix = f"encoder.stages.{match[1]}.blocks.{match[2]}.attention"
        q, k, v = value.chunk(3, dim=0)  # nn.MultiheadAttention stacks queries, keys and values
        return [(f"{prefix}.q_proj.{match[3]}", q), (f"{prefix}.k_proj.{match[3]}", k),
                (f"{prefix}.v_proj.{match[3]}", v)]
    return None


# --- decoder -----------------------------------------------------------------------------------------------------


def _decoder_nvlabs(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    if match := re.fullmatch(r"decode_head\.linear_c(\d)\.proj\.(weight|bias)", key):
        return [(f"decode_head.linear_projections.{int(match[1]) - 1}.proj.{match[2]}", value)]
    if key == "decode_head.linear_fuse.conv.weight":
        return [("decode_head.linear_fuse.weight", value)]
    if match := re.fullmatch(r"decode_head\.linear_fuse\.bn\.(\w+)", key):
        return [(f"decode_head.batch_norm.{match[1]}", value)]
    if match := re.fullmatch(r"decode_head\.linear_pred\.(weight|bias)", key):
        return [(f"decode_head.classifier.{match[1]}", value)]
    return None


def _decoder_mmseg(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    if match := re.fullmatch(r"decode_head\.((?:convs\.\d|fusion_conv)\.(?:conv|bn)\.\w+)", key):
        return [(f"decode_head.{match[1]}", value)]
    return _classifier(key, value)


def _classifier(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    """The official classifier (`conv_seg`) and SSA layers, the same in every official SSA head (`_SSA_NAMES`)."""
    if match := re.fullmatch(r"decode_head\.([\w.]+?)\.(weight|bias)", key):
        if match[1] in _SSA_NAMES:
            target = _SSA_NAMES[match[1]]
            return [(f"decode_head.classifier.{target + '.' if target else ''}{match[2]}", value)]
    return None


def convert_state_dict(
    state: dict[str, torch.Tensor], source_format: str | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename (and split/reshape) a source state dict into ours; nothing is dropped silently."""
    source_format = source_format or detect_format(state)
    if source_format not in FORMATS:
        raise ConversionError(f"unknown source format '{source_format}'; expected one of {FORMATS}.")
    report = ConversionReport(source_format)
    ignored = dict(_IGNORED)
    if source_format in MIT_FORMATS:
        encoder = _encoder_nvlabs if source_format.startswith("nvlabs") else _encoder_mmseg
        decoder = _decoder_nvlabs if source_format.startswith("nvlabs") else _decoder_mmseg
        encoder_only = source_format.endswith("_mit")
    else:
        family = FAMILIES[source_format]
        encoder, ignored = family.encoder_renamer(state), ignored | family.IGNORED
        if hasattr(family, "dropped"):  # weights the model has no use for, found by looking at the whole file
            try:
                ignored |= family.dropped(state)
            except ValueError as error:
                raise ConversionError(str(error)) from None

        classifier_key = getattr(family, "classifier_key", lambda key: key)  # where the SSA head's names start

        def decoder(key, value):
            return family.rename_decoder(key, value) or _classifier(classifier_key(key), value)

        encoder_only = source_format.endswith("_imagenet")
    converted = {}
    for key, value in state.items():
        if key in ignored:
            report.ignored[key] = ignored[key]
            continue
        targets = None
        if key.startswith("backbone."):
            targets = encoder(key.removeprefix("backbone."), value)
        elif key.startswith(("decode_head.", "auxiliary_head.")):  # auxiliary heads: only families that keep one
            targets = decoder(key, value)
        elif encoder_only:
            targets = encoder(key, value)
        if targets is None:
            report.unexpected.append(key)
            continue
        for target, tensor in targets:
            converted[target] = tensor.clone()
            report.mapped[key] = target if len(targets) == 1 else ", ".join(t for t, _ in targets)
    return converted, report


def config_from_state_dict(
    converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None = None,
    id2label: dict[int, str] | None = None, **config_kwargs,
) -> SSAConfig:
    """An `SSAConfig` whose shapes fit the converted weights (encoder size, decoder widths, class count)."""
    classifier = converted.get("decode_head.classifier.weight")
    if classifier is not None:
        if num_labels is not None and num_labels != classifier.shape[0] and id2label is None:
            raise ConversionError(
                f"the checkpoint's classifier has {classifier.shape[0]} classes but num_labels={num_labels} was given."
            )
        num_labels = num_labels or classifier.shape[0]
    if id2label is not None:
        num_labels = len(id2label)
    if num_labels is None:
        raise ConversionError("the checkpoint has no classifier: give the number of classes (num_labels / id2label).")
    if source_format not in MIT_FORMATS:
        try:
            return FAMILIES[source_format].build_config(converted, source_format, num_labels, id2label,
                                                           **config_kwargs)
        except ValueError as error:
            raise ConversionError(str(error)) from None
    hidden_sizes, depths = [], []
    for stage in range(4):
        weight = converted.get(f"encoder.stages.{stage}.patch_embeddings.proj.weight")
        if weight is None:
            raise ConversionError(f"the checkpoint has no patch embedding for encoder stage {stage + 1}.")
        hidden_sizes.append(weight.shape[0])
        blocks = {int(m[1]) for k in converted if (m := re.match(rf"encoder\.stages\.{stage}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
    decoder_type = "segformer" if source_format.startswith("nvlabs") else "segformer_mmseg"
    fuse = converted.get("decode_head.linear_fuse.weight", converted.get("decode_head.fusion_conv.conv.weight"))
    decoder_hidden_size = fuse.shape[0] if fuse is not None else config_kwargs.pop("decoder_hidden_size", 256)
    backbone = {"hidden_sizes": hidden_sizes, "depths": depths, **_MIT_FIXED}
    return SSAConfig.from_segformer_config(
        backbone | {"decoder_hidden_size": decoder_hidden_size}, num_labels=num_labels, id2label=id2label,
        decoder_type=decoder_type, **config_kwargs,
    )


def convert_checkpoint(
    path: str | Path,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    source_format: str | None = None,
    allow_mismatch: bool = False,
    **config_kwargs,
) -> tuple[SSAForSemanticSegmentation, ConversionReport]:
    """Load an original (NVlabs / mmseg 0.30 / official SSA) checkpoint into a new `SSAForSemanticSegmentation`.

    Raises `ConversionError` naming every unexpected source key and every missing model key unless
    `allow_mismatch`; layers that the source format does not have (the SSA layers of a plain SegFormer, the decoder
    of an encoder-only checkpoint) are initialised as in training from scratch and listed in `report.fresh`.
    """
    state = load_torch_checkpoint(path)
    converted, report = convert_state_dict(state, source_format)
    if config_kwargs.get("classifier_type") == "plain" and (
            report.source_format.endswith(("_mit", "_imagenet", "_ssa")) or report.source_format == "ssa_official"):
        raise ConversionError(f"the baseline keeps the classifier of a plain segmenter, and {Path(path).name} is a "
                              f"{report.source_format} checkpoint (an SSA model or an encoder alone).")
    config_kwargs = {"source_checkpoint": f"local:{Path(path).name}", **config_kwargs}
    config = config_from_state_dict(converted, report.source_format, num_labels, id2label, **config_kwargs)
    model = SSAForSemanticSegmentation(config).eval()
    classifier_shape = model.decode_head.classifier.weight.shape
    if "decode_head.classifier.weight" in converted and converted["decode_head.classifier.weight"].shape[0] != \
            classifier_shape[0]:
        # a new class set: the fixed prototypes start fresh (as from_segformer does)
        for name in ("decode_head.classifier.weight", "decode_head.classifier.bias"):
            report.ignored[name] = "classifier of another class set (re-initialised)"
            converted.pop(name)
    own = model.state_dict()
    wrong_shape = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
                   if k in own and own[k].shape != v.shape]
    if wrong_shape:
        raise ConversionError(f"tensor shapes do not fit the inferred architecture: {'; '.join(wrong_shape)}")
    for key in [k for k in converted if k not in own and k.startswith("decode_head.prototype_guidance.")]:
        report.ignored[_unmap(report, key)] = "the published CGRSeg's second stage, which SSA replaces"
        converted.pop(key)
    report.unexpected += [k for k in converted if k not in own]
    expected_fresh = _fresh_prefixes(report.source_format)
    family_fresh = getattr(FAMILIES.get(report.source_format), "fresh", lambda key, source_format: False)
    for key in own:
        if key not in converted:
            is_fresh = key.startswith(expected_fresh) or family_fresh(key, report.source_format)
            (report.fresh if is_fresh else report.missing).append(key)
    if (report.unexpected or report.missing) and not allow_mismatch:
        raise ConversionError(report.summary())
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
    return model, report


def _unmap(report: ConversionReport, target: str) -> str:
    """The source key that was mapped to `target` (taken out of `report.mapped`)."""
    source = next(key for key, mapped in report.mapped.items() if mapped == target)
    del report.mapped[source]
    return source


def _fresh_prefixes(source_format: str) -> tuple[str, ...]:
    if source_format.endswith(("_mit", "_imagenet")):
        return ("decode_head.",)
    if source_format == "ssa_official" or source_format.endswith("_ssa"):
        return ()
    return tuple(f"decode_head.classifier.{name}" for name in (
        "position_encoder", "class_position_basis", "semantic_fusion", "spatial_fusion", "prototype_projection",
        "teacher_semantic_fusion", "teacher_spatial_fusion", "teacher_prototype_projection",
    ))


@torch.no_grad()
def parity_check(model: torch.nn.Module, folder: str | Path, size: tuple[int, int] | None = None) -> float:
    """Reload `folder` with `AutoModelForSemanticSegmentation` and return the max |logit difference| against
    `model` on a fixed random image (both in eval mode, float32) of 128 x 160, or of the encoder's own image size
    where it has one (BEiT's position biases, for example, are built for it)."""
    from transformers import AutoModelForSemanticSegmentation

    if size is None:
        own = getattr(model.config.backbone_config, "image_size", None) if model.config.segmenter_encoder else None
        size = (own, own) if isinstance(own, int) else (128, 160)

    reloaded = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    # Loaded tensors may sit at any byte offset of the file's memory map, and the CPU's conv kernels then sum in
    # another order (logits ~1e-6 apart). Fresh copies are aligned as the model's own, so the check compares the saved
    # weights and code bit for bit.
    with torch.no_grad():
        for tensor in [*reloaded.parameters(), *reloaded.buffers()]:
            tensor.data = tensor.data.clone()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, 3, *size, generator=generator)
    was_training = model.training
    model.eval()
    difference = (model(pixel_values=pixel_values).logits.float() - reloaded(pixel_values=pixel_values).logits.float())
    model.train(was_training)
    return difference.abs().max().item()


__all__ = [
    "FORMATS",
    "ConversionError",
    "ConversionReport",
    "config_from_state_dict",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_format",
    "load_torch_checkpoint",
    "parity_check",
]
