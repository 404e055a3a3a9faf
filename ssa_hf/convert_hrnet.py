"""Conversion of mmseg 0.30 OCRNet-HRNet checkpoints to `SSAForSemanticSegmentation` (used by `ssa_hf.convert`).

Formats:
- `ocrnet_hrnet_ssa`: an official SSA OCRNet (`decode_head.0` the stage-1 `FCNHead`, `decode_head.1` `OCRHead_ssa`);
- `ocrnet_hrnet_plain`: an mmseg OCRNet (`OCRHead`): the plain baseline's weights, whose SSA layers start fresh;
- `hrnet_imagenet`: an HRNetV2 ImageNet checkpoint (`hrnetv2_w48-d2186c55.pth`, the official configs' start; its
  classification layers are dropped).

mmseg's HRNet numbers its convolutions and norms (`conv1`/`bn1`, `fuse_layers.i.j.0`, `transition2.2.0.0`); ours
names what they do (`stem`, `fusions`, `transitions`), and the OCR head's `object_context_block` is our
`object_attention`. The tables below give each rename.
"""

from __future__ import annotations

import re

import torch

from .model.configuration_hrnet import HRNetConfig
from .model.configuration_ssa import SSAConfig

FORMATS = {
    "ocrnet_hrnet_ssa": "official SSA OCRNet-HRNet (FCNHead + OCRHead_ssa)",
    "ocrnet_hrnet_plain": "mmseg OCRNet-HRNet segmenter (FCNHead + OCRHead)",
    "hrnet_imagenet": "HRNetV2 ImageNet classifier (the encoder alone)",
}

IGNORED = {"decode_head.1.ssa_loss.criterion.empty_weight": "unused loss buffer of the official SSA code"}
_CLASSIFICATION = "ImageNet classification layers of HRNet (the segmenter uses the four branches directly)"

_NORM = {"0": "convolution", "1": "normalization"}  # Sequential(conv, norm[, ReLU])
_BOTTLENECK = {"conv1": "reduce.convolution", "bn1": "reduce.normalization", "conv2": "spatial.convolution",
               "bn2": "spatial.normalization", "conv3": "expand.convolution", "bn3": "expand.normalization",
               "downsample.0": "shortcut.convolution", "downsample.1": "shortcut.normalization"}
_BASIC = {"conv1": "first.convolution", "bn1": "first.normalization", "conv2": "second.convolution",
          "bn2": "second.normalization"}
_OCR = r"(key_project\.\d|query_project\.\d|value_project|out_project|bottleneck)"


def detect(keys: set[str]) -> str | None:
    """The format of a state dict, or None when it is not an HRNet one."""
    if "backbone.stage2.0.fuse_layers.0.1.0.weight" in keys:
        return "ocrnet_hrnet_ssa" if "decode_head.1.get_feat_pos.weight" in keys else "ocrnet_hrnet_plain"
    if "stage2.0.fuse_layers.0.1.0.weight" in keys:
        return "hrnet_imagenet"
    return None


def dropped(state: dict[str, torch.Tensor]) -> dict[str, str]:
    return {key: _CLASSIFICATION for key in state
            if key.startswith(("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."))}


def encoder_renamer(state: dict[str, torch.Tensor]):
    """A function (mmseg HRNet key without `backbone.`, tensor) -> [(our key, tensor)] or None."""

    def rename(key: str, value: torch.Tensor):
        module, _, kind = key.rpartition(".")
        if match := re.fullmatch(r"(conv|bn)([12])", module):  # the stem's two conv + BN
            return [(f"encoder.stem.{int(match[2]) - 1}.{_NORM['0' if match[1] == 'conv' else '1']}.{kind}", value)]
        if match := re.fullmatch(r"layer1\.(\d+)\.(.+)", module):
            return [(f"encoder.stage1.{match[1]}.{_BOTTLENECK[match[2]]}.{kind}", value)] \
                if match[2] in _BOTTLENECK else None
        if match := re.fullmatch(r"transition(\d)\.(\d+)\.(\d+)\.([01])", module):  # a new branch: strided convs
            return [(f"encoder.transitions.{int(match[1]) - 1}.{match[2]}.{match[3]}.{_NORM[match[4]]}.{kind}", value)]
        if match := re.fullmatch(r"transition(\d)\.(\d+)\.([01])", module):  # an existing branch changing width
            return [(f"encoder.transitions.{int(match[1]) - 1}.{match[2]}.{_NORM[match[3]]}.{kind}", value)]
        if match := re.fullmatch(r"stage(\d)\.(\d+)\.branches\.(\d+)\.(\d+)\.(conv[12]|bn[12])", module):
            prefix = f"encoder.stages.{int(match[1]) - 2}.{match[2]}.branches.{match[3]}.{match[4]}"
            return [(f"{prefix}.{_BASIC[match[5]]}.{kind}", value)]
        if match := re.fullmatch(r"stage(\d)\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.(\d+)\.([01])", module):  # downward
            prefix = f"encoder.stages.{int(match[1]) - 2}.{match[2]}.fusions.{match[3]}.{match[4]}.{match[5]}"
            return [(f"{prefix}.{_NORM[match[6]]}.{kind}", value)]
        if match := re.fullmatch(r"stage(\d)\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.([01])", module):  # upward
            prefix = f"encoder.stages.{int(match[1]) - 2}.{match[2]}.fusions.{match[3]}.{match[4]}"
            return [(f"{prefix}.{_NORM[match[5]]}.{kind}", value)]
        return None

    return rename


