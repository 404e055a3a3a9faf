"""Configuration of HRNet(V2) (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
TPAMI 2020, arXiv:1908.07919), the encoder of the paper's OCRNet row, as a transformers backbone.

Remote code: copied next to the weights by `save_pretrained`; depends on transformers only.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The widths of HRNetV2-W18 and -W48 (mmseg's `hrnetv2_w18`/`hrnetv2_w48`): branch i is width * 2^i channels wide.
HRNET_VARIANTS = {
    "w18": {"branch_channels": [18, 36, 72, 144]},
    "w48": {"branch_channels": [48, 96, 192, 384]},
}
"""HRNetV2 sizes `"w18"`, `"w48"`; `HRNetConfig.from_variant` takes a name from here."""

@strict
class HRNetConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`HRNetBackbone`][ssa_hf.HRNetBackbone]. The defaults build HRNetV2-W48.

    A stem of two stride-2 3x3 conv + BN + ReLU (`stem_channels`), a first stage of bottleneck blocks at stride 4, then
    three stages that keep every resolution they have and add one (strides 4, 8, 16, 32): each stage repeats a module
    of one chain of basic blocks per branch followed by a fusion that sums every branch into every other (1x1 conv +
    BN and bilinear upsampling from lower resolutions, stride-2 3x3 convs from higher ones). The backbone returns the
    four branches of the last stage.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        stem_channels (`int`, *optional*, defaults to 64):
            Width of the stem.
        stage1_channels (`int`, *optional*, defaults to 64):
            Inner width of the first stage's bottleneck blocks (their output is four times as wide).
        stage1_blocks (`int`, *optional*, defaults to 4):
            Bottleneck blocks of the first stage.
        branch_channels (`list[int]`, *optional*, defaults to `[48, 96, 192, 384]`):
            Width of each resolution branch, stride 4 first.
        stage_modules (`list[int]`, *optional*, defaults to `[1, 4, 3]`):
            Modules of stages 2, 3 and 4 (which have 2, 3 and 4 branches).
        branch_blocks (`int`, *optional*, defaults to 4):
            Basic blocks of each branch in each module.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the batch norms.
        out_features (`list[str]`, *optional*):
            Branches whose outputs the backbone returns (`"stage1"` ... `"stage4"` for strides 4 ... 32); by default
            all four.
        out_indices (`list[int]`, *optional*):
            The same by index into `stage_names` (`"stem"` is index 0).
    """

    model_type = "hrnet"

    num_channels: int = 3
    stem_channels: int = 64
    stage1_channels: int = 64
    stage1_blocks: int = 4
    branch_channels: list[int] | tuple[int, ...] = (48, 96, 192, 384)
    stage_modules: list[int] | tuple[int, ...] = (1, 4, 3)
    branch_blocks: int = 4
    batch_norm_eps: float = 1e-5
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(self.branch_channels) + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:
            out_features = self.stage_names[1:]
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: one module count per stage after the first, one branch more per stage."""
        if len(self.stage_modules) != len(self.branch_channels) - 1 or len(self.branch_channels) < 2:
            raise ValueError(f"HRNet adds one branch per stage after the first: {len(self.branch_channels)} branches "
                             f"need {len(self.branch_channels) - 1} stage_modules, got {list(self.stage_modules)}.")

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "HRNetConfig":
        """The config of a size (`HRNET_VARIANTS`); `kwargs` override fields.

        Args:
            name: `"w18"` or `"w48"` (also `"hrnetv2_w48"`, `"HRNet-W48"`, ...).
            kwargs: other `HRNetConfig` fields, e.g. `out_features`.

        Returns:
            `HRNetConfig`: that size.
        """
        return cls(**(HRNET_VARIANTS[variant_name(name)] | kwargs))

    def variant(self) -> str | None:
        """The size this config builds, or None."""
        return next((name for name, spec in HRNET_VARIANTS.items()
                     if list(self.branch_channels) == spec["branch_channels"]), None)


def variant_name(name: str) -> str:
    """`"HRNet-W48"`, `"hrnetv2_w48"`, `"w48"` ... -> `"w48"`; a clear error for other names."""
    key = name.lower().replace("hrnetv2", "").replace("hrnet", "").strip("-_ ")
    if key not in HRNET_VARIANTS:
        raise ValueError(f"unknown HRNet size {name!r}; the sizes are {', '.join(HRNET_VARIANTS)}")
    return key


__all__ = ["HRNET_VARIANTS", "HRNetConfig"]
