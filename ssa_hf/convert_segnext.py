"""Conversion of official SegNeXt checkpoints (MSCAN encoder, light Hamburger head) to `SSAForSemanticSegmentation`
(used by `ssa_hf.convert`).

Formats:
- `segnext_ssa`: an official SSA SegNeXt (`backbone.patch_embed*` / `backbone.block*`, `decode_head.squeeze`,
  `decode_head.hamburger`, `decode_head.align`, `decode_head.conv_seg` and the SSA layers of `LightHamHead_ssa`);
- `segnext_plain`: an official SegNeXt segmenter (mmseg `LightHamHead`, no SSA layers), whose SSA layers start fresh;
- `mscan_imagenet`: an MSCAN ImageNet classification checkpoint (`mscan_t_*.pth`, ...), the encoder the official
  configs start from: its classifier is dropped, the decoder starts fresh.

The official names are mapped onto ours by the tables below, each with the reason of its rename.
"""

from __future__ import annotations

import re

import torch

from .model.configuration_mscan import MSCAN_VARIANTS, SEGNEXT_HEADS, MSCANConfig
from .model.configuration_ssa import SSAConfig

FORMATS = {
    "segnext_ssa": "official SSA SegNeXt (LightHamHead_ssa)",
    "segnext_plain": "official SegNeXt segmenter (LightHamHead)",
    "mscan_imagenet": "MSCAN ImageNet classifier (the encoder alone)",
}

IGNORED = {
    "head.weight": "ImageNet classification head of the MSCAN encoder",
    "head.bias": "ImageNet classification head of the MSCAN encoder",
}

# The stem's Sequential: conv, BN, GELU, conv, BN (items 0, 1, 3, 4).
_STEM = {"0": "convolution1", "1": "normalization1", "3": "convolution2", "4": "normalization2"}
# Inside a block: the official module -> ours.
_BLOCK_NAMES = {
    "norm1": "attention_norm",
    "norm2": "mlp_norm",
    "layer_scale_1": "attention_scale",
    "layer_scale_2": "mlp_scale",
    "attn.proj_1": "attention.input_projection",
    "attn.proj_2": "attention.output_projection",
    "attn.spatial_gating_unit.conv0": "attention.gating.local",  # the 5x5 depth-wise convolution
    "attn.spatial_gating_unit.conv0_1": "attention.gating.strips.0.0",  # strip branches: 7, 11, 21 long; 1xk, kx1
    "attn.spatial_gating_unit.conv0_2": "attention.gating.strips.0.1",
    "attn.spatial_gating_unit.conv1_1": "attention.gating.strips.1.0",
    "attn.spatial_gating_unit.conv1_2": "attention.gating.strips.1.1",
    "attn.spatial_gating_unit.conv2_1": "attention.gating.strips.2.0",
    "attn.spatial_gating_unit.conv2_2": "attention.gating.strips.2.1",
    "attn.spatial_gating_unit.conv3": "attention.gating.mix",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.depthwise",
    "mlp.fc2": "mlp.fc2",
}
# The head: ConvModule's group norm `gn` is our conv module's `group_norm`; the Hamburger's 1x1 "breads" are named
# by what they do.
_HEAD_NAMES = {
    "squeeze.conv": "squeeze.conv",
    "squeeze.gn": "squeeze.group_norm",
    "hamburger.ham_in.conv": "hamburger.input_projection",
    "hamburger.ham_out.conv": "hamburger.output_projection.conv",
    "hamburger.ham_out.gn": "hamburger.output_projection.group_norm",
    "align.conv": "align.conv",
    "align.gn": "align.group_norm",
}


def detect(keys: set[str]) -> str | None:
    """The format of a state dict, or None when it is not a SegNeXt/MSCAN one."""
    if "backbone.patch_embed1.proj.0.weight" in keys:
        return "segnext_ssa" if "decode_head.get_feat_pos.weight" in keys else "segnext_plain"
    if "patch_embed1.proj.0.weight" in keys and "block1.0.attn.spatial_gating_unit.conv0.weight" in keys:
        return "mscan_imagenet"
    return None


def encoder_renamer(state: dict[str, torch.Tensor]):
    """A function (official encoder key, tensor) -> [(our key, tensor)] or None."""

    def rename(key: str, value: torch.Tensor):
        if match := re.fullmatch(r"patch_embed1\.proj\.(\d)\.(\w+)", key):
            return [(f"encoder.stages.0.patch_embedding.{_STEM[match[1]]}.{match[2]}", value)]
        if match := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(\w+)", key):
            part = "convolution" if match[2] == "proj" else "normalization"
            return [(f"encoder.stages.{int(match[1]) - 1}.patch_embedding.{part}.{match[3]}", value)]
        if match := re.fullmatch(r"norm(\d)\.(weight|bias)", key):
            return [(f"encoder.stages.{int(match[1]) - 1}.layer_norm.{match[2]}", value)]
        if match := re.fullmatch(r"block(\d)\.(\d+)\.(.+)", key):
            prefix = f"encoder.stages.{int(match[1]) - 1}.blocks.{match[2]}"
            rest = match[3]
            if rest in ("layer_scale_1", "layer_scale_2"):
                return [(f"{prefix}.{_BLOCK_NAMES[rest]}", value)]
            module, _, kind = rest.rpartition(".")
            if module in _BLOCK_NAMES:
                return [(f"{prefix}.{_BLOCK_NAMES[module]}.{kind}", value)]
        return None

    return rename


def rename_decoder(key: str, value: torch.Tensor):
    """The light Hamburger head's official keys -> ours (`SSAHamDecodeHead`); the classifier and SSA layers are
    mapped by `ssa_hf.convert`."""
    module, _, kind = key.removeprefix("decode_head.").rpartition(".")
    if module in _HEAD_NAMES:
        return [(f"decode_head.{_HEAD_NAMES[module]}.{kind}", value)]
    return None


def variant_of(converted: dict[str, torch.Tensor]) -> str:
    """The MSCAN size whose encoder has exactly these weights' names and shapes."""
    from .model.modeling_mscan import MSCANBackbone

    found = {k: tuple(v.shape) for k, v in converted.items() if k.startswith("encoder.")}
    for name in MSCAN_VARIANTS:
        with torch.device("meta"):
            backbone = MSCANBackbone(MSCANConfig.from_variant(name))
        if {f"encoder.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()} == found:
            return name
    raise ValueError(f"the encoder weights match none of the MSCAN sizes ({', '.join(MSCAN_VARIANTS)}).")


def build_config(converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None,
                 id2label: dict | None, **config_kwargs) -> SSAConfig:
    """The `SSAConfig` of the converted weights: the MSCAN size they match, the head of the checkpoint (or the
    official one of that size, for an ImageNet encoder), and its class count."""
    variant = variant_of(converted)
    head = dict(SEGNEXT_HEADS[variant])
    if "decode_head.align.conv.weight" in converted:  # widths as the checkpoint has them (R is not in the weights)
        head.update(ham_channels=converted["decode_head.squeeze.conv.weight"].shape[0],
                    decoder_hidden_size=converted["decode_head.align.conv.weight"].shape[0])
    return SSAConfig.from_mscan_config(variant, num_labels=num_labels, id2label=id2label, **(head | config_kwargs))


__all__ = ["FORMATS", "IGNORED", "build_config", "detect", "encoder_renamer", "rename_decoder", "variant_of"]
