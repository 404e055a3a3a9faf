"""Conversion of official CGRSeg checkpoints (EfficientFormerV2 encoder, CGR head) to `SSAForSemanticSegmentation`
(used by `ssa_hf.convert`).

Formats:
- `cgrseg_ssa`: an official SSA CGRSeg (`backbone.patch_embed` / `backbone.network`, `decode_head.trans`,
  `decode_head.meta`, `decode_head.SIM`, `decode_head.conv`, `decode_head.linear_fuse`, `decode_head.conv_seg` and the
  SSA layers of `CGRSeg_ssa`);
- `cgrseg_plain`: a published CGRSeg segmenter (its second stage, `decode_head.lgc`, kept), the `--baseline` model;
- `efficientformer_v2_imagenet`: an EfficientFormerV2 ImageNet classifier (`eformer_s2_450.pth`, `eformer_l_450.pth`),
  the encoder the official configs start from. The segmentation attention biases it lacks start at zero, as in the
  official code; its own ImageNet-size biases are not used by the segmentation backbone and are dropped.

The official names are mapped onto ours by the tables below, each with the reason of its rename.
"""

from __future__ import annotations

import re

import torch

from .model.configuration_efficientformer_v2 import CGRSEG_HEADS, EFFICIENTFORMER_V2_VARIANTS, EfficientFormerV2Config
from .model.configuration_ssa import SSAConfig

FORMATS = {
    "cgrseg_ssa": "official SSA CGRSeg (CGRSeg_ssa)",
    "cgrseg_plain": "published CGRSeg segmenter (CGRSeg, with its second stage)",
    "efficientformer_v2_imagenet": "EfficientFormerV2 ImageNet classifier (the encoder alone)",
}

