"""Conversion of mmseg 0.30 UperNet-Swin checkpoints to `SSAForSemanticSegmentation` with transformers' Swin backbone
(used by `ssa_hf.convert`).

Formats:
- `upernet_swin_ssa`: an official SSA UperNet-Swin (`UPerHead_ssa`; T, B or L);
- `upernet_swin_plain`: an mmseg UperNet-Swin segmenter (`UPerHead`, with its auxiliary `FCNHead` where present): the
  plain baseline's weights, whose SSA layers start fresh;
- `swin_imagenet`: an mmseg-layout Swin ImageNet checkpoint (`patch_embed.projection`, `stages.0.blocks...`), the
  encoder the official configs start from (`swin_tiny_patch4_window7_224_20220317-1cdeb081.pth`, ...).

What differs between mmseg's Swin and transformers' (each handled below, each with its reason):
- the attention's queries, keys and values are one `qkv` projection in mmseg, three in transformers;
- patch merging gathers each 2 x 2 neighbourhood with `nn.Unfold` in mmseg (channel c of offset (row i, column j) at
  4c + 2i + j) and by concatenating the four offsets in transformers ((0,0), (1,0), (0,1), (1,1), each C channels):
  the merged features' norm and reduction are permuted to match;
- the output norms `norm0..3` are transformers' `hidden_states_norms.stage1..4`;
- transformers' Swin uses no shifted window in a stage whose feature map is no larger than the window (the original
  Swin's rule), mmseg shifts anyway: the two agree on every input whose last stage is larger than the window (over
  224 pixels for window 7), which covers the 512-pixel training and evaluation sizes.
"""

from __future__ import annotations

import re

import torch
from transformers import SwinConfig

from .model.configuration_ssa import SSAConfig

FORMATS = {
    "upernet_swin_ssa": "official SSA UperNet-Swin (UPerHead_ssa)",
    "upernet_swin_plain": "mmseg UperNet-Swin segmenter (UPerHead)",
    "swin_imagenet": "Swin ImageNet classifier in mmseg's layout (the encoder alone)",
}

IGNORED = {
    "head.fc.weight": "ImageNet classification head of the Swin encoder",
    "head.fc.bias": "ImageNet classification head of the Swin encoder",
    "norm.weight": "final norm of the Swin classifier (the segmenter normalises each stage's output instead)",
    "norm.bias": "final norm of the Swin classifier (the segmenter normalises each stage's output instead)",
}
_INDEX = "a constant index table, rebuilt by the model"

_BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.w_msa.proj": "attention.o_proj",
    "attn.w_msa.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "ffn.layers.0.0": "mlp.fc1",  # mmcv's FFN: Sequential(Linear, act, dropout) then Linear
    "ffn.layers.1": "mlp.fc2",
}
# mmseg's ConvModule names its norm `bn`, transformers' (and our) UperNet modules `batch_norm`; mmseg's classifier is
# `conv_seg`.
_HEAD_MODULE = r"(psp_modules\.\d+\.1|bottleneck|lateral_convs\.\d+|fpn_convs\.\d+|fpn_bottleneck|convs\.\d+|conv_cat)"


def detect(keys: set[str]) -> str | None:
    """The format of a state dict, or None when it is not an mmseg Swin one."""
    if "backbone.stages.0.blocks.0.attn.w_msa.qkv.weight" in keys:
        return "upernet_swin_ssa" if "decode_head.get_feat_pos.weight" in keys else "upernet_swin_plain"
    if "stages.0.blocks.0.attn.w_msa.qkv.weight" in keys:
        return "swin_imagenet"
    return None


def merge_order(channels: int) -> torch.Tensor:
    """For each merged channel of transformers' patch merging (offset k of (0,0), (1,0), (0,1), (1,1), then channel
    c), the index of the same value in mmseg's unfolded layout (4c + 2i + j)."""
    offsets = torch.tensor([0, 2, 1, 3])  # (i, j) = (0,0), (1,0), (0,1), (1,1) -> 2i + j
    return (torch.arange(channels)[None, :] * 4 + offsets[:, None]).flatten()


def dropped(state: dict[str, torch.Tensor]) -> dict[str, str]:
    return {key: _INDEX for key in state if key.endswith("relative_position_index")}


