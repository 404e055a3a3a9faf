"""The encoders of transformers' own semantic segmenters, taken as those segmenters use them, so that SSA can replace
their final 1x1 classifier (`SSAForSemanticSegmentation.from_transformers`; `SSAConfig.segmenter_encoder=True`).

Each wrapper holds the segmenter's modules under the segmenter's own attribute names (`beit`, `fpn`, `dpt`, `neck`,
`mobilevit`, ...) and computes the feature maps exactly as the segmenter's `forward` does before its decode head.
That is not always what transformers' `AutoBackbone` of the same family gives: BEiT's segmenter reads the hidden
state *before* each of its `out_indices` layers, and DPT, MobileViT and MobileNetV2 have no backbone class.

| source | feature maps (what the decoder reads) |
| --- | --- |
| BEiT, Data2VecVision | hidden states at `out_indices` without the class token, through the four-scale FPN (x4, x2, x1, /2) |
| DPT | hidden states at `backbone_out_indices` (hybrid: the BiT stages first) through DPT's reassemble-fuse neck |
| MobileViT, MobileViTV2, MobileNetV2 | the last stage's output only (their DeepLab heads read nothing else) |

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import torch
from torch import nn
from transformers import Data2VecVisionModel, MobileNetV2Model, MobileViTModel, MobileViTV2Model
from transformers.modeling_outputs import BackboneOutput
from transformers.models.beit.modeling_beit import BeitFPNNeck, BeitModel
from transformers.models.dpt.modeling_dpt import DPTModel, DPTNeck
from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import apply_depth_multiplier
from transformers.models.mobilevitv2.modeling_mobilevitv2 import make_divisible


class SegmenterEncoder(nn.Module):
    """A segmenter's encoder (and neck): `channels` of its feature maps, and `forward_with_filtered_kwargs`, as
    transformers' backbones, returning them in a `BackboneOutput`."""

    channels: list[int]
    supports_gradient_checkpointing = False

    def feature_maps(self, pixel_values: torch.Tensor, output_attentions: bool | None):
        """-> (feature maps, the base model's output)."""
        raise NotImplementedError

    def forward_with_filtered_kwargs(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                                     output_attentions: bool | None = None) -> BackboneOutput:
        feature_maps, outputs = self.feature_maps(pixel_values, output_attentions)
        return BackboneOutput(feature_maps=tuple(feature_maps),
                              hidden_states=outputs.hidden_states if output_hidden_states else None,
                              attentions=getattr(outputs, "attentions", None) if output_attentions else None)

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BackboneOutput:
        return self.forward_with_filtered_kwargs(pixel_values, **kwargs)


class BeitSegmenterEncoder(SegmenterEncoder):
    """BEiT as `BeitForSemanticSegmentation` uses it: the hidden state before layer i for each i of `out_indices`
    (index i - 1 of the hidden states, which start with the embeddings), without the class token, as a map, then
    `BeitFPNNeck`."""

    model_attribute = "beit"

    def __init__(self, config):
        super().__init__()
        self.patch_size = config.patch_size
        self.out_indices = list(config.out_indices)
        self.channels = [config.hidden_size] * 4
        self.build(config)

    def build(self, config) -> None:
        self.beit = BeitModel(config, add_pooling_layer=False)
        self.fpn = BeitFPNNeck(config)

    def neck(self, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.fpn(tuple(grids)))

    def feature_maps(self, pixel_values, output_attentions):
        outputs = getattr(self, self.model_attribute)(pixel_values, output_hidden_states=True,
                                                      output_attentions=output_attentions)
        height, width = (size // self.patch_size for size in pixel_values.shape[2:])
        grids = [outputs.hidden_states[i - 1][:, 1:].transpose(1, 2).reshape(pixel_values.shape[0], -1, height, width)
                 for i in self.out_indices]
        return self.neck(grids), outputs


class Data2VecVisionSegmenterEncoder(BeitSegmenterEncoder):
    """Data2VecVision as `Data2VecVisionForSemanticSegmentation` uses it: the same hidden states as BEiT's segmenter
    and the same four-scale FPN, held as `fpn1` ... `fpn4` as there. (The source reshapes to the grid of
    `config.image_size`; the grid of the actual input is the same there and also serves other sizes.)"""

    model_attribute = "data2vec_vision"

    def build(self, config) -> None:
        width = config.hidden_size
        self.data2vec_vision = Data2VecVisionModel(config, add_pooling_layer=False)
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2), nn.BatchNorm2d(width),
                                  nn.GELU(), nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def neck(self, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        return [scale(grid) for scale, grid in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), grids)]


