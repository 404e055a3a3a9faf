"""Configuration of AFFormer, the adaptive frequency filter transformer (Dong et al., "Head-Free Lightweight Semantic
Segmentation with Linear Transformer", AAAI 2023, arXiv:2301.04648), as a transformers backbone.

Remote code: copied next to the weights by `save_pretrained`; depends on transformers only.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The sizes of the official code (`afformer_tiny/small/base`): stage widths and attention layers per stage.
AFFORMER_VARIANTS = {
    "tiny": {"hidden_sizes": [32, 64, 160, 216], "depths": [1, 2, 4, 2]},
    "small": {"hidden_sizes": [32, 64, 176, 216], "depths": [1, 2, 4, 2]},
    "base": {"hidden_sizes": [32, 96, 176, 216], "depths": [1, 2, 6, 2]},
}
"""AFFormer sizes `"tiny"`, `"small"`, `"base"`; `AFFormerConfig.from_variant` takes a name from here."""

# AFFormer's head (the last feature map, squeezed by a 1x1 conv + GN + ReLU) is 256 wide on every size.
AFFORMER_HEADS = {name: {"decoder_hidden_size": 256} for name in AFFORMER_VARIANTS}
"""`SSAConfig.from_afformer_config` puts this head (`decoder_type="afformer"`, on the last stage) on that size."""


@strict
class AFFormerConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`AFFormerBackbone`][ssa_hf.AFFormerBackbone]. The defaults build AFFormer-B.

    A stem of two stride-2 3x3 conv + BN + Hardswish, then four stages. Each stage embeds its input twice by a
    depth-wise and a pointwise conv (the second embedding of stages 3 and 4 strides 2 and 4: those stages attend at
    strides 16 and 32, then are upsampled back to stride 8). The first embedding passes through a convolutional
    `restore` branch; the second through linear attention whose relative position term is an adaptive frequency
    filter (a low-pass of pooled values plus a high-pass of depth-wise convolutions, gated by the queries). The sum of
    both, aggregated by a 1x1 conv to the next stage's width, is the stage's output: strides 4, 8, 8 and 8.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        hidden_sizes (`list[int]`, *optional*, defaults to `[32, 96, 176, 216]`):
            Width of each stage (each stage's output has the next one's width; the last keeps its own).
        depths (`list[int]`, *optional*, defaults to `[1, 2, 6, 2]`):
            Attention layers of each stage (the first stage has none: it only restores and aggregates).
        mlp_ratio (`int`, *optional*, defaults to 2):
            Hidden width of the attention layers' MLPs as a multiple of the stage width.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of every attention.
        filter_kernel_sizes (`list[int]`, *optional*, defaults to `[3, 5, 7]`):
            Kernel sizes of the high-pass depth-wise convolutions of the frequency filter...
        filter_head_splits (`list[int]`, *optional*, defaults to `[2, 3, 3]`):
            ... and how many heads each takes.
        low_pass_sizes (`list[int]`, *optional*, defaults to `[1, 2, 3, 6]`):
            Output sizes of the low-pass poolings (each on a quarter of the channels).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the attention layers' MLPs (the convolutions use Hardswish).
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the attention layers' layer norms.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the batch norms.
        drop_path_rate (`float`, *optional*, defaults to 0.0):
            Stochastic depth, rising linearly over all attention layers.
        out_features (`list[str]`, *optional*):
            Stages whose outputs the backbone returns (`"stage1"` ... `"stage4"`); by default all four.
        out_indices (`list[int]`, *optional*):
            The same by index into `stage_names` (`"stem"` is index 0).
    """

    model_type = "afformer"

    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (32, 96, 176, 216)
    depths: list[int] | tuple[int, ...] = (1, 2, 6, 2)
    mlp_ratio: int = 2
    num_attention_heads: int = 8
    filter_kernel_sizes: list[int] | tuple[int, ...] = (3, 5, 7)
    filter_head_splits: list[int] | tuple[int, ...] = (2, 3, 3)
    low_pass_sizes: list[int] | tuple[int, ...] = (1, 2, 3, 6)
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    batch_norm_eps: float = 1e-5
    drop_path_rate: float | int = 0.0
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:
            out_features = self.stage_names[1:]
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: four stages, filters that cover every head, widths that split."""
        if len(self.depths) != 4 or len(self.hidden_sizes) != 4:
            raise ValueError("AFFormer has four stages: give four hidden_sizes and depths.")
        if sum(self.filter_head_splits) != self.num_attention_heads or \
                len(self.filter_head_splits) != len(self.filter_kernel_sizes):
            raise ValueError("filter_head_splits needs one entry per filter kernel size, summing to the heads.")
        for size in self.hidden_sizes[1:]:
            if size % self.num_attention_heads or size % len(self.low_pass_sizes):
                raise ValueError(f"stage width {size} must split into {self.num_attention_heads} heads and "
                                 f"{len(self.low_pass_sizes)} low-pass groups.")

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "AFFormerConfig":
        """The config of a size (`AFFORMER_VARIANTS`); `kwargs` override fields.

        Args:
            name: `"tiny"`, `"small"` or `"base"` (also `"afformer-b"`, `"B"`, ...).
            kwargs: other `AFFormerConfig` fields, e.g. `out_features`.

        Returns:
            `AFFormerConfig`: that size.
        """
        return cls(**(AFFORMER_VARIANTS[variant_name(name)] | kwargs))

    def variant(self) -> str | None:
        """The size this config builds, or None."""
        return next((name for name, spec in AFFORMER_VARIANTS.items()
                     if list(self.hidden_sizes) == spec["hidden_sizes"] and list(self.depths) == spec["depths"]),
                    None)


def variant_name(name: str) -> str:
    """`"AFFormer-B"`, `"b"`, `"base"` ... -> `"base"`; a clear error for other names."""
    key = name.lower().removeprefix("afformer").strip("-_ ")
    key = {"t": "tiny", "s": "small", "b": "base"}.get(key, key)
    if key not in AFFORMER_VARIANTS:
        raise ValueError(f"unknown AFFormer size {name!r}; the sizes are {', '.join(AFFORMER_VARIANTS)}")
    return key


__all__ = ["AFFORMER_HEADS", "AFFORMER_VARIANTS", "AFFormerConfig"]
