"""Configuration of MSCAN, the multi-scale convolutional attention network that is SegNeXt's encoder (Guo et al.,
"SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation", NeurIPS 2022, arXiv:2209.08575), as
a transformers backbone.

Remote code: copied next to the weights by `save_pretrained`; depends on transformers only.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The SegNeXt sizes: stage widths, blocks per stage, MLP ratios and stochastic depth (tiny and large as the SSA
# configs give them, small and base as in the SegNeXt paper).
MSCAN_VARIANTS = {
    "tiny": {"hidden_sizes": [32, 64, 160, 256], "depths": [3, 3, 5, 2], "drop_path_rate": 0.1},
    "small": {"hidden_sizes": [64, 128, 320, 512], "depths": [2, 2, 4, 2], "drop_path_rate": 0.1},
    "base": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 3, 12, 3], "drop_path_rate": 0.1},
    "large": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 5, 27, 3], "drop_path_rate": 0.3},
}
"""MSCAN sizes `"tiny"`, `"small"`, `"base"`, `"large"`; `MSCANConfig.from_variant` takes a name from here."""

# SegNeXt's light Hamburger head of each size (the official configs; R = 64 where they leave the code default).
SEGNEXT_HEADS = {
    "tiny": {"ham_channels": 256, "decoder_hidden_size": 256, "ham_num_bases": 16},
    "small": {"ham_channels": 256, "decoder_hidden_size": 256, "ham_num_bases": 16},
    "base": {"ham_channels": 512, "decoder_hidden_size": 512, "ham_num_bases": 64},
    "large": {"ham_channels": 1024, "decoder_hidden_size": 1024, "ham_num_bases": 64},
}
"""`SSAConfig.from_mscan_config` puts this head (`decoder_type="ham"`, on stages 2-4) on an MSCAN of that size."""


@strict
class MSCANConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`MSCANBackbone`][ssa_hf.MSCANBackbone]. The defaults build MSCAN-T (SegNeXt-T's encoder).

    A stem of two stride-2 3x3 convolutions, then four stages; each stage after the first starts with a stride-2 3x3
    patch embedding. A block is batch norm, multi-scale convolutional attention (a 5x5 depth-wise convolution and
    three strip-convolution branches of lengths 7, 11 and 21, summed and mixed by a 1x1 convolution that gates the
    input), then batch norm and a convolutional MLP, each with a layer scale; every stage ends in a layer norm.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        hidden_sizes (`list[int]`, *optional*, defaults to `[32, 64, 160, 256]`):
            Width of each stage.
        depths (`list[int]`, *optional*, defaults to `[3, 3, 5, 2]`):
            Blocks in each stage.
        mlp_ratios (`list[float]`, *optional*, defaults to `[8, 8, 4, 4]`):
            Hidden width of each stage's MLPs as a multiple of its width.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the stem, the attention and the MLPs.
        layer_scale_init_value (`float`, *optional*, defaults to 0.01):
            Initial value of the per-channel layer scales of both branches.
        drop_path_rate (`float`, *optional*, defaults to 0.1):
            Stochastic depth, rising linearly from 0 over all blocks.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the batch norms.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the stage-final layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal init of linear layers.
        out_features (`list[str]`, *optional*):
            Stages whose outputs the backbone returns (`"stage1"` ... `"stage4"`); by default all four.
        out_indices (`list[int]`, *optional*):
            The same by index into `stage_names` (`"stem"` is index 0).

    Example:

    ```python
    >>> from ssa_hf import MSCANBackbone, MSCANConfig

    >>> backbone = MSCANBackbone(MSCANConfig(out_features=["stage2", "stage3", "stage4"]))
    >>> backbone.channels
    [64, 160, 256]

    ```
    """

    model_type = "mscan"

    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 160, 256)
    depths: list[int] | tuple[int, ...] = (3, 3, 5, 2)
    mlp_ratios: list[int | float] | tuple[int | float, ...] = (8, 8, 4, 4)
    hidden_act: str = "gelu"
    layer_scale_init_value: float = 1e-2
    drop_path_rate: float | int = 0.1
    batch_norm_eps: float = 1e-5
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
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
        """Part of `@strict` validation: one width, depth and MLP ratio per stage."""
        if not len(self.hidden_sizes) == len(self.depths) == len(self.mlp_ratios):
            raise ValueError(f"hidden_sizes, depths and mlp_ratios need one entry per stage, got "
                             f"{list(self.hidden_sizes)}, {list(self.depths)}, {list(self.mlp_ratios)}.")

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "MSCANConfig":
        """The config of a SegNeXt size (`MSCAN_VARIANTS`); `kwargs` override fields.

        Args:
            name: `"tiny"`, `"small"`, `"base"` or `"large"` (also `"mscan-t"`, `"T"`, ...).
            kwargs: other `MSCANConfig` fields, e.g. `out_features`.

        Returns:
            `MSCANConfig`: that size.
        """
        return cls(**(MSCAN_VARIANTS[variant_name(name)] | kwargs))

    def variant(self) -> str | None:
        """The SegNeXt size this config builds (`MSCAN_VARIANTS`), or None."""
        return next((name for name, spec in MSCAN_VARIANTS.items()
                     if all(list(getattr(self, k)) == list(v) if isinstance(v, list) else getattr(self, k) == v
                            for k, v in spec.items() if k != "drop_path_rate")), None)


def variant_name(name: str) -> str:
    """`"MSCAN-T"`, `"segnext-t"`, `"tiny"` ... -> `"tiny"`; a clear error for other names."""
    key = name.lower().removeprefix("mscan").removeprefix("segnext").strip("-_ ")
    key = {"t": "tiny", "s": "small", "b": "base", "l": "large"}.get(key, key)
    if key not in MSCAN_VARIANTS:
        raise ValueError(f"unknown MSCAN size {name!r}; the sizes are {', '.join(MSCAN_VARIANTS)}")
    return key


__all__ = ["MSCAN_VARIANTS", "MSCANConfig", "SEGNEXT_HEADS"]