class DPTSegmenterEncoder(SegmenterEncoder):
    """DPT as `DPTForSemanticSegmentation` uses it: the ViT's hidden states at `backbone_out_indices` (a hybrid DPT
    takes its BiT stages first), reassembled and fused by `DPTNeck` into `len(neck_hidden_sizes)` maps of
    `fusion_hidden_size` channels; its heads read the last."""

    def __init__(self, config):
        super().__init__()
        self.is_hybrid = config.is_hybrid
        self.out_indices = list(config.backbone_out_indices)
        self.dpt = DPTModel(config, add_pooling_layer=False)
        self.neck = DPTNeck(config)
        self.channels = [config.fusion_hidden_size] * len(config.neck_hidden_sizes)

    def feature_maps(self, pixel_values, output_attentions):
        outputs = self.dpt(pixel_values, output_hidden_states=True, output_attentions=output_attentions)
        layers = outputs.hidden_states[1:]  # after the embeddings
        if self.is_hybrid:
            selected = list(outputs.intermediate_activations) + [
                layer for index, layer in enumerate(layers) if index in self.out_indices[2:]]
        else:
            selected = [layer for index, layer in enumerate(layers) if index in self.out_indices]
        return self.neck(hidden_states=selected), outputs


class MobileViTSegmenterEncoder(SegmenterEncoder):
    """MobileViT (or MobileViTV2) as its DeepLabV3 segmenter uses it: the model without its final expansion, and
    only the last stage's output."""

    def __init__(self, config):
        super().__init__()
        if config.model_type == "mobilevit":
            self.mobilevit = MobileViTModel(config, expand_output=False)
            self.channels = [config.neck_hidden_sizes[5]]
        else:
            self.mobilevitv2 = MobileViTV2Model(config, expand_output=False)
            self.channels = [make_divisible(512 * config.width_multiplier, divisor=8)]
        self.attribute = "mobilevit" if config.model_type == "mobilevit" else "mobilevitv2"

    def feature_maps(self, pixel_values, output_attentions):
        outputs = getattr(self, self.attribute)(pixel_values, output_hidden_states=True)
        return (outputs.hidden_states[-1],), outputs


class MobileNetV2SegmenterEncoder(SegmenterEncoder):
    """MobileNetV2 as its DeepLabV3+ segmenter uses it: no pooling layer, the last stage's output."""

    def __init__(self, config):
        super().__init__()
        self.mobilenet_v2 = MobileNetV2Model(config, add_pooling_layer=False)
        self.channels = [apply_depth_multiplier(config, 320)]

    def feature_maps(self, pixel_values, output_attentions):
        outputs = self.mobilenet_v2(pixel_values, output_hidden_states=True)
        return (outputs.hidden_states[-1],), outputs


# model_type of a transformers segmenter's config -> the wrapper of its encoder.
SEGMENTER_ENCODERS = {
    "beit": BeitSegmenterEncoder,
    "data2vec-vision": Data2VecVisionSegmenterEncoder,
    "dpt": DPTSegmenterEncoder,
    "mobilevit": MobileViTSegmenterEncoder,
    "mobilevitv2": MobileViTSegmenterEncoder,
    "mobilenet_v2": MobileNetV2SegmenterEncoder,
}
