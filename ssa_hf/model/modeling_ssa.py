"""SSA-Seg models: an encoder (MiT, or any transformers backbone) and a decoder (`decoders_ssa.py`) whose 1x1
classifier is replaced by the Semantic and Spatial Adaptive classifier (`classifier_ssa.py`; Ma, Ni, Chen, NeurIPS
2024, arXiv:2405.06525), with the losses of `loss_ssa.py` in training.

Section numbers refer to docs/method.md. This file and its siblings in this folder are copied next to the weights by
`save_pretrained` (remote code): they depend on torch and transformers only and import each other relatively.
"""

import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BeitForSemanticSegmentation,
    Data2VecVisionForSemanticSegmentation,
    DPTForSemanticSegmentation,
    MobileNetV2ForSemanticSegmentation,
    MobileViTForSemanticSegmentation,
    MobileViTV2ForSemanticSegmentation,
    PreTrainedModel,
    SegformerForSemanticSegmentation,
    SegformerModel,
    UperNetForSemanticSegmentation,
)
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.utils import ModelOutput, logging

from .classifier_ssa import PlainClassifier, SSAClassifier, SSAClassifierOutput
from .configuration_ssa import SSAConfig
from .decoders_ocr import SSAOCRDecodeHead
from .decoders_ssa import DECODE_HEADS, NonNegativeMatrixFactorization, SSAAuxiliaryHead, ZeroStartConv2d
from .decoders_transformers import TRANSFORMERS_DECODE_HEADS
from .encoders_transformers import SEGMENTER_ENCODERS
from .loss_ssa import SSALoss
from .modeling_afformer import AFFormerBackbone
from .modeling_efficientformer_v2 import EfficientFormerV2Backbone
from .modeling_hrnet import HRNetBackbone
from .modeling_mscan import MSCANBackbone
from .modeling_seaformer import SeaFormerBackbone
from .ops_ssa import at_least_float32, downsample_labels, float32_region, host_checks_allowed

logger = logging.get_logger(__name__)

# Encoders of this package by their config's model_type (transformers' own come through load_backbone).
OWN_BACKBONES = {"seaformer": SeaFormerBackbone, "mscan": MSCANBackbone,
                 "efficientformer_v2": EfficientFormerV2Backbone, "afformer": AFFormerBackbone, "hrnet": HRNetBackbone}


