"""Configuration of SSA-Seg models: a SegFormer-style encoder/decoder whose 1x1 classifier is replaced by the
Semantic and Spatial Adaptive classifier of Ma, Ni and Chen, "Semantic and Spatial Adaptive Pixel-level Classifier
for Semantic Segmentation" (NeurIPS 2024, arXiv:2405.06525).

This file is copied next to the weights by `save_pretrained` (remote code): it depends on transformers only.
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig, SegformerConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_afformer import AFFormerConfig
from .configuration_efficientformer_v2 import EfficientFormerV2Config
from .configuration_hrnet import HRNetConfig
from .configuration_mscan import MSCANConfig
from .configuration_seaformer import SeaFormerConfig

# Mix Transformer (MiT) encoder sizes of the SegFormer paper, with the decoder width of the released checkpoints.
MIT_VARIANTS = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": [64, 128, 320, 512], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 8, 27, 3], "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 6, 40, 3], "decoder_hidden_size": 768},
}
"""MiT sizes `"b0"` ... `"b5"`: per-stage widths and depths, and the decoder width of the released SegFormers.
`SSAConfig.from_segformer_config("b2", ...)` takes a name from here."""

MMSEG_SEGFORMER_DECODER_WIDTH = 256
"""The decoder width of mmseg's SegFormer configs for every MiT size, so of the paper's SegFormer models (its B5 has
82.0 M parameters with it); NVlabs' released B2-B5 use 768 (`MIT_VARIANTS`). A variant name with
`decoder_type="segformer_mmseg"` takes this width."""

# Decoder layouts in front of the SSA classifier (see `decoder_type`).
DECODER_TYPES = ("segformer", "segformer_mmseg", "upernet", "seaformer", "ham", "cgr", "afformer", "ocr", "dpt",
                 "deeplabv3", "deeplabv3_plus")
CLASSIFIER_TYPES = ("ssa", "plain")
# Encoder families of this package (their configuration/modeling files travel with every saved folder).
OWN_BACKBONE_CONFIGS = {"seaformer": SeaFormerConfig, "mscan": MSCANConfig,
                        "efficientformer_v2": EfficientFormerV2Config, "afformer": AFFormerConfig,
                        "hrnet": HRNetConfig}

# SegformerConfig fields that describe the decoder or the task rather than the encoder.
_SEGFORMER_HEAD_FIELDS = ("decoder_hidden_size", "classifier_dropout_prob", "semantic_loss_ignore_index")


# transformers segmenters whose encoder SSA can use as the segmenter does (`segmenter_encoder=True`): model_type ->
# the number of feature maps it hands to the decoder.
SEGMENTER_ENCODER_MAPS = {
    "beit": lambda config: 4,
    "data2vec-vision": lambda config: 4,
    "dpt": lambda config: len(config.neck_hidden_sizes),
    "mobilevit": lambda config: 1,
    "mobilevitv2": lambda config: 1,
    "mobilenet_v2": lambda config: 1,
}
# The decoder of each such segmenter as SSAConfig fields (the final 1x1 classifier is SSA's fixed prototypes). BEiT's
# head is UperNet's without dropout before the classifier; DPT's applies element-wise dropout there, SSA channel-wise.
_SEGMENTER_HEADS = {
    "beit": lambda c: dict(decoder_type="upernet", decoder_hidden_size=c.hidden_size, pool_scales=list(c.pool_scales),
                           use_auxiliary_head=c.use_auxiliary_head, auxiliary_loss_weight=c.auxiliary_loss_weight,
                           auxiliary_channels=c.auxiliary_channels, auxiliary_num_convs=c.auxiliary_num_convs,
                           auxiliary_concat_input=c.auxiliary_concat_input, classifier_dropout_prob=0.0),
    "dpt": lambda c: dict(decoder_type="dpt", decoder_hidden_size=c.fusion_hidden_size,
                          classifier_dropout_prob=c.semantic_classifier_dropout, use_auxiliary_head=c.use_auxiliary_head,
                          auxiliary_loss_weight=c.auxiliary_loss_weight, auxiliary_channels=c.fusion_hidden_size,
                          auxiliary_num_convs=1, auxiliary_concat_input=False),
    "mobilevit": lambda c: dict(decoder_type="deeplabv3", decoder_hidden_size=c.aspp_out_channels,
                                classifier_dropout_prob=c.classifier_dropout_prob),
    "mobilenet_v2": lambda c: dict(decoder_type="deeplabv3_plus", decoder_hidden_size=256,  # fixed in transformers
                                   classifier_dropout_prob=c.classifier_dropout_prob),
}
_SEGMENTER_HEADS["data2vec-vision"] = _SEGMENTER_HEADS["beit"]
_SEGMENTER_HEADS["mobilevitv2"] = _SEGMENTER_HEADS["mobilevit"]
SUPPORTED_SEGMENTERS = ("segformer", "upernet", *SEGMENTER_ENCODER_MAPS)
"""The model_types of the transformers semantic segmenters that `from_transformers` puts SSA on."""
# The decoders that only exist behind such an encoder (they build the source's head layers from its config).
_SEGMENTER_DECODERS = ("dpt", "deeplabv3", "deeplabv3_plus")


def backbone_stage_count(backbone_config: PreTrainedConfig, segmenter_encoder: bool = False) -> int:
    """Number of feature maps the encoder hands to the decoder; a clear error for configs that are not backbones."""
    if segmenter_encoder:
        if backbone_config.model_type not in SEGMENTER_ENCODER_MAPS:
            raise ValueError(f"segmenter_encoder=True takes the config of a transformers segmenter whose encoder SSA "
                             f"knows ({', '.join(SEGMENTER_ENCODER_MAPS)}), not '{backbone_config.model_type}'.")
        return SEGMENTER_ENCODER_MAPS[backbone_config.model_type](backbone_config)
    if backbone_config.model_type == "segformer":
        return backbone_config.num_encoder_blocks
    if backbone_config.model_type in OWN_BACKBONE_CONFIGS:
        return len(backbone_config.out_features)
    if backbone_config.model_type == "timm_backbone":
        raise ValueError(
            "timm backbones are not supported: a saved SSA folder's code depends on torch and transformers only, "
            "and timm is not a dependency of ssa-hf. Use the transformers backbone config of the same family (Swin, "
            "ConvNeXt, ResNet, DINOv2, ...)."
        )
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

    if backbone_config.model_type not in MODEL_FOR_BACKBONE_MAPPING_NAMES or not hasattr(
        backbone_config, "out_features"
    ):
        supported = sorted(set(MODEL_FOR_BACKBONE_MAPPING_NAMES) - {"timm_backbone"} | {"segformer"} |
                           set(OWN_BACKBONE_CONFIGS))
        raise ValueError(
            f"backbone_config of type '{backbone_config.model_type}' is neither a SegFormer (MiT) config nor a "
            f"backbone config that transformers' load_backbone builds; supported types: {', '.join(supported)}."
        )
    return len(backbone_config.out_features)


@strict
class SSAConfig(PreTrainedConfig):
    r"""
    Configuration of [`SSAForSemanticSegmentation`][ssa_hf.SSAForSemanticSegmentation]: an encoder (MiT by
    default, or any transformers backbone), a decoder, and the SSA classifier with its training-only
    ground-truth-guided teacher and distillation losses.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*, defaults to MiT-b0):
            The encoder configuration: a `SegformerConfig` (MiT, the default; use
            [`SSAConfig.from_segformer_config`][ssa_hf.SSAConfig.from_segformer_config]
            for B0-B5), a `SeaFormerConfig`, `MSCANConfig`, `EfficientFormerV2Config` or `AFFormerConfig` (the
            encoders of this package, which travel with every saved folder), or any backbone config that transformers' `load_backbone` (`AutoBackbone`) builds: Swin,
            ConvNeXt, ResNet, DINOv2, ... with `out_features`/`out_indices` naming the feature maps the decoder uses.
        decoder_type (`str`, *optional*, defaults to `"segformer"`):
            Layout of the decoder in front of the SSA classifier. `"segformer"`: transformers' (and NVlabs') all-MLP
            head: per-stage Linear, stages concatenated 4..1, fused by a 1x1 conv + BN + ReLU; transformers SegFormer
            checkpoints load unchanged. `"segformer_mmseg"`: mmsegmentation 0.30's `SegformerHead`, the one the
            official SSA code trains: per-stage 1x1 conv + BN + ReLU, stages concatenated 1..4, same fusion; converted
            official SSA checkpoints use it. `"upernet"`: transformers' `UperNetForSemanticSegmentation` head (pyramid
            pooling on the last stage + FPN, `decoder_hidden_size` channels, 512 in the paper); UperNet checkpoints load
            unchanged (see `from_upernet`). SegFormer layouts take any number of stages, UperNet at least two.
            `"seaformer"`: SeaFormer's light head (the stride-8 map fused with each context map, F at stride 8).
            `"ham"`: SegNeXt's light Hamburger head (feature maps at the first one's stride, squeeze, non-negative
            matrix factorisation, align; F at that stride). `"cgr"`: CGRSeg's head (a pooled pyramid of all levels
            refined by rectangular self-calibration blocks, a top-down fusion, a depth-wise `linear_fuse`; F at the
            first level's stride). `"afformer"`: AFFormer's head (the last feature map squeezed by a 1x1 conv + GN +
            ReLU). `"dpt"`, `"deeplabv3"`, `"deeplabv3_plus"`: the heads of transformers' DPT, MobileViT(V2) and
            MobileNetV2 segmenters (`decoders_transformers.py`; with `segmenter_encoder=True`).
        decoder_hidden_size (`int`, *optional*, defaults to 256):
            Channels C of the decoder feature that the SSA classifier consumes.
        decoder_embed_dims (`list[int]`, *optional*):
            Widths of the SeaFormer head's fusion blocks, one per context map; the last equals
            `decoder_hidden_size` (`"seaformer"` only).
        ham_channels (`int`, *optional*, defaults to 256):
            Channels of the Hamburger in SegNeXt's head (`"ham"` only).
        ham_num_bases (`int`, *optional*, defaults to 16):
            Number R of non-negative bases of its matrix factorisation (`MD_R` of the official configs).
        ham_train_steps (`int`, *optional*, defaults to 6):
            Multiplicative-update steps in training.
        ham_eval_steps (`int`, *optional*, defaults to 7):
            Multiplicative-update steps in evaluation.
        ham_seed (`int`, *optional*, defaults to 0):
            Seed of the starting bases in evaluation: fixed, so that predictions are reproducible (the official code
            draws new random ones in every forward pass; docs/method.md, "SegNeXt's random bases").
        cgr_context_blocks (`int`, *optional*, defaults to 6):
            Rectangular self-calibration blocks over the pooled pyramid in CGRSeg's head (`"cgr"` only).
        cgr_context_band_size (`int`, *optional*, defaults to 11):
            Band kernel length of those blocks.
        cgr_band_size (`int`, *optional*, defaults to 11):
            Band kernel length of the per-level blocks.
        cgr_square_kernel_size (`int`, *optional*, defaults to 3):
            Kernel of the square depth-wise convolution of every block.
        cgr_mlp_ratio (`float`, *optional*, defaults to 2.0):
            MLP expansion of every block.
        ocr_channels (`int`, *optional*, defaults to 256):
            Width of the attention between pixels and object regions in OCRNet's head (`"ocr"` only).
        ocr_region_channels (`int`, *optional*, defaults to 720):
            Width of the conv module before the soft object regions' classifier (OCRNet's stage-1 FCN head; the
            concatenated HRNet branches' width in the official configs).
        classifier_type (`str`, *optional*, defaults to `"ssa"`):
            `"ssa"`: the SSA classifier. `"plain"`: the decoder's original 1x1 classifier and cross-entropy, the
            baseline SSA is compared with (`ssa-seg train --baseline` for decoders that transformers does not have);
            its weights load into `"ssa"` as the fixed prototypes.
        pool_scales (`list[int]`, *optional*, defaults to `[1, 2, 3, 6]`):
            Pooling scales of the UperNet pyramid pooling module (UperNet only).
        use_auxiliary_head (`bool`, *optional*, defaults to `False`):
            Add the auxiliary FCN head of the paper's UperNet configs on the third feature map; its cross-entropy (mean
            over all pixels, bilinear upsampling with align_corners=False, as mmseg's FCNHead) is the `auxiliary` loss
            term. Training only: it does not change the logits.
        auxiliary_loss_weight (`float`, *optional*, defaults to 0.4):
            Weight of the auxiliary head's cross-entropy.
        auxiliary_in_channels (`int`, *optional*):
            Input channels of the auxiliary head; `None` takes the third feature map's.
        auxiliary_channels (`int`, *optional*, defaults to 256):
            Channels of the auxiliary head's convolutions.
        auxiliary_num_convs (`int`, *optional*, defaults to 1):
            Number of 3x3 conv + BN + ReLU blocks in the auxiliary head.
        auxiliary_concat_input (`bool`, *optional*, defaults to `False`):
            Concatenate the auxiliary head's input with its conv output before its classifier.
        classifier_dropout_prob (`float`, *optional*, defaults to 0.1):
            Channel dropout (`Dropout2d`) applied to the feature on the coarse-mask path only (docs/method.md, section 2).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal init of encoder and decoder layers (SegFormer's init).
        classifier_init_std (`float`, *optional*, defaults to 0.01):
            Standard deviation of the fixed-prototype (1x1 classifier) init; its bias starts at zero.
        logit_scale (`float`, *optional*, defaults to 15.0):
            Scale of the cosine-similarity logits of the adapted classifier and of the class-relation distillation.
        fusion_hidden_ratio (`float`, *optional*, defaults to 0.5):
            Hidden width of the prototype fusion MLPs as a fraction of C (the MLPs are 2C -> C*ratio -> C).
        main_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the cross-entropy on SSA's adapted prediction (mean over all pixels, ignored ones included).
        coarse_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the cross-entropy on the coarse mask of the fixed prototypes.
        teacher_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the cross-entropy on the ground-truth-guided teacher's prediction.
        response_distillation_weight (`float`, *optional*, defaults to 1.0):
            Weight of the boundary- and category-aware response distillation (docs/method.md, section 4).
        dice_student_weight (`float`, *optional*, defaults to 1.0):
            Weight of the sigmoid Dice loss on the student's prediction.
        dice_teacher_weight (`float`, *optional*, defaults to 1.0):
            Weight of the sigmoid Dice loss on the teacher's prediction.
        semantic_distillation_weight (`float`, *optional*, defaults to 10.0):
            Weight of the semantic-domain (inter-class relation) distillation.
        spatial_distillation_weight (`float`, *optional*, defaults to 0.4):
            Weight of the spatial-domain (position prototype) distillation.
        distillation_label_mix (`float`, *optional*, defaults to 0.5):
            Share of the one-hot ground truth in the response-distillation target (the rest is the teacher's
            distribution), the label-smoothing mix inherited from CAC.
        boundary_frame_width (`int`, *optional*, defaults to 6):
            Width of the frame at the feature-map border where label edges are discarded before dilation.
        boundary_dilation_size (`int`, *optional*, defaults to 3):
            Size of the square kernel that dilates the (Canny) label edges into boundary bands.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value that is ignored by every loss term.
        teacher_group_size (`int`, *optional*):
            Number of consecutive images whose pixels are pooled together for the teacher's semantic centres and for
            the per-batch normalisations of the original per-GPU losses (coarse/teacher cross-entropy means, the class
            set of the response distillation); per-group values are averaged (docs/method.md, section 3). `None` pools the whole
            per-process batch; 4 reproduces the official 4-images-per-GPU runs on any number of devices.
        validate_labels (`bool`, *optional*, defaults to `True`):
            Check that every label value is a class index or the ignore index and raise a `ValueError` naming the bad
            values. This costs one device-to-host synchronisation per training step; turn it off for trusted data.
        source_checkpoint (`str`, *optional*):
            The checkpoint this model was made from, recorded by `from_segformer`, `from_upernet`, `ssa-seg convert`
            and `ssa-seg train --encoder`: a hub id, or `local:<name>` for a local folder or file (no path of the
            machine). Model cards give a hub id as `base_model`. Informational: it changes nothing in the model.
        segmenter_encoder (`bool`, *optional*, defaults to `False`):
            Use the encoder as transformers' semantic segmenter of `backbone_config`'s type uses it (BEiT,
            Data2VecVision, DPT, MobileViT, MobileViTV2, MobileNetV2: `encoders_transformers.py`), rather than
            through `AutoBackbone`; set by `from_transformers_config`. The `"dpt"`, `"deeplabv3"` and
            `"deeplabv3_plus"` decoders need it.

    Example:

    ```python
    >>> from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    >>> config = SSAConfig.from_segformer_config("b0", num_labels=150)
    >>> model = SSAForSemanticSegmentation(config)
    >>> config.backbone_config.hidden_sizes
    [32, 64, 160, 256]

    ```"""

    model_type = "ssa"
    # Outputs that Trainer's evaluation leaves out of the predictions it passes to compute_metrics.
    keys_to_ignore_at_inference = ["coarse_logits", "teacher_logits", "loss_terms"]
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="segformer")}

    backbone_config: dict | PreTrainedConfig | None = None
    decoder_type: str = "segformer"
    decoder_hidden_size: int = 256
    decoder_embed_dims: list[int] | tuple[int, ...] | None = None
    ham_channels: int = 256
    ham_num_bases: int = 16
    ham_train_steps: int = 6
    ham_eval_steps: int = 7
    ham_seed: int = 0
    cgr_context_blocks: int = 6
    cgr_context_band_size: int = 11
    cgr_band_size: int = 11
    cgr_square_kernel_size: int = 3
    cgr_mlp_ratio: float | int = 2.0
    ocr_channels: int = 256
    ocr_region_channels: int = 720
    classifier_type: str = "ssa"
    pool_scales: list[int] | tuple[int, ...] = (1, 2, 3, 6)
    use_auxiliary_head: bool = False
    auxiliary_loss_weight: float | int = 0.4
    auxiliary_in_channels: int | None = None
    auxiliary_channels: int = 256
    auxiliary_num_convs: int = 1
    auxiliary_concat_input: bool = False
    classifier_dropout_prob: float | int = 0.1
    initializer_range: float = 0.02
    classifier_init_std: float = 0.01
    logit_scale: float | int = 15.0
    fusion_hidden_ratio: float = 0.5
    main_loss_weight: float | int = 1.0
    coarse_loss_weight: float | int = 1.0
    teacher_loss_weight: float | int = 1.0
    response_distillation_weight: float | int = 1.0
    dice_student_weight: float | int = 1.0
    dice_teacher_weight: float | int = 1.0
    semantic_distillation_weight: float | int = 10.0
    spatial_distillation_weight: float | int = 0.4
    distillation_label_mix: float = 0.5
    boundary_frame_width: int = 6
    boundary_dilation_size: int = 3
    semantic_loss_ignore_index: int = 255
    teacher_group_size: int | None = None
    validate_labels: bool = True
    source_checkpoint: str | None = None
    segmenter_encoder: bool = False

    def __post_init__(self, **kwargs):
        # This package's encoder configs by their model_type, also where AutoConfig does not know them (remote code).
        backbone = self.backbone_config
        if isinstance(backbone, dict) and backbone.get("model_type") in OWN_BACKBONE_CONFIGS:
            fields = {k: v for k, v in backbone.items() if k != "model_type"}
            self.backbone_config = OWN_BACKBONE_CONFIGS[backbone["model_type"]](**fields)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: reject values that would fail later deep inside torch."""
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(f"Unknown decoder_type '{self.decoder_type}'; expected one of {list(DECODER_TYPES)}.")
        if self.classifier_type not in CLASSIFIER_TYPES:
            raise ValueError(f"Unknown classifier_type '{self.classifier_type}'; expected one of "
                             f"{list(CLASSIFIER_TYPES)}.")
        num_stages = backbone_stage_count(self.backbone_config, self.segmenter_encoder)
        if self.decoder_type in _SEGMENTER_DECODERS and not self.segmenter_encoder:
            raise ValueError(f"decoder_type '{self.decoder_type}' is the head of a transformers segmenter: it needs "
                             f"segmenter_encoder=True and that segmenter's config (see from_transformers_config).")
        if self.decoder_type == "seaformer":
            dims = list(self.decoder_embed_dims or [])
            if len(dims) != num_stages - 1 or dims[-1] != self.decoder_hidden_size:
                raise ValueError(f"The SeaFormer head fuses the first feature map with each of the other "
                                 f"{num_stages - 1}: decoder_embed_dims needs {num_stages - 1} widths, the last equal "
                                 f"to decoder_hidden_size {self.decoder_hidden_size}; got {dims}.")
        if self.decoder_type == "upernet" and num_stages < 2:
            raise ValueError(f"The UperNet decoder needs at least 2 feature maps (FPN); the backbone gives {num_stages}.")
        if self.use_auxiliary_head and num_stages < 3 and self.decoder_type != "dpt":
            raise ValueError(f"The auxiliary head reads the third feature map; the backbone gives {num_stages}.")
        if self.teacher_group_size is not None and self.teacher_group_size < 1:
            raise ValueError(f"teacher_group_size must be None or a positive integer, got {self.teacher_group_size}.")
        if self.boundary_dilation_size < 1 or self.boundary_dilation_size % 2 == 0:
            raise ValueError(f"boundary_dilation_size must be a positive odd number, got {self.boundary_dilation_size}.")
        if self.boundary_frame_width < 0:
            raise ValueError(f"boundary_frame_width must be >= 0, got {self.boundary_frame_width}.")
        if not 0.0 <= self.distillation_label_mix <= 1.0:
            raise ValueError(f"distillation_label_mix must lie in [0, 1], got {self.distillation_label_mix}.")
        if int(self.decoder_hidden_size * self.fusion_hidden_ratio) < 1:
            raise ValueError("decoder_hidden_size * fusion_hidden_ratio must be at least 1.")
        if self.num_labels > self.semantic_loss_ignore_index >= 0:
            raise ValueError(f"num_labels {self.num_labels} reaches semantic_loss_ignore_index "
                             f"{self.semantic_loss_ignore_index}: class {self.semantic_loss_ignore_index} could never "
                             f"be learned or scored. Set semantic_loss_ignore_index >= num_labels (e.g. 65535).")

    @classmethod
    def from_segformer_config(
        cls,
        segformer_config: "SegformerConfig | dict | str",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **kwargs,
    ) -> "SSAConfig":
        """Build an SSA config around a SegFormer encoder/decoder.

        Args:
            segformer_config: a `SegformerConfig` (for example `SegformerConfig.from_pretrained(...)`), its dict, or
                a MiT variant name `"b0"` ... `"b5"` (random-init encoder of that size; the decoder is as wide as
                NVlabs' release of that size, or 256 with `decoder_type="segformer_mmseg"`: the paper's models).
            num_labels: number of classes; defaults to the SegFormer config's.
            id2label: class names; defaults to the SegFormer config's when the class count is kept, else generic.
            kwargs: any other `SSAConfig` field (loss weights, `teacher_group_size`, ...).
        """
        if isinstance(segformer_config, str):
            variant = segformer_config.lower().removeprefix("mit-").removeprefix("mit_")
            if variant not in MIT_VARIANTS:
                raise ValueError(f"Unknown MiT variant '{segformer_config}'; expected one of {sorted(MIT_VARIANTS)}.")
            sizes = dict(MIT_VARIANTS[variant])
            if kwargs.get("decoder_type") == "segformer_mmseg":  # the paper's (mmseg's) head, 256 wide for every size
                sizes["decoder_hidden_size"] = MMSEG_SEGFORMER_DECODER_WIDTH
            segformer_config = SegformerConfig(**sizes)
        elif isinstance(segformer_config, dict):
            segformer_config = SegformerConfig(**{k: v for k, v in segformer_config.items() if k != "model_type"})
        if getattr(segformer_config, "model_type", None) != "segformer":
            raise TypeError(f"Expected a SegformerConfig, got {type(segformer_config).__name__}.")

        id2label = cls.resolve_labels(num_labels, id2label, segformer_config.id2label)
        head_fields = {name: getattr(segformer_config, name) for name in _SEGFORMER_HEAD_FIELDS}
        encoder_dict = segformer_config.to_dict()
        for name in ("id2label", "label2id", "architectures", "num_labels", "_name_or_path"):
            encoder_dict.pop(name, None)
        encoder_dict.pop("model_type", None)
        backbone_config = SegformerConfig(**encoder_dict)
        return cls(
            backbone_config=backbone_config,
            id2label=id2label,
            label2id={name: idx for idx, name in id2label.items()},
            **{**head_fields, **kwargs},
        )

    @classmethod
    def from_upernet_config(
        cls,
        upernet_config,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **kwargs,
    ) -> "SSAConfig":
        """Build an SSA config around a transformers UperNet: its backbone, decoder width, pooling scales, auxiliary
        head and ignore index.

        Args:
            upernet_config: an `UperNetConfig` with a `backbone_config` (a transformers backbone, not a timm name).
            num_labels: number of classes; defaults to the UperNet config's.
            id2label: class names; defaults to the UperNet config's when the class count is kept, else generic.
            kwargs: any other `SSAConfig` field (loss weights, `teacher_group_size`, ...).

        Returns:
            `SSAConfig`: with `decoder_type="upernet"`.
        """
        if upernet_config.backbone_config is None:
            raise ValueError("This UperNet names its backbone by a timm/hub string, not a backbone_config; "
                             "only transformers backbones are supported.")
        id2label = cls.resolve_labels(num_labels, id2label, upernet_config.id2label)
        return cls(
            backbone_config=upernet_config.backbone_config.to_dict(),
            decoder_type="upernet",
            decoder_hidden_size=upernet_config.hidden_size,
            pool_scales=list(upernet_config.pool_scales),
            use_auxiliary_head=upernet_config.use_auxiliary_head,
            auxiliary_loss_weight=upernet_config.auxiliary_loss_weight,
            auxiliary_in_channels=upernet_config.auxiliary_in_channels,
            auxiliary_channels=upernet_config.auxiliary_channels,
            auxiliary_num_convs=upernet_config.auxiliary_num_convs,
            auxiliary_concat_input=upernet_config.auxiliary_concat_input,
            semantic_loss_ignore_index=upernet_config.loss_ignore_index,
            id2label=id2label,
            label2id={name: index for index, name in id2label.items()},
            **kwargs,
        )

    @classmethod
    def from_seaformer_config(cls, seaformer_config: "SeaFormerConfig | str", num_labels: int | None = None,
                              id2label: dict[int, str] | None = None, **kwargs) -> "SSAConfig":
        """SSA on SeaFormer with its light head (`decoder_type="seaformer"`), as in the paper's SeaFormer rows.

        Args:
            seaformer_config: a `SeaFormerConfig`, or a size name (`"tiny"`, `"small"`, `"base"`, `"large"`).
            num_labels: number of classes (or give `id2label`).
            id2label: class names.
            kwargs: other `SSAConfig` fields; the head's `decoder_embed_dims` and `decoder_hidden_size` default to
                the official head of that size (`SEAFORMER_HEADS`).

        Returns:
            `SSAConfig`: with `decoder_type="seaformer"`.
        """
        from .configuration_seaformer import SEAFORMER_HEADS

        if isinstance(seaformer_config, str):
            seaformer_config = SeaFormerConfig.from_variant(seaformer_config)
        variant = seaformer_config.variant()
        head = dict(SEAFORMER_HEADS[variant]) if variant else {}
        if not variant and "decoder_embed_dims" not in kwargs:
            raise ValueError("this SeaFormer is none of the paper's sizes: give decoder_embed_dims and "
                             "decoder_hidden_size for its light head.")
        id2label = cls.resolve_labels(num_labels, id2label)
        return cls(backbone_config=seaformer_config, decoder_type="seaformer", id2label=id2label,
                   label2id={name: index for index, name in id2label.items()}, **(head | kwargs))

    @classmethod
    def from_mscan_config(cls, mscan_config: "MSCANConfig | str", num_labels: int | None = None,
                          id2label: dict[int, str] | None = None, **kwargs) -> "SSAConfig":
        """SSA on MSCAN with SegNeXt's light Hamburger head (`decoder_type="ham"`) on stages 2-4, as in the paper's
        SegNeXt rows.

        Args:
            mscan_config: an `MSCANConfig` (its `out_features` are set to stages 2-4), or a size name (`"tiny"`, ...).
            num_labels: number of classes (or give `id2label`).
            id2label: class names.
            kwargs: other `SSAConfig` fields; the head's widths and number of bases default to the official head of
                that size (`SEGNEXT_HEADS`).

        Returns:
            `SSAConfig`: with `decoder_type="ham"`.
        """
        from .configuration_mscan import SEGNEXT_HEADS

        if isinstance(mscan_config, str):
            mscan_config = MSCANConfig.from_variant(mscan_config)
        mscan_config.out_features = ["stage2", "stage3", "stage4"]  # the head reads strides 8, 16 and 32
        variant = mscan_config.variant()
        head = dict(SEGNEXT_HEADS[variant]) if variant else {}
        id2label = cls.resolve_labels(num_labels, id2label)
        return cls(backbone_config=mscan_config, decoder_type="ham", id2label=id2label,
                   label2id={name: index for index, name in id2label.items()}, **(head | kwargs))

    @classmethod
    def from_efficientformer_v2_config(cls, efficientformer_config: "EfficientFormerV2Config | str",
                                       num_labels: int | None = None, id2label: dict[int, str] | None = None,
                                       **kwargs) -> "SSAConfig":
        """SSA on EfficientFormerV2 with CGRSeg's head (`decoder_type="cgr"`) on stages 2-4, as in the paper's CGRSeg
        rows (CGRSeg-B on S2, CGRSeg-L on L).

        Args:
            efficientformer_config: an `EfficientFormerV2Config` (its `out_features` are set to stages 2-4), or a
                size name (`"s2"`, `"l"`, ...).
            num_labels: number of classes (or give `id2label`).
            id2label: class names.
            kwargs: other `SSAConfig` fields; the head's blocks and band kernels default to the official head of that
                size (`CGRSEG_HEADS`; CGRSeg-B's for sizes the paper does not pair with a head).

        Returns:
            `SSAConfig`: with `decoder_type="cgr"`.
        """
        from .configuration_efficientformer_v2 import CGRSEG_HEADS

        if isinstance(efficientformer_config, str):
            efficientformer_config = EfficientFormerV2Config.from_variant(efficientformer_config)
        efficientformer_config.out_features = ["stage2", "stage3", "stage4"]  # the head reads strides 8, 16 and 32
        head = dict(CGRSEG_HEADS.get(efficientformer_config.variant(), CGRSEG_HEADS["s2"]))
        id2label = cls.resolve_labels(num_labels, id2label)
        return cls(backbone_config=efficientformer_config, decoder_type="cgr", id2label=id2label,
                   label2id={name: index for index, name in id2label.items()}, **(head | kwargs))

    @classmethod
    def from_afformer_config(cls, afformer_config: "AFFormerConfig | str", num_labels: int | None = None,
                             id2label: dict[int, str] | None = None, **kwargs) -> "SSAConfig":
        """SSA on AFFormer with its light head (`decoder_type="afformer"`) on the last stage, as in the paper's
        AFFormer rows.

        Args:
            afformer_config: an `AFFormerConfig` (its `out_features` are set to the last stage), or a size name
                (`"tiny"`, `"small"`, `"base"`).
            num_labels: number of classes (or give `id2label`).
            id2label: class names.
            kwargs: other `SSAConfig` fields; `decoder_hidden_size` defaults to the official head's 256.

        Returns:
            `SSAConfig`: with `decoder_type="afformer"`.
        """
        from .configuration_afformer import AFFORMER_HEADS

        if isinstance(afformer_config, str):
            afformer_config = AFFormerConfig.from_variant(afformer_config)
        afformer_config.out_features = ["stage4"]  # the head reads the last map (stride 8)
        head = dict(AFFORMER_HEADS.get(afformer_config.variant(), AFFORMER_HEADS["base"]))
        id2label = cls.resolve_labels(num_labels, id2label)
        return cls(backbone_config=afformer_config, decoder_type="afformer", id2label=id2label,
                   label2id={name: index for index, name in id2label.items()}, **(head | kwargs))

    @classmethod
    def from_hrnet_config(cls, hrnet_config: "HRNetConfig | str", num_labels: int | None = None,
                          id2label: dict[int, str] | None = None, **kwargs) -> "SSAConfig":
        """SSA on HRNet with OCRNet's head (`decoder_type="ocr"`) on all four branches, as in the paper's OCRNet row:
        no dropout before the classifier, the soft object regions' cross-entropy weighted 0.4.

        Args:
            hrnet_config: an `HRNetConfig` (all four branches are used), or a size name (`"w18"`, `"w48"`).
            num_labels: number of classes (or give `id2label`).
            id2label: class names.
            kwargs: other `SSAConfig` fields; the head's widths default to the official configs'.

        Returns:
            `SSAConfig`: with `decoder_type="ocr"`.
        """
        if isinstance(hrnet_config, str):
            hrnet_config = HRNetConfig.from_variant(hrnet_config)
        hrnet_config.out_features = hrnet_config.stage_names[1:]
        head = {"decoder_hidden_size": 512, "ocr_channels": 256,
                "ocr_region_channels": sum(hrnet_config.branch_channels)}
        id2label = cls.resolve_labels(num_labels, id2label)
        return cls(backbone_config=hrnet_config, decoder_type="ocr", classifier_dropout_prob=0.0,
                   auxiliary_loss_weight=0.4, id2label=id2label,
                   label2id={name: index for index, name in id2label.items()}, **(head | kwargs))

    @classmethod
    def from_transformers_config(cls, source_config: PreTrainedConfig, num_labels: int | None = None,
                                 id2label: dict[int, str] | None = None, **kwargs) -> "SSAConfig":
        """Build an SSA config around the config of any transformers semantic segmenter SSA supports: SegFormer,
        UperNet, BEiT, Data2VecVision, DPT, MobileViT, MobileViTV2 and MobileNetV2. The encoder, its neck and the
        decoder are the source's (`segmenter_encoder=True` for the last six), with the source's width, pooling
        scales, auxiliary head, classifier dropout and ignore index; SSA replaces the final 1x1 classifier.

        Args:
            source_config: the segmenter's config, e.g. `AutoConfig.from_pretrained("microsoft/beit-base-finetuned-ade-640-640")`.
            num_labels / id2label: as in `from_segformer_config`.
            kwargs: any other `SSAConfig` field.
        """
        model_type = getattr(source_config, "model_type", None)
        if model_type == "segformer":
            return cls.from_segformer_config(source_config, num_labels, id2label, **kwargs)
        if model_type == "upernet":
            return cls.from_upernet_config(source_config, num_labels, id2label, **kwargs)
        if model_type not in _SEGMENTER_HEADS:
            raise ValueError(f"a '{model_type}' config is not a transformers segmenter SSA supports; supported: "
                             f"{', '.join(SUPPORTED_SEGMENTERS)}.")
        id2label = cls.resolve_labels(num_labels, id2label, source_config.id2label)
        encoder = source_config.to_dict()
        for name in ("id2label", "label2id", "architectures", "num_labels", "_name_or_path"):
            encoder.pop(name, None)
        head = _SEGMENTER_HEADS[model_type](source_config)
        return cls(backbone_config=encoder, segmenter_encoder=True, id2label=id2label,
                   label2id={name: index for index, name in id2label.items()},
                   semantic_loss_ignore_index=source_config.semantic_loss_ignore_index, **(head | kwargs))

    @staticmethod
    def resolve_labels(num_labels: int | None, id2label: dict | None, source_id2label: dict | None = None) -> dict:
        """The class names of a new model: `id2label` when given (its length is the class count, which `num_labels`
        must match), else the source's names when the class count is kept (or not given), else generic names.

        Args:
            num_labels: the class count asked for, or None.
            id2label: the class names asked for, or None.
            source_id2label: the names of the model or config it is made from, if any.

        Returns:
            `dict[int, str]`: index -> name, indices 0..K-1.
        """
        source = {int(k): v for k, v in (source_id2label or {}).items()}
        if id2label:
            id2label = {int(k): v for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(id2label):
                raise ValueError(f"num_labels={num_labels} does not match the {len(id2label)} names of id2label.")
            return id2label
        if num_labels is None or num_labels == len(source):
            if not source:
                raise ValueError("num_labels is required: the source config names no classes.")
            return source
        return {i: f"LABEL_{i}" for i in range(num_labels)}


__all__ = ["CLASSIFIER_TYPES", "DECODER_TYPES", "MIT_VARIANTS", "OWN_BACKBONE_CONFIGS", "SSAConfig",
           "backbone_stage_count"]
