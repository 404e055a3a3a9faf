"""ssa-hf: SSA-Seg (Semantic and Spatial Adaptive pixel-level classifier, NeurIPS 2024) in Hugging Face transformers.

Importing this package registers `SSAConfig` with `AutoConfig` and `SSAForSemanticSegmentation` with
`AutoModelForSemanticSegmentation`, and marks both for remote code, so that `save_pretrained` writes a folder that
loads with `trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoModelForSemanticSegmentation

from .configuration_ssa import MIT_VARIANTS, SSAConfig
from .evaluation import StreamingMeanIoU
from .loss_ssa import SSALoss, boundary_mask, label_edges, upsampled_segmentation_statistics
from .modeling_ssa import (
    SSAClassifier,
    SSAClassifierOutput,
    SSAForSemanticSegmentation,
    SSAPreTrainedModel,
    SSASemanticSegmenterOutput,
)

__version__ = "0.1.0"

AutoConfig.register(SSAConfig.model_type, SSAConfig, exist_ok=True)
AutoModelForSemanticSegmentation.register(SSAConfig, SSAForSemanticSegmentation, exist_ok=True)
SSAConfig.register_for_auto_class()
SSAForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")

__all__ = [
    "MIT_VARIANTS",
    "SSAClassifier",
    "SSAClassifierOutput",
    "SSAConfig",
    "SSAForSemanticSegmentation",
    "SSALoss",
    "SSAPreTrainedModel",
    "SSASemanticSegmenterOutput",
    "StreamingMeanIoU",
    "boundary_mask",
    "label_edges",
    "upsampled_segmentation_statistics",
]
