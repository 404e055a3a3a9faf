"""Conversion of official AFFormer checkpoints (AFFormer encoder, `CLS` head) to `SSAForSemanticSegmentation` (used by
`ssa_hf.convert`).

Formats:
- `afformer_ssa`: an official SSA AFFormer (`backbone.stem` / `backbone.patch_embed_stages` / `backbone.mhca_stages`,
  `decode_head.squeeze`, `decode_head.conv_seg` and the SSA layers of `CLS_ssa`);
- `afformer_plain`: an official AFFormer segmenter (`CLS`, no SSA layers), whose SSA layers start fresh;
- `afformer_imagenet`: an AFFormer ImageNet classifier (`AFFormer_base_ImageNet1k_new.pth`, ...), the encoder the
  official configs start from: its classifier is dropped, the decoder starts fresh.

The official code hands each attention layer a reference to its encoder's shared position encoding and frequency
filter, so the official state dicts hold those tensors once per layer as well (`MHCA_layers.{i}.cpe`,
`MHCA_layers.{i}.crpe`, `MHCA_layers.{i}.factoratt_crpe.crpe`). Ours holds them once: the copies are checked to equal
the encoder's own and dropped. The head's `align` conv is built by the official code but never used.
"""

from __future__ import annotations

import re

import torch

from .model.configuration_afformer import AFFORMER_HEADS, AFFORMER_VARIANTS, AFFormerConfig
from .model.configuration_ssa import SSAConfig

FORMATS = {
    "afformer_ssa": "official SSA AFFormer (CLS_ssa)",
    "afformer_plain": "official AFFormer segmenter (CLS)",
    "afformer_imagenet": "AFFormer ImageNet classifier (the encoder alone)",
}

_UNUSED_ALIGN = "the head's `align` conv, built by the official code but never called"
IGNORED = {f"{module}.{kind}": "ImageNet classification head of the AFFormer encoder"
           for module in ("cls_head.cls", "head") for kind in ("weight", "bias")} | {
    f"decode_head.align.{name}": _UNUSED_ALIGN for name in ("conv.weight", "gn.weight", "gn.bias")}

# mmcv's Conv2d_BN children (`conv`, `bn`) -> ours.
_CONV_NORM = {"conv": "convolution", "bn": "normalization"}
_PATCH_EMBEDDING = {"dwconv": "depthwise", "pwconv": "pointwise", "bn": "normalization"}
_RESTORE = {"conv1.conv": "reduce.convolution", "conv1.bn": "reduce.normalization", "dwconv": "depthwise",
            "norm": "normalization", "conv2.conv": "expand.convolution", "conv2.bn": "expand.normalization"}
# Inside an attention layer (`MHCA_layers.{i}`): the official module -> ours.
_LAYER_NAMES = {
    "norm1": "attention_norm",
    "norm2": "mlp_norm",
    "factoratt_crpe.qkv": "attention.qkv",
    "factoratt_crpe.proj": "attention.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.depthwise",
    "mlp.fc2": "mlp.fc2",
}
# A layer's references to the encoder's shared modules, and the encoder key they repeat.
_SHARED_COPY = re.compile(r"(.*mhca_blks\.0\.)MHCA_layers\.\d+\.(?:factoratt_crpe\.)?((?:cpe|crpe)\..+)")
_HEAD_NAMES = {"squeeze.conv": "squeeze.conv", "squeeze.gn": "squeeze.group_norm"}


def detect(keys: set[str]) -> str | None:
    """The format of a state dict, or None when it is not an AFFormer one."""
    if "backbone.mhca_stages.0.aggregate.conv.weight" in keys:
        return "afformer_ssa" if "decode_head.get_feat_pos.weight" in keys else "afformer_plain"
    if "mhca_stages.0.aggregate.conv.weight" in keys:
        return "afformer_imagenet"
    return None


