"""OCRNet's decoder (Yuan et al., "Object-Contextual Representations for Semantic Segmentation", ECCV 2020) in front of
the SSA classifier (`decoder_type="ocr"`), as mmsegmentation 0.30's cascade of `FCNHead` and `OCRHead` builds it on
HRNet, with the official `OCRHead_ssa`'s SSA in place of the second classifier.

1. All feature maps are resized to the first (stride 4) and concatenated.
2. The soft object regions: a 1x1 conv + BN + ReLU and a 1x1 classifier (the stage-1 FCN head) give region logits,
   which also get their own cross-entropy in training (`auxiliary` term, weight `auxiliary_loss_weight`, 0.4).
3. The pixel representation: a 3x3 conv + BN + ReLU of the concatenation.
4. The object region representations: pixels averaged under each region's softmax over all pixels.
5. The object-contextual representation: each pixel attends to the region representations (key and query: two
   1x1 conv modules each, value one, scaled dot product), projected back, concatenated with the pixel representation
   and fused by a 1x1 conv module. That is F, which SSA classifies; no dropout precedes the classifier.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .classifier_ssa import build_classifier
from .decoders_ssa import SSAConvModule, SSADecodeHead


def object_regions(pixels: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
    """Step 4: (B, C, h, w) pixels and (B, K, h, w) region logits -> (B, C, K, 1), each region's representation: the
    pixels weighted by the region's softmax over all pixels."""
    weights = region_logits.flatten(2).softmax(dim=2)  # (B, K, N)
    regions = weights @ pixels.flatten(2).transpose(1, 2)  # (B, K, C)
    return regions.transpose(1, 2).unsqueeze(3)


class SSAObjectAttention(nn.Module):
    """Step 5: pixels (queries) attend to the object region representations (keys and values)."""

    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.scale = attention_channels**-0.5
        self.query_project = nn.Sequential(SSAConvModule(channels, attention_channels),
                                           SSAConvModule(attention_channels, attention_channels))
        self.key_project = nn.Sequential(SSAConvModule(channels, attention_channels),
                                         SSAConvModule(attention_channels, attention_channels))
        self.value_project = SSAConvModule(channels, attention_channels)
        self.out_project = SSAConvModule(attention_channels, channels)
        self.bottleneck = SSAConvModule(2 * channels, channels)

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        query = self.query_project(pixels).flatten(2).transpose(1, 2)  # (B, N, D)
        key = self.key_project(regions).flatten(2)  # (B, D, K)
        value = self.value_project(regions).flatten(2).transpose(1, 2)  # (B, K, D)
        attention = (self.scale * (query @ key)).softmax(dim=-1)  # (B, N, K)
        context = (attention @ value).transpose(1, 2).reshape(pixels.shape[0], -1, *pixels.shape[2:])
        return self.bottleneck(torch.cat([self.out_project(context), pixels], dim=1))


class SSAOCRDecodeHead(SSADecodeHead):
    """OCRNet's two heads in front of the SSA classifier (the steps in this file's docstring)."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        total = sum(in_channels)
        self.region_conv = SSAConvModule(total, config.ocr_region_channels)
        self.region_classifier = nn.Conv2d(config.ocr_region_channels, config.num_labels, 1)
        self.bottleneck = SSAConvModule(total, config.decoder_hidden_size, 3)
        self.object_attention = SSAObjectAttention(config.decoder_hidden_size, config.ocr_channels)
        self.classifier = build_classifier(config)

    @staticmethod
    def concatenated(feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Step 1: every map at the first one's resolution (bilinear, corners not aligned), concatenated."""
        size = feature_maps[0].shape[2:]
        return torch.cat([feature_maps[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                              for f in feature_maps[1:]], dim=1)

    def fuse_and_auxiliary(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states = self.concatenated(feature_maps)
        region_logits = self.region_classifier(self.region_conv(hidden_states))
        pixels = self.bottleneck(hidden_states)
        return self.object_attention(pixels, object_regions(pixels, region_logits)), region_logits

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fuse_and_auxiliary(feature_maps)[0]

    def plain_logits_and_auxiliary(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        features, region_logits = self.fuse_and_auxiliary(feature_maps)  # the regions once, for both
        return self.classifier(features).logits, region_logits

    def auxiliary_logits(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.region_classifier(self.region_conv(self.concatenated(feature_maps)))
