"""The decode heads of transformers' DPT, MobileViT(V2) and MobileNetV2 segmenters in front of the SSA classifier
(`decoder_type` `"dpt"`, `"deeplabv3"`, `"deeplabv3_plus"`); BEiT and Data2VecVision use the UperNet head of
`decoders_ssa.py`. Each holds the source head's layers under the source's names, and F is the map its 1x1 classifier
read, so the source's classifier becomes SSA's fixed prototypes and the coarse logits are the source's logits.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import MobileNetV2ConvLayer, apply_depth_multiplier
from transformers.models.mobilevit.modeling_mobilevit import MobileViTASPP
from transformers.models.mobilevitv2.modeling_mobilevitv2 import MobileViTV2ASPP

from .classifier_ssa import build_classifier
from .decoders_ssa import SSADecodeHead


class SSADPTDecodeHead(SSADecodeHead):
    """DPT's semantic head on the neck's last map: 3x3 conv + BN + ReLU gives F, then (dropout and) the classifier.
    DPT doubles its logits after the classifier (bilinear, corners aligned); `output_logits` does the same to the
    model's returned logits, while SSA and its losses work at F's resolution."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        width = config.decoder_hidden_size
        self.head = nn.Sequential(nn.Conv2d(in_channels[-1], width, kernel_size=3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.head(feature_maps[-1])

    def output_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)


class SSADeepLabV3DecodeHead(SSADecodeHead):
    """MobileViT's (and MobileViTV2's) DeepLabV3 head: atrous spatial pyramid pooling on the last map gives F."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        source = config.backbone_config
        self.aspp = MobileViTASPP(source) if source.model_type == "mobilevit" else MobileViTV2ASPP(source)
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.aspp(feature_maps[-1])


class SSADeepLabV3PlusDecodeHead(SSADecodeHead):
    """MobileNetV2's DeepLabV3+ head (as transformers builds it): the last map's global average, broadcast back
    (bilinear, corners aligned), beside a 1x1 projection of the map, then a 1x1 projection of both gives F."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        source = config.backbone_config
        last = apply_depth_multiplier(source, 320)
        width = config.decoder_hidden_size

        def conv(in_width: int) -> MobileNetV2ConvLayer:
            return MobileNetV2ConvLayer(source, in_channels=in_width, out_channels=width, kernel_size=1,
                                        use_normalization=True, use_activation="relu", layer_norm_eps=1e-5)

        self.avg_pool = nn.AdaptiveAvgPool2d(output_size=1)
        self.conv_pool = conv(last)
        self.conv_aspp = conv(last)
        self.conv_projection = conv(2 * width)
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        features = feature_maps[-1]
        pooled = F.interpolate(self.conv_pool(self.avg_pool(features)), size=features.shape[-2:], mode="bilinear",
                               align_corners=True)
        return self.conv_projection(torch.cat([pooled, self.conv_aspp(features)], dim=1))


TRANSFORMERS_DECODE_HEADS = {
    "dpt": SSADPTDecodeHead,
    "deeplabv3": SSADeepLabV3DecodeHead,
    "deeplabv3_plus": SSADeepLabV3PlusDecodeHead,
}
