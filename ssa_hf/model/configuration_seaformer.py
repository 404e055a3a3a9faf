"""Configuration of SeaFormer, the squeeze-enhanced axial transformer for mobile semantic segmentation (Wan et al.,
"SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation", ICLR 2023, arXiv:2301.13156), as a
transformers backbone.

Remote code: copied next to the weights by `save_pretrained`; depends on transformers only.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The four sizes of the paper (its official configs): per stage, the inverted-residual blocks as
# (kernel size, expansion ratio, output channels, stride); the stem width; and the squeeze-enhanced axial attention
# blocks that follow the last `len(attention_depths)` stages.
SEAFORMER_VARIANTS = {
    "tiny": {
        "stem_channels": 16,
        "block_settings": [[[3, 1, 16, 1], [3, 4, 16, 2], [3, 3, 16, 1]], [[5, 3, 32, 2], [5, 3, 32, 1]],
                           [[3, 3, 64, 2], [3, 3, 64, 1]], [[5, 3, 128, 2]], [[3, 6, 160, 2]]],
        "attention_depths": [2, 2], "key_dims": [16, 24], "num_attention_heads": 4, "mlp_ratios": [2, 4],
    },
    "small": {
        "stem_channels": 16,
        "block_settings": [[[3, 1, 16, 1], [3, 4, 24, 2], [3, 3, 24, 1]], [[5, 3, 48, 2], [5, 3, 48, 1]],
                           [[3, 3, 96, 2], [3, 3, 96, 1]], [[5, 4, 160, 2]], [[3, 6, 192, 2]]],
        "attention_depths": [3, 3], "key_dims": [16, 24], "num_attention_heads": 6, "mlp_ratios": [2, 4],
    },
    "base": {
        "stem_channels": 16,
        "block_settings": [[[3, 1, 16, 1], [3, 4, 32, 2], [3, 3, 32, 1]], [[5, 3, 64, 2], [5, 3, 64, 1]],
                           [[3, 3, 128, 2], [3, 3, 128, 1]], [[5, 4, 192, 2]], [[3, 6, 256, 2]]],
        "attention_depths": [4, 4], "key_dims": [16, 24], "num_attention_heads": 8, "mlp_ratios": [2, 4],
    },
    "large": {
        "stem_channels": 32,
        "block_settings": [[[3, 3, 32, 1], [3, 4, 64, 2], [3, 4, 64, 1]], [[5, 4, 128, 2], [5, 4, 128, 1]],
                           [[3, 4, 192, 2], [3, 4, 192, 1]], [[5, 4, 256, 2]], [[3, 6, 320, 2]]],
        "attention_depths": [3, 3, 3], "key_dims": [16, 20, 24], "num_attention_heads": 8, "mlp_ratios": [2, 4, 6],
    },
}
"""SeaFormer sizes `"tiny"`, `"small"`, `"base"`, `"large"` (the official configs); `SeaFormerConfig.from_variant`
takes a name from here."""

# The light segmentation head of each size in the official configs: its fusion widths and output width.
SEAFORMER_HEADS = {
    "tiny": {"decoder_embed_dims": [64, 96], "decoder_hidden_size": 96},
    "small": {"decoder_embed_dims": [96, 128], "decoder_hidden_size": 128},
    "base": {"decoder_embed_dims": [128, 160], "decoder_hidden_size": 160},
    "large": {"decoder_embed_dims": [128, 160, 192], "decoder_hidden_size": 192},
}
"""`SSAConfig.from_seaformer_config` puts this head (`decoder_type="seaformer"`) on a SeaFormer of that size."""


@strict
class SeaFormerConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`SeaFormerBackbone`][ssa_hf.SeaFormerBackbone]. The defaults build SeaFormer-B.

    The network is a stem (a stride-2 3x3 convolution) and five stages of MobileNetV2 inverted-residual blocks; the
    last `len(attention_depths)` stages end in squeeze-enhanced axial attention blocks. Its feature maps are the
    output of the second stage (stride 8, the shared detail feature of the paper) and of every stage with attention.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        stem_channels (`int`, *optional*, defaults to 16):
            Output channels of the stem convolution.
        block_settings (`list[list[list[int]]]`, *optional*, defaults to SeaFormer-B's):
            Per stage, its inverted-residual blocks as `[kernel_size, expand_ratio, out_channels, stride]`.
        attention_depths (`list[int]`, *optional*, defaults to `[4, 4]`):
            Number of squeeze-enhanced axial attention blocks after each of the last stages (one entry per stage,
            counted from the end).
        key_dims (`list[int]`, *optional*, defaults to `[16, 24]`):
            Per-head query/key width of the attention blocks of each of those stages.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads.
        attention_ratio (`int`, *optional*, defaults to 2):
            Value width per head as a multiple of the key width.
        mlp_ratios (`list[float]`, *optional*, defaults to `[2, 4]`):
            Hidden width of the attention blocks' MLPs as a multiple of the stage width, per attention stage. (The
            official SeaFormer-B config gives none, so the code default `[2, 4]` applies.)
        position_embedding_size (`int`, *optional*, defaults to 16):
            Length of the learned axial position embeddings, interpolated (linearly) to each row and column count.
        hidden_act (`str`, *optional*, defaults to `"relu6"`):
            Activation of the attention blocks.
        block_act (`str`, *optional*, defaults to `"relu"`):
            Activation of the stem and the inverted-residual blocks.
        drop_path_rate (`float`, *optional*, defaults to 0.1):
            Stochastic depth of the attention blocks, rising linearly from 0 within each attention stage.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the batch norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal init of linear layers (convolutions use He's init, as the original).
        out_features (`list[str]`, *optional*):
            Stages whose outputs the backbone returns (`"stem"`, `"stage1"` ... `"stage5"`); by default `"stage2"`
            and the stages with attention.
        out_indices (`list[int]`, *optional*):
            The same by index into `stage_names`.

    Example:

    ```python
    >>> from ssa_hf import SeaFormerConfig, SeaFormerBackbone

    >>> backbone = SeaFormerBackbone(SeaFormerConfig.from_variant("large"))
    >>> backbone.out_features, backbone.channels
    (['stage2', 'stage3', 'stage4', 'stage5'], [128, 192, 256, 320])

    ```
    """

    model_type = "seaformer"

    num_channels: int = 3
    stem_channels: int = 16
    block_settings: list | None = None
    attention_depths: list[int] | tuple[int, ...] = (4, 4)
    key_dims: list[int] | tuple[int, ...] = (16, 24)
    num_attention_heads: int = 8
    attention_ratio: int | float = 2
    mlp_ratios: list[int | float] | tuple[int | float, ...] = (2, 4)
    position_embedding_size: int = 16
    hidden_act: str = "relu6"
    block_act: str = "relu"
    drop_path_rate: float | int = 0.1
    batch_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.block_settings is None:
            self.block_settings = [[list(block) for block in stage]
                                   for stage in SEAFORMER_VARIANTS["base"]["block_settings"]]
        self.block_settings = [[list(block) for block in stage] for stage in self.block_settings]
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(self.block_settings) + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:
            out_features = ["stage2"] + self.stage_names[-len(self.attention_depths):]
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: shapes that would fail later inside torch."""
        lengths = {len(self.attention_depths), len(self.key_dims), len(self.mlp_ratios)}
        if len(lengths) != 1:
            raise ValueError(f"attention_depths, key_dims and mlp_ratios need one entry per attention stage, got "
                             f"{list(self.attention_depths)}, {list(self.key_dims)}, {list(self.mlp_ratios)}.")
        if len(self.attention_depths) > len(self.block_settings):
            raise ValueError(f"{len(self.attention_depths)} attention stages, but only {len(self.block_settings)} "
                             f"stages.")
        for stage in self.block_settings:
            for block in stage:
                if len(block) != 4 or block[3] not in (1, 2):
                    raise ValueError(f"block_settings entries are [kernel_size, expand_ratio, out_channels, stride] "
                                     f"with stride 1 or 2, got {block}.")

    @property
    def stage_channels(self) -> list[int]:
        """Output channels of the stem and of each stage."""
        return [self.stem_channels] + [stage[-1][2] for stage in self.block_settings]

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "SeaFormerConfig":
        """The config of a paper size (`SEAFORMER_VARIANTS`: tiny, small, base, large); `kwargs` override fields.

        Args:
            name: `"tiny"`, `"small"`, `"base"` or `"large"` (also `"seaformer-b"`, `"B"`, ...).
            kwargs: other `SeaFormerConfig` fields, e.g. `out_features` or `drop_path_rate`.

        Returns:
            `SeaFormerConfig`: that size.
        """
        return cls(**(SEAFORMER_VARIANTS[variant_name(name)] | kwargs))

    def variant(self) -> str | None:
        """The paper size this config builds (`SEAFORMER_VARIANTS`), or None."""
        return next((name for name, spec in SEAFORMER_VARIANTS.items()
                     if all(_as_lists(getattr(self, k)) == _as_lists(v) for k, v in spec.items())), None)


def _as_lists(value):
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def variant_name(name: str) -> str:
    """`"SeaFormer-B"`, `"b"`, `"base"` ... -> `"base"`; a clear error for other names."""
    key = name.lower().removeprefix("seaformer").strip("-_ ")
    key = {"t": "tiny", "s": "small", "b": "base", "l": "large"}.get(key, key)
    if key not in SEAFORMER_VARIANTS:
        raise ValueError(f"unknown SeaFormer size {name!r}; the sizes are {', '.join(SEAFORMER_VARIANTS)}")
    return key


__all__ = ["SEAFORMER_HEADS", "SEAFORMER_VARIANTS", "SeaFormerConfig"]