def classifier_key(key: str) -> str:
    """The OCR head's classifier and SSA layers are the second cascade stage's (`decode_head.1.`); under that prefix
    their names are the official SSA head's, which `ssa_hf.convert` maps for every family."""
    return "decode_head." + key.removeprefix("decode_head.1.")


def rename_decoder(key: str, value: torch.Tensor):
    """The two cascade heads' keys -> ours (`SSAOCRDecodeHead`): the FCN head becomes the soft object regions,
    the object-context block our object attention; ConvModule's `bn` is our conv module's `batch_norm`."""
    module, _, kind = key.rpartition(".")
    if module == "decode_head.0.conv_seg":
        return [(f"decode_head.region_classifier.{kind}", value)]
    if match := re.fullmatch(r"decode_head\.0\.convs\.0\.(conv|bn)", module):
        return [(f"decode_head.region_conv.{'conv' if match[1] == 'conv' else 'batch_norm'}.{kind}", value)]
    if match := re.fullmatch(r"decode_head\.1\.bottleneck\.(conv|bn)", module):
        return [(f"decode_head.bottleneck.{'conv' if match[1] == 'conv' else 'batch_norm'}.{kind}", value)]
    if match := re.fullmatch(rf"decode_head\.1\.object_context_block\.{_OCR}\.(conv|bn)", module):
        part = "conv" if match[2] == "conv" else "batch_norm"
        return [(f"decode_head.object_attention.{match[1]}.{part}.{kind}", value)]
    return None


def fresh(key: str, source_format: str) -> bool:
    return source_format == "hrnet_imagenet" and key.startswith("decode_head.")


def hrnet_config(converted: dict[str, torch.Tensor]) -> HRNetConfig:
    """The `HRNetConfig` of the converted encoder: branch widths, modules per stage and blocks from the weights."""
    def count(pattern: str) -> int:
        return len({m[1] for k in converted if (m := re.match(pattern, k))})

    stages = count(r"encoder\.stages\.(\d+)\.")
    widths = [converted[f"encoder.stages.{stages - 1}.0.branches.{branch}.0.first.convolution.weight"].shape[0]
              for branch in range(stages + 1)]
    return HRNetConfig(
        stem_channels=converted["encoder.stem.0.convolution.weight"].shape[0],
        stage1_channels=converted["encoder.stage1.0.reduce.convolution.weight"].shape[0],
        stage1_blocks=count(r"encoder\.stage1\.(\d+)\."), branch_channels=widths,
        stage_modules=[count(rf"encoder\.stages\.{stage}\.(\d+)\.") for stage in range(stages)],
        branch_blocks=count(r"encoder\.stages\.0\.0\.branches\.0\.(\d+)\."))


def variant_of(converted: dict[str, torch.Tensor]) -> str:
    """The HRNetV2 size (`HRNET_VARIANTS`) of these encoder weights: the official module layout with its widths."""
    from .model.configuration_hrnet import HRNET_VARIANTS

    try:
        config = hrnet_config(converted)
    except KeyError:
        config = None
    if config is None or config.variant() is None or (config.stage_modules, config.branch_blocks) != ([1, 4, 3], 4):
        raise ValueError(f"the encoder weights match none of the HRNetV2 sizes ({', '.join(HRNET_VARIANTS)}).")
    return config.variant()


def build_config(converted: dict[str, torch.Tensor], source_format: str, num_labels: int | None,
                 id2label: dict | None, **config_kwargs) -> SSAConfig:
    """The `SSAConfig` of the converted weights: the HRNet they hold, OCRNet's head with the checkpoint's widths (the
    official ones for an encoder alone) and class count."""
    head = {}
    if "decode_head.bottleneck.conv.weight" in converted:
        head = {"decoder_hidden_size": converted["decode_head.bottleneck.conv.weight"].shape[0],
                "ocr_channels": converted["decode_head.object_attention.value_project.conv.weight"].shape[0],
                "ocr_region_channels": converted["decode_head.region_conv.conv.weight"].shape[0]}
    return SSAConfig.from_hrnet_config(hrnet_config(converted), num_labels=num_labels, id2label=id2label,
                                       **(head | config_kwargs))


__all__ = ["FORMATS", "IGNORED", "build_config", "classifier_key", "detect", "dropped", "encoder_renamer", "fresh",
           "hrnet_config", "rename_decoder", "variant_of"]