@dataclass
class SSASemanticSegmenterOutput(ModelOutput):
    """Output of [`SSAForSemanticSegmentation`][ssa_hf.SSAForSemanticSegmentation].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Sum of the eight weighted SSA terms (nine with the auxiliary head).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            SSA's adapted prediction. Upsample to the image size before taking the argmax (as SegFormer).
        coarse_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            Prediction of the fixed prototypes (the plain 1x1 classifier).
        teacher_logits (`torch.FloatTensor`, *optional*, returned when `labels` are given):
            Prediction of the ground-truth-guided teacher, same shape as `logits`.
        loss_terms (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            Detached weighted terms `main`, `coarse`, `teacher`, `response_distillation`, `dice_student`,
            `dice_teacher`, `semantic_distillation`, `spatial_distillation` (and `auxiliary` with the auxiliary
            head); they sum to `loss`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Encoder stage outputs of shape `(batch_size, hidden_size_i, height_i, width_i)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Encoder attention weights.
        logits_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*, returned for a padded batch):
            The (height, width) of each image's own logits, top left in `logits` and `coarse_logits`; the rest is
            padding (zeros). `SSAImageProcessor.post_process_semantic_segmentation` crops to it.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    coarse_logits: torch.FloatTensor | None = None
    teacher_logits: torch.FloatTensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    logits_sizes: torch.LongTensor | None = None


class SSAPreTrainedModel(PreTrainedModel):
    """The transformers base of SSA models: `SSAConfig`, the weight initialisation (`_init_weights`), gradient
    checkpointing of the encoder, and `base_model_prefix = "encoder"`."""

    config_class = SSAConfig
    config: SSAConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True  # the encoder's blocks (transformers' GradientCheckpointingLayer)
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """SegFormer's init for encoder and decoder, then the SSA classifier's own (`SSAClassifier.reset_parameters`,
        with `config.classifier_init_std`). transformers initialises children before their parent, so the classifier's
        init is the last word on its layers; weights loaded from a checkpoint are skipped by both."""
        super()._init_weights(module)
        if isinstance(module, (SSAClassifier, PlainClassifier)):
            module.reset_parameters(self.config.classifier_init_std)
        elif isinstance(module, NonNegativeMatrixFactorization):  # a buffer that is made, not saved
            init.copy_(module.seeded_bases, module.draw_seeded_bases(module.seeded_bases.shape[1]))
        elif isinstance(module, ZeroStartConv2d):  # CGRSeg's init: the channel gate starts neutral
            init.zeros_(module.weight)
            init.zeros_(module.bias)


# transformers' attribute names for the encoder, as they appear in SegFormer and UperNet checkpoints (and in SSA
# folders saved before the encoder had one name) -> the SSA model's one name.
_LEGACY_ENCODER_PREFIXES = ("segformer.", "backbone.")
_ENCODER_KEY_MAPPING = {"^" + re.escape(legacy): "encoder." for legacy in _LEGACY_ENCODER_PREFIXES}


def _map_encoder_keys(module, state_dict, prefix, *args) -> None:
    """`load_state_dict` pre-hook: the same mapping as `_ENCODER_KEY_MAPPING`, for state dicts loaded directly
    (a transformers SegFormer/UperNet's, or a training checkpoint written before the rename)."""
    for legacy in _LEGACY_ENCODER_PREFIXES:
        for key in [k for k in state_dict if k.startswith(prefix + legacy)]:
            state_dict[prefix + "encoder." + key[len(prefix + legacy):]] = state_dict.pop(key)


def _stage_margins(encoder, height: int, width: int) -> list[int]:
    """For each MiT stage, min(stage height, stage width) minus its sequence-reduction kernel (negative: too small)."""
    margins = []
    for kernel, stride, reduction in zip(encoder.patch_sizes, encoder.strides, encoder.sr_ratios):
        height = (height + 2 * (kernel // 2) - kernel) // stride + 1
        width = (width + 2 * (kernel // 2) - kernel) // stride + 1
        margins.append(min(height, width) - reduction)
    return margins


def _unpadded_sizes(pixel_mask: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 2) height and width of each image's pixels in a batch padded at the bottom and right; a mask that is not
    such a top-left rectangle is refused."""
    if pixel_mask.shape != (pixel_values.shape[0], *pixel_values.shape[2:]):
        expected = (pixel_values.shape[0], *pixel_values.shape[2:])
        raise ValueError(f"pixel_mask must have shape (batch, height, width) = {expected}, got "
                         f"{tuple(pixel_mask.shape)}.")
    mask = pixel_mask.bool()
    sizes = torch.stack([mask.any(2).sum(1), mask.any(1).sum(1)], dim=1)  # (B, 2)
    rows = torch.arange(mask.shape[1], device=mask.device)[None, :, None] < sizes[:, 0, None, None]
    columns = torch.arange(mask.shape[2], device=mask.device)[None, None, :] < sizes[:, 1, None, None]
    if bool((mask != (rows & columns)).any() or (sizes == 0).any()):
        raise ValueError("pixel_mask must mark one non-empty top-left rectangle of image pixels per image (padding "
                         "at the bottom and right, as SSAImageProcessor pads).")
    return sizes


class SSAForSemanticSegmentation(SSAPreTrainedModel):
    """SegFormer with the SSA classifier. Without labels the teacher does not run and `logits` is SSA's adapted
    prediction at 1/4 resolution; with labels the output carries the total loss and its eight named terms.

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    >>> model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config("b0", num_labels=19))
    >>> pixel_values = torch.randn(2, 3, 128, 160)
    >>> labels = torch.randint(0, 19, (2, 128, 160))
    >>> out = model(pixel_values=pixel_values, labels=labels)
    >>> out.logits.shape, sorted(out.loss_terms)[:2]
    (torch.Size([2, 19, 32, 40]), ['coarse', 'dice_student'])

    ```
    """

    # Padded batches (`pixel_mask`) are segmented image by image: `pipeline(batch_size=N)` pads mixed sizes for it.
    accepts_padded_batches = True

    def __init__(self, config: SSAConfig):
        super().__init__(config)
        # One encoder attribute whatever the backbone; transformers' names for it (SegFormer's `segformer.`,
        # UperNet's `backbone.`) are mapped onto it when weights load (`_ENCODER_KEY_MAPPING`).
        if self.encoder_is_mit:  # MiT: transformers' SegFormer encoder, which returns every stage's hidden states
            self.encoder = SegformerModel(config.backbone_config)
            in_channels = list(config.backbone_config.hidden_sizes)
        elif config.segmenter_encoder:  # as transformers' BEiT, DPT, MobileViT, ... segmenter uses its encoder
            self.encoder = SEGMENTER_ENCODERS[config.backbone_config.model_type](config.backbone_config)
            in_channels = list(self.encoder.channels)
        elif config.backbone_config.model_type in OWN_BACKBONES:  # built here: remote code has no AutoBackbone entry
            self.encoder = OWN_BACKBONES[config.backbone_config.model_type](config.backbone_config)
            in_channels = list(self.encoder.channels)
        else:  # any AutoBackbone (Swin, ConvNeXt, ResNet, DINOv2, ...), as transformers' UperNet builds it
            self.encoder = load_backbone(config)
            in_channels = list(self.encoder.channels)
        heads = DECODE_HEADS | TRANSFORMERS_DECODE_HEADS | {"ocr": SSAOCRDecodeHead}
        self.decode_head = heads[config.decoder_type](config, in_channels)
        # UperNet's auxiliary head reads the third feature map, DPT's the neck's last.
        self.auxiliary_head = SSAAuxiliaryHead(config, in_channels, in_index=-1 if config.decoder_type == "dpt" else 2
                                               ) if config.use_auxiliary_head else None
        self.ssa_loss = SSALoss(
            num_classes=config.num_labels,
            weights={
                "main": config.main_loss_weight,
                "coarse": config.coarse_loss_weight,
                "teacher": config.teacher_loss_weight,
                "response_distillation": config.response_distillation_weight,
                "dice_student": config.dice_student_weight,
                "dice_teacher": config.dice_teacher_weight,
                "semantic_distillation": config.semantic_distillation_weight,
                "spatial_distillation": config.spatial_distillation_weight,
            },
            ignore_index=config.semantic_loss_ignore_index,
            logit_scale=config.logit_scale,
            label_mix=config.distillation_label_mix,
            boundary_frame_width=config.boundary_frame_width,
            boundary_dilation_size=config.boundary_dilation_size,
            group_size=config.teacher_group_size,
        )
        self._register_load_state_dict_pre_hook(_map_encoder_keys, with_module=True)
        self.post_init()

    @property
    def encoder_is_mit(self) -> bool:
        """MiT (transformers' SegFormer encoder, all stages' hidden states) rather than an AutoBackbone."""
        return self.config.backbone_config.model_type == "segformer"

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "SSAForSemanticSegmentation":
        """`PreTrainedModel.from_pretrained`, also reading folders saved with transformers' encoder names
        (`segformer.`/`backbone.`, as earlier ssa-hf versions saved them); the model saves under `encoder.` again."""
        kwargs["key_mapping"] = {**_ENCODER_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        loaded = super().from_pretrained(*args, **kwargs)
        # transformers would reverse the mapping when saving; saved keys are this model's own names instead.
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        model._weight_conversions = None
        return loaded

    def activation_checkpointing_enable(self, *args, **kwargs):
        """Recompute the encoder's blocks in the backward pass (transformers' `GradientCheckpointingLayer`s), where
        the encoder allows it: MiT (SegFormer), Swin and DINOv2 do, transformers' ConvNeXt and ResNet backbones not."""
        if not getattr(self.encoder, "supports_gradient_checkpointing", False):
            raise ValueError(f"the {type(self.encoder).__name__} encoder does not support gradient checkpointing in "
                             f"transformers (MiT, Swin and DINOv2 encoders do).")
        return super().activation_checkpointing_enable(*args, **kwargs)

    def _check_inputs(self, pixel_values: torch.Tensor, labels: torch.Tensor | None) -> None:
        expected_channels = getattr(self.config.backbone_config, "num_channels", 3)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}.")
        if pixel_values.shape[1] != expected_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the encoder expects {expected_channels} "
                f"(shape {tuple(pixel_values.shape)}); convert images to RGB before processing."
            )
        if self.encoder_is_mit and host_checks_allowed():
            self._check_image_size(*pixel_values.shape[2:])
        if labels is None:
            return
        if labels.ndim != 3 or labels.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"labels must have shape (batch, height, width) with batch {pixel_values.shape[0]}, "
                f"got {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}.")
        if self.config.validate_labels and host_checks_allowed():  # a host read: eager only
            ignore_index = self.config.semantic_loss_ignore_index
            bad = (labels != ignore_index) & ((labels < 0) | (labels >= self.config.num_labels))
            if bad.any():
                values = sorted(set(labels[bad].unique().tolist()))
                shown = ", ".join(map(str, values[:20])) + (" ..." if len(values) > 20 else "")
                raise ValueError(
                    f"labels contain values {shown} that are neither a class index in [0, {self.config.num_labels}) "
                    f"nor the ignore index {ignore_index}. Check num_labels and the label convention "
                    f"(e.g. reduce_labels for ADE20K)."
                )

    def set_ham_bases(self, bases: torch.Tensor | None) -> None:
        """Fix the starting bases of the Hamburger's matrix factorisation (SegNeXt's head, `decoder_type="ham"`) for
        the following forward passes, e.g. those an official run drew, to reproduce its outputs; None returns to the
        model's own (a fixed seeded draw in evaluation, fresh random ones in training).

        Args:
            bases: (1 or batch, ham_channels, ham_num_bases) non-negative bases, normalised over the channels.
        """
        if self.config.decoder_type != "ham":
            raise ValueError(f"set_ham_bases: the '{self.config.decoder_type}' decoder has no Hamburger")
        self.decode_head.hamburger.decomposition.set_bases(bases)

    def _auxiliary_loss(self, feature_maps, labels: torch.Tensor) -> torch.Tensor:
        """The auxiliary FCN head's loss (mmseg's FCNHead): `_mean_cross_entropy` of its logits."""
        return self._mean_cross_entropy(self.auxiliary_head(feature_maps), labels)

    def _mean_cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """mmseg's decode-head loss: bilinear upsampling (align_corners=False) to the labels, cross-entropy summed over
        valid pixels and divided by all pixels (CrossEntropyLoss with avg_non_ignore=False)."""
        with float32_region(logits.device):
            logits = F.interpolate(at_least_float32(logits), size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            total = F.cross_entropy(logits, labels, ignore_index=self.config.semantic_loss_ignore_index,
                                    reduction="sum")
        return total / labels.numel()

    def _check_image_size(self, height: int, width: int) -> None:
        """Every encoder stage must be at least as large as its sequence-reduction kernel; torch would otherwise fail
        deep inside a convolution."""
        if min(_stage_margins(self.config.backbone_config, height, width)) >= 0:
            return
        side = next(s for s in range(1, 4097) if min(_stage_margins(self.config.backbone_config, s, s)) >= 0)
        raise ValueError(
            f"pixel_values of size {height}x{width} are too small for this encoder (its sequence reductions need "
            f"images of at least {side}x{side} pixels); resize or pad the images."
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SSASemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, e.g. from `SSAImageProcessor`. Any size; SegFormer pads internally.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class indices or `config.semantic_loss_ignore_index`. When given, the teacher runs and the loss is
                returned; the losses work at the labels' resolution (normally the image size).
            output_hidden_states (`bool`, *optional*): return the encoder's stage outputs.
            output_attentions (`bool`, *optional*): return the encoder's attention weights.
            return_dict (`bool`, *optional*): a `SSASemanticSegmenterOutput` rather than a tuple.
            pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                1 on image pixels, 0 on padding (bottom and right), as `SSAImageProcessor` returns it for images of
                different sizes. Each image is then segmented alone on its own pixels: the prototypes SSA adapts to
                an image never see padding, and the masks are those of one image at a time. Inference only.

        Returns:
            `SSASemanticSegmenterOutput` (or a tuple without `return_dict`).
        """
        if pixel_mask is not None:
            sizes = _unpadded_sizes(pixel_mask, pixel_values)
            if bool((sizes != torch.tensor(pixel_values.shape[2:], device=sizes.device)).any()):
                if labels is not None or output_hidden_states or output_attentions:
                    raise ValueError("a padded batch (pixel_mask with padding) is for inference: labels, hidden "
                                     "states and attentions need images of one size (training uses crops).")
                return self._forward_padded_batch(pixel_values, sizes, return_dict)
        self._check_inputs(pixel_values, labels)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.encoder_is_mit:
            encoder_outputs = self.encoder(
                pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
            )
            feature_maps = encoder_hidden_states = encoder_outputs.hidden_states
        else:
            encoder_outputs = self.encoder.forward_with_filtered_kwargs(
                pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions
            )
            feature_maps, encoder_hidden_states = encoder_outputs.feature_maps, encoder_outputs.hidden_states
        loss = loss_terms = decoder_auxiliary = None
        if self.config.classifier_type == "plain":  # the baseline: its logits and one cross-entropy
            logits, decoder_auxiliary = self.decode_head.plain_logits_and_auxiliary(feature_maps)
            head = SSAClassifierOutput(logits=logits, coarse_logits=logits)
            if labels is not None:
                labels = labels.long()
                terms = {"main": self.config.main_loss_weight * self._mean_cross_entropy(logits, labels)}
                loss = terms["main"]
        elif labels is None:
            head = self.decode_head.classifier(self.decode_head.fuse(feature_maps))
        else:
            features, decoder_auxiliary = self.decode_head.fuse_and_auxiliary(feature_maps)
            labels = labels.long()
            labels_small = downsample_labels(labels, features.shape[-2:])
            head = self.decode_head.classifier(features, labels_small)
            loss, terms = self.ssa_loss(
                logits=head.logits,
                coarse_logits=head.coarse_logits,
                teacher_logits=head.teacher_logits,
                semantic_prototypes=head.semantic_prototypes,
                teacher_semantic_prototypes=head.teacher_semantic_prototypes,
                spatial_prototypes=head.spatial_prototypes,
                teacher_spatial_prototypes=head.teacher_spatial_prototypes,
                labels=labels,
                labels_small=labels_small,
            )
        if labels is not None:
            if self.auxiliary_head is not None:
                terms["auxiliary"] = self.config.auxiliary_loss_weight * self._auxiliary_loss(feature_maps, labels)
                loss = loss + terms["auxiliary"]
            elif decoder_auxiliary is not None:  # a prediction inside the decoder (OCRNet's object regions)
                terms["auxiliary"] = self.config.auxiliary_loss_weight * self._mean_cross_entropy(decoder_auxiliary,
                                                                                                  labels)
                loss = loss + terms["auxiliary"]
            loss_terms = {name: value.detach() for name, value in terms.items()}


        resize = self.decode_head.output_logits
        output = SSASemanticSegmenterOutput(
            loss=loss,
            logits=resize(head.logits),
            coarse_logits=resize(head.coarse_logits),
            teacher_logits=resize(head.teacher_logits) if head.teacher_logits is not None else None,
            loss_terms=loss_terms,
            hidden_states=encoder_hidden_states if output_hidden_states else None,
            attentions=encoder_outputs.attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _forward_padded_batch(self, pixel_values: torch.Tensor, sizes: torch.Tensor, return_dict: bool | None):
        """Each image runs alone on its own pixels (so its logits are bitwise those of a batch of one); the logits
        are placed top left in a zero-padded batch, with each image's logits size in `logits_sizes`."""
        outputs = [self(pixel_values=pixel_values[index : index + 1, :, :height, :width], return_dict=True)
                   for index, (height, width) in enumerate(sizes.tolist())]
        logits_sizes = torch.tensor([list(output.logits.shape[-2:]) for output in outputs])
        height, width = logits_sizes.max(0).values.tolist()

        def padded(name: str) -> torch.Tensor:
            return torch.cat([F.pad(getattr(output, name), (0, width - getattr(output, name).shape[-1],
                                                             0, height - getattr(output, name).shape[-2]))
                              for output in outputs])

        output = SSASemanticSegmenterOutput(logits=padded("logits"), coarse_logits=padded("coarse_logits"),
                                            logits_sizes=logits_sizes.to(pixel_values.device))
        return output if return_dict is not False else output.to_tuple()

    @classmethod
    def from_segformer(
        cls,
        segformer: "str | SegformerForSemanticSegmentation",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a SegFormer: encoder, decoder and 1x1 classifier (the fixed prototypes) are copied; the SSA
        layers start fresh (docs/method.md, section 1).

        Args:
            segformer: a hub id, a local folder, or a `SegformerForSemanticSegmentation` instance.
            num_labels / id2label: a new class set; the classifier is then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Save `SSAImageProcessor.from_source(segformer)` beside the model, so that the folder preprocesses as its
        source did (`ssa-seg convert` saves both).
        """
        return cls._from_transformers_segmenter(segformer, "segformer", num_labels, id2label, config_kwargs)

    @classmethod
    def from_transformers(
        cls,
        source,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a transformers semantic segmenter: SegFormer, UperNet, BEiT, Data2VecVision, DPT, MobileViT,
        MobileViTV2 or MobileNetV2 (`SUPPORTED_SEGMENTERS`). Its encoder, neck, decoder and auxiliary head are copied
        bit for bit and compute as in the source; its final 1x1 classifier becomes SSA's fixed prototypes, so the
        model's `coarse_logits` are the source's logits; the SSA layers start fresh (docs/method.md, section 1).

        Args:
            source: a hub id, a local folder, or a model instance of one of those classes.
            num_labels / id2label: a new class set; the classifiers are then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Keep the source's image processor beside the model (`ssa-seg convert` does): `SSAImageProcessor.from_source`
        for SegFormer and UperNet, the source's own processor class for the others.
        """
        if isinstance(source, PreTrainedModel):
            model_type = source.config.model_type
        else:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(source).model_type
        if model_type not in _SOURCE_SEGMENTERS:
            raise ValueError(f"{checkpoint_name(source) or type(source).__name__} is a '{model_type}' model; "
                             f"from_transformers takes a transformers semantic segmenter of type "
                             f"{', '.join(_SOURCE_SEGMENTERS)}.")
        return cls._from_transformers_segmenter(source, model_type, num_labels, id2label, config_kwargs)

    @classmethod
    def from_upernet(
        cls,
        upernet: "str | UperNetForSemanticSegmentation",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a transformers UperNet (Swin, ConvNeXt, ... backbone): backbone, UperNet decoder, auxiliary head
        and the 1x1 classifier (the fixed prototypes) are copied; the SSA layers start fresh (docs/method.md, section 1).

        Args:
            upernet: a hub id, a local folder, or an `UperNetForSemanticSegmentation` instance.
            num_labels / id2label: a new class set; both classifiers are then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Save `SSAImageProcessor.from_source(upernet)` beside the model, so that the folder preprocesses as its
        source did (`ssa-seg convert` saves both).
        """
        return cls._from_transformers_segmenter(upernet, "upernet", num_labels, id2label, config_kwargs)

    @classmethod
    def _from_transformers_segmenter(cls, source, model_type: str, num_labels, id2label, config_kwargs):
        """The one path behind `from_segformer` and `from_upernet`: load the source (a clear error when it is another
        kind of model), derive the SSA config, and copy every weight but the SSA layers (and the classifiers, for a
        new class set)."""
        model_class, name, renames = _SOURCE_SEGMENTERS[model_type]
        config_kwargs = {"source_checkpoint": checkpoint_name(source), **config_kwargs}
        source = _source_model(source, model_class, model_type, name)
        config = SSAConfig.from_transformers_config(source.config, num_labels=num_labels, id2label=id2label,
                                                    **config_kwargs)
        model = cls(config)
        state = _renamed(source.state_dict(), renames)
        if config.num_labels != source.config.num_labels:
            logger.warning(
                f"from_transformers: the source classifier has {source.config.num_labels} classes and the new model "
                f"{config.num_labels}; the classifiers (fixed prototypes) are re-initialised and must be trained."
            )
            state = {k: v for k, v in state.items()
                     if not k.startswith(("decode_head.classifier.", "auxiliary_head.classifier."))}
        model._load_source_weights(state, name)
        return model.to(dtype=next(source.parameters()).dtype)

    def _load_source_weights(self, state: dict, source: str) -> None:
        """Load a source model's state dict; only the SSA classifier's layers (and a re-initialised classifier)
        may be missing, nothing may be left over."""
        result = self.load_state_dict(state, strict=False)
        fresh = ("decode_head.classifier.", "auxiliary_head.classifier.")
        unexpected_missing = [k for k in result.missing_keys if not k.startswith(fresh)]
        if unexpected_missing or result.unexpected_keys:
            raise ValueError(
                f"{source} weights do not fit the SSA model: missing {unexpected_missing}, "
                f"unexpected {result.unexpected_keys}."
            )


# transformers' UperNet-style heads (BEiT, Data2VecVision) name their conv modules' parts and pooling blocks otherwise
# than UperNetHead, whose layout SSAUperNetDecodeHead keeps.
_BEIT_HEAD_RENAMES = [
    (r"^(decode_head|auxiliary_head)\.(.*)\.convolution\.", r"\1.\2.conv."),
    (r"^(decode_head|auxiliary_head)\.(.*)\.normalization\.", r"\1.\2.batch_norm."),
    (r"^decode_head\.psp_modules\.blocks\.(\d+)\.conv\.", r"decode_head.psp_modules.\1.1."),
    (r"^decode_head\.psp_bottleneck\.", "decode_head.bottleneck."),
]
# The DeepLab heads of MobileViT(V2) and MobileNetV2: their classifier is a conv layer holding `convolution`.
_DEEPLAB_HEAD_RENAMES = [
    (r"^segmentation_head\.classifier\.convolution\.", "decode_head.classifier."),
    (r"^segmentation_head\.", "decode_head."),
]

# model_type of a transformers segmenter -> (its class, its name in messages, renames of its state dict's keys into
# this model's, applied in order: the encoder and neck go under `encoder.`, the head's layers to the SSA decoder's).
_SOURCE_SEGMENTERS = {
    "segformer": (SegformerForSemanticSegmentation, "SegFormer", []),
    "upernet": (UperNetForSemanticSegmentation, "UperNet", []),
    "beit": (BeitForSemanticSegmentation, "BEiT", [(r"^(beit|fpn)\.", r"encoder.\1.")] + _BEIT_HEAD_RENAMES),
    "data2vec-vision": (Data2VecVisionForSemanticSegmentation, "Data2VecVision",
                        [(r"^(data2vec_vision|fpn\d)\.", r"encoder.\1.")] + _BEIT_HEAD_RENAMES),
    "dpt": (DPTForSemanticSegmentation, "DPT", [
        (r"^(dpt|neck)\.", r"encoder.\1."),
        (r"^head\.head\.4\.", "decode_head.classifier."),
        (r"^head\.head\.", "decode_head.head."),
        (r"^auxiliary_head\.head\.0\.", "auxiliary_head.convs.0.conv."),
        (r"^auxiliary_head\.head\.1\.", "auxiliary_head.convs.0.batch_norm."),
        (r"^auxiliary_head\.head\.4\.", "auxiliary_head.classifier."),
    ]),
    "mobilevit": (MobileViTForSemanticSegmentation, "MobileViT",
                  [(r"^mobilevit\.", "encoder.mobilevit.")] + _DEEPLAB_HEAD_RENAMES),
    "mobilevitv2": (MobileViTV2ForSemanticSegmentation, "MobileViTV2",
                    [(r"^mobilevitv2\.", "encoder.mobilevitv2.")] + _DEEPLAB_HEAD_RENAMES),
    "mobilenet_v2": (MobileNetV2ForSemanticSegmentation, "MobileNetV2",
                     [(r"^mobilenet_v2\.", "encoder.mobilenet_v2.")] + _DEEPLAB_HEAD_RENAMES),
}


def _renamed(state: dict, renames: list[tuple[str, str]]) -> dict:
    """A source state dict under this model's keys: every (pattern, replacement) of `renames` applied in turn."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def checkpoint_name(source) -> str | None:
    """What `SSAConfig.source_checkpoint` records for a source: a hub id as given, `local:<name>` for a local folder
    or file (never a path of this machine), or the same for the `_name_or_path` of a model instance's config."""
    if not (isinstance(source, (str, bytes)) or hasattr(source, "__fspath__")):
        source = getattr(getattr(source, "config", None), "_name_or_path", None) or None
        if source is None:
            return None
    text = os.fsdecode(source)
    return f"local:{os.path.basename(os.path.normpath(text))}" if os.path.exists(text) else text


def _source_model(source, model_class: type, model_type: str, name: str):
    """A hub id or folder of a `model_type` model loaded as `model_class`, or an instance of it. Another kind of
    model is refused by name, before any weights are read."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from transformers import AutoConfig

        found = AutoConfig.from_pretrained(source).model_type
        if found != model_type:
            raise ValueError(f"{source} is a '{found}' model, not a {name}; from_{model_type} takes a {name} "
                             f"(hub id, folder or {model_class.__name__}).")
        source = model_class.from_pretrained(source)
    if not isinstance(source, model_class):
        raise TypeError(f"from_{model_type} expects a {model_class.__name__}, a hub id or a folder, got "
                        f"{type(source).__name__}.")
    return source


__all__ = [
    "SSAClassifier",
    "SSAClassifierOutput",
    "SSAForSemanticSegmentation",
    "SSAPreTrainedModel",
    "SSASemanticSegmenterOutput",
]