_CLASSIFICATION = "ImageNet classification layers of the EfficientFormerV2 encoder"
IGNORED = {f"{module}.{kind}": _CLASSIFICATION for module in ("head", "dist_head") for kind in ("weight", "bias")} | {
    f"norm.{kind}": _CLASSIFICATION for kind in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
_UNUSED_BIASES = "ImageNet-size attention biases, which the segmentation backbone keeps but never uses"

# The stem's Sequential: conv, BN, GELU, conv, BN (items 0, 1, 3, 4).
_STEM = {"0": "convolution1", "1": "normalization1", "3": "convolution2", "4": "normalization2"}
# Conv + BN pairs are Sequential items in the official code; ours are named.
_PAIR = {"0": "convolution", "1": "normalization"}
# Inside a block: the official module -> ours.
_BLOCK_NAMES = {
    "mlp.fc1": "mlp.expand.convolution",
    "mlp.norm1": "mlp.expand.normalization",
    "mlp.mid": "mlp.depthwise.convolution",
    "mlp.mid_norm": "mlp.depthwise.normalization",
    "mlp.fc2": "mlp.project.convolution",
    "mlp.norm2": "mlp.project.normalization",
    "token_mixer.talking_head1": "attention.talking_head_before_softmax",
    "token_mixer.talking_head2": "attention.talking_head_after_softmax",
    "token_mixer.proj.1": "attention.projection.convolution",  # Sequential(activation, conv, BN)
    "token_mixer.proj.2": "attention.projection.normalization",
}
_ATTENTION_PAIRS = {"q": "query", "k": "key", "v": "value", "v_local": "value_local", "stride_conv": "downsample"}
# The attention that downsamples into stage 4 (`network.5.attn`): its query is a local conv plus a pooled projection.
_DOWNSAMPLE_NAMES = {
    "attn.q.local.0": "attention.query.local",
    "attn.q.proj.0": "attention.query.projection.convolution",
    "attn.q.proj.1": "attention.query.projection.normalization",
    "attn.proj.1": "attention.projection.convolution",
    "attn.proj.2": "attention.projection.normalization",
    "conv": "convolution",  # the stride-2 conv + BN that the attention is added to
    "bn": "normalization",
    "proj": "convolution",  # the plain downsampling between earlier stages
    "norm": "normalization",
}
# The head: what each official module is.
_HEAD_BLOCK = {
    "gamma": "scale",
    "token_mixer.dwconv_hw": "calibration.local",
    "token_mixer.excite.0": "calibration.band_horizontal",
    "token_mixer.excite.1": "calibration.band_norm",
    "token_mixer.excite.3": "calibration.band_vertical",
    "norm": "norm",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
}
_HEAD_NAMES = {
    "linear_fuse.conv": "linear_fuse.conv",
    "linear_fuse.bn": "linear_fuse.bn",
    "lgc.conv_mask": "prototype_guidance.class_attention",  # the published second stage (plain baseline only)
    "lgc.channel_mul_conv.0": "prototype_guidance.channel_gate.0",
    "lgc.channel_mul_conv.1": "prototype_guidance.channel_gate.1",
    "lgc.channel_mul_conv.3": "prototype_guidance.channel_gate.3",
}


def detect(keys: set[str]) -> str | None:
    """The format of a state dict, or None when it is not a CGRSeg/EfficientFormerV2 one."""
    if "backbone.network.0.0.mlp.fc1.weight" in keys and "decode_head.trans.transformer_blocks.0.gamma" in keys:
        return "cgrseg_ssa" if "decode_head.get_feat_pos.weight" in keys else "cgrseg_plain"
    if "network.0.0.mlp.fc1.weight" in keys and "patch_embed.0.weight" in keys:
        return "efficientformer_v2_imagenet"
    return None


def encoder_renamer(state: dict[str, torch.Tensor]):
    """A function (official encoder key, tensor) -> [(our key, tensor)], [] for a dropped key, or None."""

    def rename(key: str, value: torch.Tensor):
        if match := re.fullmatch(r"patch_embed\.(\d)\.(\w+)", key):
            return [(f"encoder.stem.{_STEM[match[1]]}.{match[2]}", value)] if match[1] in _STEM else None
        if match := re.fullmatch(r"network\.(\d+)\.(\d+)\.(.+)\.(\w+)", key):  # a block: network.{2i}.{j}
            return _block(f"encoder.stages.{int(match[1]) // 2}.blocks.{match[2]}", match[3], match[4], value)
        if match := re.fullmatch(r"network\.(\d+)\.(\d+)\.(layer_scale_[12])", key):
            target = "attention_scale" if match[3] == "layer_scale_1" else "mlp_scale"
            return [(f"encoder.stages.{int(match[1]) // 2}.blocks.{match[2]}.{target}", value)]
        if match := re.fullmatch(r"network\.(\d+)\.(.+)\.(\w+)", key):  # a downsampling: network.{2i+1}
            prefix = f"encoder.stages.{(int(match[1]) + 1) // 2}.downsample"
            return _downsample(prefix, match[2], match[3], value)
        return None

    return rename


def _relative_bias(prefix: str, kind: str, value: torch.Tensor):
    if kind == "attention_biases_seg":
        return [(f"{prefix}.relative_bias.biases", value)]
    if kind == "attention_bias_idxs_seg":
        return [(f"{prefix}.relative_bias.indices", value)]
    if kind in ("attention_biases", "attention_bias_idxs"):
        return []
    return None


def _block(prefix: str, module: str, kind: str, value: torch.Tensor):
    if module == "token_mixer":
        return _relative_bias(f"{prefix}.attention", kind, value)
    if module in _BLOCK_NAMES:
        return [(f"{prefix}.{_BLOCK_NAMES[module]}.{kind}", value)]
    if match := re.fullmatch(r"token_mixer\.(q|k|v|v_local|stride_conv)\.([01])", module):
        return [(f"{prefix}.attention.{_ATTENTION_PAIRS[match[1]]}.{_PAIR[match[2]]}.{kind}", value)]
    return None


def _downsample(prefix: str, module: str, kind: str, value: torch.Tensor):
    if module == "attn":
        return _relative_bias(f"{prefix}.attention", kind, value)
    if module in _DOWNSAMPLE_NAMES:
        return [(f"{prefix}.{_DOWNSAMPLE_NAMES[module]}.{kind}", value)]
    if match := re.fullmatch(r"attn\.(k|v|v_local)\.([01])", module):
        return [(f"{prefix}.attention.{_ATTENTION_PAIRS[match[1]]}.{_PAIR[match[2]]}.{kind}", value)]
    return None


def dropped(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Source keys that carry weights the model does not use, with the reason."""
    return {key: _UNUSED_BIASES for key in state if key.endswith((".attention_biases", ".attention_bias_idxs"))}


def rename_decoder(key: str, value: torch.Tensor):
    """The CGR head's official keys -> ours (`SSACGRDecodeHead`); the classifier and SSA layers are mapped by
    `ssa_hf.convert`."""
    module, _, kind = key.removeprefix("decode_head.").rpartition(".")
    if module in _HEAD_NAMES:
        return [(f"decode_head.{_HEAD_NAMES[module]}.{kind}", value)]
    if match := re.fullmatch(r"(trans\.transformer_blocks|meta)\.(\d+)\.?(.*)", module):
        group = "refinements" if match[1] == "meta" else "context"  # per-level blocks / blocks on the pooled pyramid
        inner = match[3] or kind  # the layer scale `gamma` is a parameter of the block itself
        if inner not in _HEAD_BLOCK:
            return None
        return [(f"decode_head.{group}.{match[2]}.{_HEAD_BLOCK[inner]}{'' if not match[3] else '.' + kind}", value)]
    if match := re.fullmatch(r"SIM\.(\d+)\.(fuse1|fuse2)\.(conv|bn)", module):
        part = "local_embedding" if match[2] == "fuse1" else "global_gate"
        return [(f"decode_head.injections.{match[1]}.{part}.{match[3]}.{kind}", value)]
    if match := re.fullmatch(r"conv\.(\d+)", module):
        return [(f"decode_head.top_down.{match[1]}.{kind}", value)]
    return None


def variant_of(converted: dict[str, torch.Tensor]) -> str:
    """The EfficientFormerV2 size whose encoder has exactly these weights' names and shapes (the relative-bias
    tables, which an ImageNet checkpoint lacks, aside)."""
    from .model.modeling_efficientformer_v2 import EfficientFormerV2Backbone

    found = {k: tuple(v.shape) for k, v in converted.items()
             if k.startswith("encoder.") and ".relative_bias." not in k}
    for name in EFFICIENTFORMER_V2_VARIANTS:
        with torch.device("meta"):
            backbone = EfficientFormerV2Backbone(EfficientFormerV2Config.from_variant(name))
        own = {f"encoder.{k}": tuple(v.shape) for k, v in backbone.state_dict().items() if ".relative_bias." not in k}
        if own == found:
            return name
    raise ValueError(f"the encoder weights match none of the EfficientFormerV2 sizes "
                     f"({', '.join(EFFICIENTFORMER_V2_VARIANTS)}).")


def fresh(key: str, source_format: str) -> bool:
    """Model keys the source format has no value for, which start as in training from scratch."""
    if source_format == "efficientformer_v2_imagenet":
        return key.startswith("decode_head.") or ".relative_bias." in key
    return False


def build_config(converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None,
                 id2label: dict | None, **config_kwargs) -> SSAConfig:
    """The `SSAConfig` of the converted weights: the EfficientFormerV2 size they match, the head of the checkpoint
    (or the official one of that size, for an ImageNet encoder), and its class count."""
    variant = variant_of(converted)
    head = dict(CGRSEG_HEADS.get(variant, CGRSEG_HEADS["s2"]))
    if "decode_head.linear_fuse.conv.weight" in converted:  # the head as the checkpoint has it
        blocks = {int(m[1]) for k in converted if (m := re.match(r"decode_head\.context\.(\d+)\.", k))}
        head.update(decoder_hidden_size=converted["decode_head.linear_fuse.conv.weight"].shape[0],
                    cgr_context_blocks=len(blocks),
                    cgr_context_band_size=converted["decode_head.context.0.calibration.band_horizontal.weight"].shape[-1],
                    cgr_band_size=converted["decode_head.refinements.0.calibration.band_horizontal.weight"].shape[-1],
                    cgr_square_kernel_size=converted["decode_head.refinements.0.calibration.local.weight"].shape[-1])
    return SSAConfig.from_efficientformer_v2_config(variant, num_labels=num_labels, id2label=id2label,
                                                    **(head | config_kwargs))


__all__ = ["FORMATS", "IGNORED", "build_config", "detect", "dropped", "encoder_renamer", "fresh", "rename_decoder",
           "variant_of"]
