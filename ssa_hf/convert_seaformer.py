"""Conversion of official SeaFormer checkpoints to `SSAForSemanticSegmentation` (used by `ssa_hf.convert`).

Formats:
- `seaformer_ssa`: an official SSA SeaFormer (`backbone.smb*` / `backbone.trans*`, `decode_head.fuse*`,
  `decode_head.linear_fuse`, `decode_head.conv_seg` and the SSA layers of `LightHead_ssa`);
- `seaformer_plain`: an official SeaFormer segmenter (mmseg `LightHead`, no SSA layers): the plain baseline's weights,
  whose SSA layers start fresh;
- `seaformer_imagenet`: a SeaFormer ImageNet classification checkpoint (`smb*`, `trans*`, `linear`), the encoder the
  official configs start from (`SeaFormer_B_cls_76.4.pth`, ...): its classifier is dropped, the decoder starts fresh.

The official names are mapped onto ours by the tables below, each with the reason of its rename.
"""

from __future__ import annotations

import re

import torch

from .model.configuration_seaformer import SEAFORMER_HEADS, SEAFORMER_VARIANTS, SeaFormerConfig
from .model.configuration_ssa import SSAConfig

FORMATS = {
    "seaformer_ssa": "official SSA SeaFormer (LightHead_ssa)",
    "seaformer_plain": "official SeaFormer segmenter (LightHead)",
    "seaformer_imagenet": "SeaFormer ImageNet classifier (the encoder alone)",
}

IGNORED = {
    "linear.weight": "ImageNet classification head of the SeaFormer encoder",
    "linear.bias": "ImageNet classification head of the SeaFormer encoder",
}

# Inside the attention blocks: the official module -> ours (the official one-letter and numbered names say little).
_ATTENTION_NAMES = {
    "attn.to_q": "attention.query",
    "attn.to_k": "attention.key",
    "attn.to_v": "attention.value",
    "attn.proj.1": "attention.output_projection",  # Sequential(activation, Conv2d_BN): the conv is item 1
    "attn.proj_encode_row.1": "attention.row_projection",
    "attn.proj_encode_column.1": "attention.column_projection",
    "attn.dwconv": "attention.detail_depthwise",
    "attn.pwconv": "attention.detail_pointwise",
    "mlp.fc1": "mlp.expand",
    "mlp.dwconv": "mlp.depthwise",
    "mlp.fc2": "mlp.project",
}
_POSITION_NAMES = {"pos_emb_rowq": "row_query_position", "pos_emb_rowk": "row_key_position",
                   "pos_emb_columnq": "column_query_position", "pos_emb_columnk": "column_key_position"}
# Conv2d_BN's children: `c` (the convolution) and `bn`.
_CONV_NORM = {"c": "convolution", "bn": "normalization"}


def detect(keys: set[str]) -> str | None:
    """The format of a state dict, or None when it is not a SeaFormer one."""
    if "backbone.smb1.stem_block.0.c.weight" in keys:
        return "seaformer_ssa" if "decode_head.get_feat_pos.weight" in keys else "seaformer_plain"
    if "smb1.stem_block.0.c.weight" in keys:
        return "seaformer_imagenet"
    return None