def encoder_renamer(state: dict[str, torch.Tensor]):
    """A function (mmseg Swin key without `backbone.`, tensor) -> [(our key, tensor)] or None."""

    def rename(key: str, value: torch.Tensor):
        if match := re.fullmatch(r"patch_embed\.(projection|norm)\.(weight|bias)", key):
            part = "patch_embeddings.projection" if match[1] == "projection" else "norm"
            return [(f"encoder.swin.embeddings.{part}.{match[2]}", value)]
        if match := re.fullmatch(r"norm(\d)\.(weight|bias)", key):
            return [(f"encoder.hidden_states_norms.stage{int(match[1]) + 1}.{match[2]}", value)]
        if match := re.fullmatch(r"stages\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)", key):
            order = merge_order(value.shape[-1] // 4)
            return [(f"encoder.swin.encoder.layers.{match[1]}.downsample.{match[2]}.{match[3]}", value[..., order])]
        if match := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+?)(?:\.(weight|bias))?", key):
            prefix = f"encoder.swin.encoder.layers.{match[1]}.blocks.{match[2]}"
            module, kind = match[3], f".{match[4]}" if match[4] else ""
            if module == "attn.w_msa.qkv":  # one projection, queries, keys and values stacked
                query, key_, value_ = value.chunk(3, dim=0)
                return [(f"{prefix}.attention.q_proj{kind}", query), (f"{prefix}.attention.k_proj{kind}", key_),
                        (f"{prefix}.attention.v_proj{kind}", value_)]
            if module in _BLOCK_NAMES:
                return [(f"{prefix}.{_BLOCK_NAMES[module]}{kind}", value)]
        return None

    return rename


def rename_decoder(key: str, value: torch.Tensor):
    """UPerHead's and the auxiliary FCNHead's mmseg keys -> ours (`SSAUperNetDecodeHead`, `SSAAuxiliaryHead`); the
    decode head's classifier and SSA layers are mapped by `ssa_hf.convert`."""
    if match := re.fullmatch(rf"(decode_head|auxiliary_head)\.{_HEAD_MODULE}\.(conv|bn)\.(\w+)", key):
        return [(f"{match[1]}.{match[2]}.{'conv' if match[3] == 'conv' else 'batch_norm'}.{match[4]}", value)]
    if match := re.fullmatch(r"auxiliary_head\.conv_seg\.(weight|bias)", key):
        return [(f"auxiliary_head.classifier.{match[1]}", value)]
    return None


def fresh(key: str, source_format: str) -> bool:
    """Model keys no mmseg checkpoint has: transformers' final Swin norm, which the backbone never applies; and for
    an encoder alone, the decoder."""
    return key.startswith("encoder.swin.layernorm.") or (source_format == "swin_imagenet" and key.startswith(
        ("decode_head.", "auxiliary_head.")))


def swin_config(converted: dict[str, torch.Tensor]) -> SwinConfig:
    """transformers' `SwinConfig` of the converted encoder: width, depths, heads and window from the weights' shapes
    (the rest as every mmseg Swin of the SSA configs: patch 4, MLP ratio 4, query/key/value biases)."""
    stages = sorted({int(m[1]) for k in converted if (m := re.match(r"encoder\.swin\.encoder\.layers\.(\d+)\.", k))})
    depths, heads = [], []
    for stage in stages:
        blocks = {int(m[1]) for k in converted
                  if (m := re.match(rf"encoder\.swin\.encoder\.layers\.{stage}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        table = converted[f"encoder.swin.encoder.layers.{stage}.blocks.0.attention.relative_position_bias."
                          f"relative_position_bias_table"]
        heads.append(table.shape[1])
    window = (int(round(table.shape[0] ** 0.5)) + 1) // 2  # the table holds (2W - 1)^2 relative offsets
    return SwinConfig(embed_dim=converted["encoder.swin.embeddings.patch_embeddings.projection.weight"].shape[0],
                      depths=depths, num_heads=heads, window_size=window, drop_path_rate=0.3,
                      out_features=[f"stage{i + 1}" for i in range(len(stages))])


def build_config(converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None,
                 id2label: dict | None, **config_kwargs) -> SSAConfig:
    """The `SSAConfig` of the converted weights: the Swin they hold, UperNet with the checkpoint's width (512 and an
    auxiliary head of 256 channels on stage 3 for an encoder alone, as the official configs) and class count."""
    id2label = SSAConfig.resolve_labels(num_labels, id2label)
    head = {"decoder_hidden_size": 512, "use_auxiliary_head": True, "auxiliary_channels": 256}
    if "decode_head.fpn_bottleneck.conv.weight" in converted:
        auxiliary = converted.get("auxiliary_head.convs.0.conv.weight")
        head = {"decoder_hidden_size": converted["decode_head.fpn_bottleneck.conv.weight"].shape[0],
                "use_auxiliary_head": auxiliary is not None,
                "auxiliary_channels": auxiliary.shape[0] if auxiliary is not None else 256,
                "auxiliary_num_convs": len({k.split(".")[2] for k in converted if k.startswith("auxiliary_head.convs.")})
                or 1,
                "auxiliary_concat_input": "auxiliary_head.conv_cat.conv.weight" in converted}
    return SSAConfig(backbone_config=swin_config(converted), decoder_type="upernet", id2label=id2label,
                     label2id={name: index for index, name in id2label.items()}, **(head | config_kwargs))


__all__ = ["FORMATS", "IGNORED", "build_config", "detect", "dropped", "encoder_renamer", "fresh", "merge_order",
           "rename_decoder"]