def dropped(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """The per-layer copies of the shared position encoding and frequency filter, each checked against the
    encoder's own (a copy that differs means the file is not an AFFormer state dict: ValueError)."""
    reasons = {}
    for key, value in state.items():
        if match := _SHARED_COPY.fullmatch(key):
            shared = match[1] + match[2]
            if shared not in state or not torch.equal(state[shared], value):
                raise ValueError(f"{key} should repeat the shared {shared}, but differs from it.")
            reasons[key] = f"a second name of the shared {shared}"
    return reasons


def encoder_renamer(state: dict[str, torch.Tensor]):
    """A function (official encoder key, tensor) -> [(our key, tensor)] or None."""

    def rename(key: str, value: torch.Tensor):
        if match := re.fullmatch(r"stem\.(\d)\.(conv|bn)\.(\w+)", key):
            return [(f"encoder.stem.{match[1]}.{_CONV_NORM[match[2]]}.{match[3]}", value)]
        if match := re.fullmatch(r"patch_embed_stages\.(\d)\.patch_embeds\.(\d)\.patch_conv\.(\w+)\.(\w+)", key):
            if match[3] in _PATCH_EMBEDDING:
                return [(f"encoder.stages.{match[1]}.patch_embeddings.{match[2]}.{_PATCH_EMBEDDING[match[3]]}."
                         f"{match[4]}", value)]
            return None
        if not (match := re.fullmatch(r"mhca_stages\.(\d)\.(.+)\.(\w+)", key)):
            return None
        prefix, module, kind = f"encoder.stages.{match[1]}", match[2], match[3]
        if module.startswith("Restore.") and module.removeprefix("Restore.") in _RESTORE:
            return [(f"{prefix}.restore.{_RESTORE[module.removeprefix('Restore.')]}.{kind}", value)]
        if match := re.fullmatch(r"aggregate\.(conv|bn)", module):
            return [(f"{prefix}.aggregate.{_CONV_NORM[match[1]]}.{kind}", value)]
        if module == "mhca_blks.0.cpe.proj":
            return [(f"{prefix}.encoder.position_encoding.{kind}", value)]
        if match := re.fullmatch(r"mhca_blks\.0\.crpe\.conv_list\.(\d)", module):
            return [(f"{prefix}.encoder.frequency_filter.high_pass.{match[1]}.{kind}", value)]
        if match := re.fullmatch(r"mhca_blks\.0\.MHCA_layers\.(\d+)\.(.+)", module):
            if match[2] in _LAYER_NAMES:
                return [(f"{prefix}.encoder.layers.{match[1]}.{_LAYER_NAMES[match[2]]}.{kind}", value)]
        return None

    return rename


def rename_decoder(key: str, value: torch.Tensor):
    """The head's official keys -> ours (`SSASqueezeDecodeHead`); the classifier and SSA layers are mapped by
    `ssa_hf.convert`."""
    module, _, kind = key.removeprefix("decode_head.").rpartition(".")
    if module in _HEAD_NAMES:
        return [(f"decode_head.{_HEAD_NAMES[module]}.{kind}", value)]
    return None


def variant_of(converted: dict[str, torch.Tensor]) -> str:
    """The AFFormer size whose encoder has exactly these weights' names and shapes."""
    from .model.modeling_afformer import AFFormerBackbone

    found = {k: tuple(v.shape) for k, v in converted.items() if k.startswith("encoder.")}
    for name in AFFORMER_VARIANTS:
        with torch.device("meta"):
            backbone = AFFormerBackbone(AFFormerConfig.from_variant(name))
        if {f"encoder.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()} == found:
            return name
    raise ValueError(f"the encoder weights match none of the AFFormer sizes ({', '.join(AFFORMER_VARIANTS)}).")


def build_config(converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None,
                 id2label: dict | None, **config_kwargs) -> SSAConfig:
    """The `SSAConfig` of the converted weights: the AFFormer size they match, the head width of the checkpoint (or
    the official one, for an ImageNet encoder), and its class count."""
    variant = variant_of(converted)
    head = dict(AFFORMER_HEADS[variant])
    if "decode_head.squeeze.conv.weight" in converted:
        head["decoder_hidden_size"] = converted["decode_head.squeeze.conv.weight"].shape[0]
    return SSAConfig.from_afformer_config(variant, num_labels=num_labels, id2label=id2label, **(head | config_kwargs))


__all__ = ["FORMATS", "IGNORED", "build_config", "detect", "dropped", "encoder_renamer", "rename_decoder",
           "variant_of"]