def encoder_renamer(state: dict[str, torch.Tensor]):
    """A function (official encoder key, tensor) -> [(our key, tensor)] or None, for this checkpoint: which blocks
    expand and how many stages have attention are read off its keys."""
    keys = {k.removeprefix("backbone.") for k in state}
    expanding = {(m[1], m[2]) for k in keys if (m := re.match(r"smb(\d+)\.layer(\d+)\.conv\.4\.", k))}
    num_stages = len({m[1] for k in keys if (m := re.match(r"smb(\d+)\.", k))})
    num_attention = len({m[1] for k in keys if (m := re.match(r"trans(\d+)\.", k))})

    def rename(key: str, value: torch.Tensor):
        if match := re.fullmatch(r"smb1\.stem_block\.0\.(c|bn)\.(\w+)", key):
            return [(f"encoder.stem.{_CONV_NORM[match[1]]}.{match[2]}", value)]
        if match := re.fullmatch(r"smb(\d+)\.layer(\d+)\.conv\.(\d)\.(c|bn)\.(\w+)", key):
            stage, layer, position = match[1], match[2], int(match[3])
            # The block's Sequential holds (expand, act,) depthwise, act, project: even items are convolutions.
            parts = ("expand", "depthwise", "project") if (stage, layer) in expanding else ("depthwise", "project")
            prefix = f"encoder.stages.{int(stage) - 1}.blocks.{int(layer) - 1}"
            return [(f"{prefix}.{parts[position // 2]}.{_CONV_NORM[match[4]]}.{match[5]}", value)]
        if match := re.fullmatch(r"trans(\d+)\.transformer_blocks\.(\d+)\.(.+)", key):
            stage = num_stages - num_attention + int(match[1]) - 1  # attention follows the last stages
            prefix = f"encoder.stages.{stage}.attention_blocks.{match[2]}"
            rest = match[3]
            if position := re.fullmatch(r"attn\.(pos_emb_\w+)\.pos_embed", rest):
                return [(f"{prefix}.attention.{_POSITION_NAMES[position[1]]}.embedding", value)]
            for official, ours in _ATTENTION_NAMES.items():
                if rest.startswith(official + "."):
                    tail = rest[len(official) + 1:].split(".")
                    tail = [_CONV_NORM.get(tail[0], tail[0])] + tail[1:] if len(tail) > 1 else tail
                    return [(f"{prefix}.{ours}.{'.'.join(tail)}", value)]
        return None

    return rename


def rename_decoder(key: str, value: torch.Tensor):
    """The light head's official decoder keys -> ours (`SSASeaFormerDecodeHead`); the classifier and SSA layers are
    mapped by `ssa_hf.convert`. ConvModule's `bn` is our conv module's `batch_norm`."""
    if match := re.fullmatch(r"decode_head\.fuse(\d+)\.(local_embedding|global_act)\.(conv|bn)\.(\w+)", key):
        module = "local_embedding" if match[2] == "local_embedding" else "global_gate"  # it gates, it is no act
        part = "conv" if match[3] == "conv" else "batch_norm"
        return [(f"decode_head.fusions.{int(match[1]) - 1}.{module}.{part}.{match[4]}", value)]
    if match := re.fullmatch(r"decode_head\.linear_fuse\.(conv|bn)\.(\w+)", key):
        return [(f"decode_head.linear_fuse.{'conv' if match[1] == 'conv' else 'batch_norm'}.{match[2]}", value)]
    return None


def _encoder_shapes(config: SeaFormerConfig) -> dict[str, tuple]:
    from .model.modeling_seaformer import SeaFormerBackbone

    with torch.device("meta"):
        backbone = SeaFormerBackbone(config)
    return {f"encoder.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()}


def variant_of(converted: dict[str, torch.Tensor]) -> str:
    """The SeaFormer size whose encoder has exactly these weights' names and shapes."""
    found = {k: tuple(v.shape) for k, v in converted.items() if k.startswith("encoder.")}
    for name in SEAFORMER_VARIANTS:
        expected = _encoder_shapes(SeaFormerConfig.from_variant(name))
        if {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")} == \
                {k: v for k, v in found.items() if not k.endswith("num_batches_tracked")}:
            return name
    raise ValueError("the encoder weights match none of the SeaFormer sizes "
                     f"({', '.join(SEAFORMER_VARIANTS)}); convert them with an explicit config instead.")


def build_config(converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None,
                 id2label: dict | None, **config_kwargs) -> SSAConfig:
    """The `SSAConfig` of the converted weights: the SeaFormer size they match, the light head of the checkpoint (or
    the official one of that size, for an ImageNet encoder), and its class count."""
    variant = variant_of(converted)
    fusions = sorted({int(m[1]) for k in converted if (m := re.match(r"decode_head\.fusions\.(\d+)\.", k))})
    if fusions:
        head = {"decoder_embed_dims": [converted[f"decode_head.fusions.{i}.local_embedding.conv.weight"].shape[0]
                                       for i in fusions],
                "decoder_hidden_size": converted["decode_head.linear_fuse.conv.weight"].shape[0]}
    else:
        head = dict(SEAFORMER_HEADS[variant])
    return SSAConfig.from_seaformer_config(variant, num_labels=num_labels, id2label=id2label, **head, **config_kwargs)


__all__ = ["FORMATS", "IGNORED", "build_config", "detect", "encoder_renamer", "rename_decoder", "variant_of"]
