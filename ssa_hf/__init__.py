"""ssa-hf: SSA-Seg (Semantic and Spatial Adaptive pixel-level classifier, NeurIPS 2024) in Hugging Face transformers.

Importing this package registers `SSAConfig` with `AutoConfig`, `SSAForSemanticSegmentation` with
`AutoModelForSemanticSegmentation` and `SSAImageProcessor` with `AutoImageProcessor`, and marks all three for remote
code, so that `save_pretrained` writes a folder that loads with `trust_remote_code=True` where this package is not
installed. SeaFormer, MSCAN (SegNeXt's encoder), EfficientFormerV2 (CGRSeg's encoder), AFFormer and HRNet (OCRNet's encoder) are
registered with `AutoConfig` and `AutoBackbone`. It also
makes `pipeline("image-segmentation")` pad batches of images of different sizes for SSA models
(`SSASegmentationPipeline`; other models are batched as transformers does). The `ssa-seg` command (`ssa_hf_cli`) parses its arguments without importing this package.
"""

import sys as _sys

from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation
from transformers.models.auto.video_processing_auto import AutoVideoProcessor  # no torchvision needed here

from .evaluation import StreamingMeanIoU
from .model.classifier_ssa import SSAClassifier, SSAClassifierOutput
from .model.configuration_afformer import AFFORMER_VARIANTS, AFFormerConfig
from .model.configuration_efficientformer_v2 import EFFICIENTFORMER_V2_VARIANTS, EfficientFormerV2Config
from .model.configuration_hrnet import HRNET_VARIANTS, HRNetConfig
from .model.configuration_mscan import MSCAN_VARIANTS, MSCANConfig
from .model.configuration_seaformer import SEAFORMER_VARIANTS, SeaFormerConfig
from .model.configuration_ssa import MIT_VARIANTS, SSAConfig
from .model.image_processing_ssa import LabelConvention, SSAImageProcessor
from .model.loss_ssa import SSALoss, boundary_mask, label_edges, upsampled_segmentation_statistics
from .model.modeling_afformer import AFFormerBackbone
from .model.modeling_efficientformer_v2 import EfficientFormerV2Backbone
from .model.modeling_hrnet import HRNetBackbone
from .model.modeling_mscan import MSCANBackbone
from .model.modeling_seaformer import SeaFormerBackbone
from .model.modeling_ssa import SSAForSemanticSegmentation, SSAPreTrainedModel, SSASemanticSegmenterOutput
from .pipeline_batching import SSASegmentationPipeline
from .pipeline_batching import register as _register_pipeline
from .version import __version__

# The model files lived at the package's top level before they moved to `ssa_hf.model`: the old import paths name
# the same module objects, so code written against them (and monkeypatches of them) keeps working.
for _name in ("configuration_ssa", "modeling_ssa", "ops_ssa", "loss_ssa", "image_processing_ssa"):
    _sys.modules[f"{__name__}.{_name}"] = globals()[_name] = _sys.modules[f"{__name__}.model.{_name}"]

AutoConfig.register(SSAConfig.model_type, SSAConfig, exist_ok=True)
# The encoders transformers does not have, as backbones any transformers user can build.
for _config, _backbone in ((SeaFormerConfig, SeaFormerBackbone), (MSCANConfig, MSCANBackbone),
                          (EfficientFormerV2Config, EfficientFormerV2Backbone), (AFFormerConfig, AFFormerBackbone),
                          (HRNetConfig, HRNetBackbone)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoBackbone.register(_config, _backbone, exist_ok=True)
AutoModelForSemanticSegmentation.register(SSAConfig, SSAForSemanticSegmentation, exist_ok=True)
AutoImageProcessor.register(SSAConfig, image_processor_classes={"pil": SSAImageProcessor}, exist_ok=True)
# SSA has no video processor. Saying so keeps `pipeline` from guessing one in the folder's remote code (it derives
# "SSAVideoProcessor" from the image processor's auto_map) and asking whether to run that code.
AutoVideoProcessor.register(SSAConfig, video_processor_classes={}, exist_ok=True)
SSAConfig.register_for_auto_class()
SSAForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
SSAImageProcessor.register_for_auto_class("AutoImageProcessor")
_register_pipeline()  # pipeline("image-segmentation", batch_size=N) pads images of different sizes for SSA

__all__ = [
    "AFFORMER_VARIANTS",
    "EFFICIENTFORMER_V2_VARIANTS",
    "HRNET_VARIANTS",
    "MIT_VARIANTS",
    "MSCAN_VARIANTS",
    "SEAFORMER_VARIANTS",
    "AFFormerBackbone",
    "AFFormerConfig",
    "EfficientFormerV2Backbone",
    "EfficientFormerV2Config",
    "HRNetBackbone",
    "HRNetConfig",
    "LabelConvention",
    "MSCANBackbone",
    "MSCANConfig",
    "SSAClassifier",
    "SSAClassifierOutput",
    "SSAConfig",
    "SSAForSemanticSegmentation",
    "SSAImageProcessor",
    "SSALoss",
    "SSAPreTrainedModel",
    "SSASegmentationPipeline",
    "SSASemanticSegmenterOutput",
    "SeaFormerBackbone",
    "SeaFormerConfig",
    "StreamingMeanIoU",
    "__version__",
    "boundary_mask",
    "label_edges",
    "upsampled_segmentation_statistics",
]
