"""Configuration of EfficientFormerV2 (Li et al., "Rethinking Vision Transformers for MobileNet Size and Speed", ICCV
2023, arXiv:2212.08059) in the segmentation form that CGRSeg (Ni et al., ECCV 2024) uses, as a transformers backbone.

Remote code: copied next to the weights by `save_pretrained`; depends on transformers only.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The sizes of the paper: stage widths, blocks per stage, each block's MLP expansion ratio, how many of the last blocks
# of stages 3 and 4 attend, and the stochastic depth of the official segmentation backbones.
EFFICIENTFORMER_V2_VARIANTS = {
    "s0": {"hidden_sizes": [32, 48, 96, 176], "depths": [2, 2, 6, 4], "num_attention_blocks": 2, "drop_path_rate": 0.0,
           "mlp_ratios": [[4, 4], [4, 4], [4, 3, 3, 3, 4, 4], [4, 3, 3, 4]]},
    "s1": {"hidden_sizes": [32, 48, 120, 224], "depths": [3, 3, 9, 6], "num_attention_blocks": 2, "drop_path_rate": 0.0,
           "mlp_ratios": [[4, 4, 4], [4, 4, 4], [4, 4, 3, 3, 3, 3, 4, 4, 4], [4, 4, 3, 3, 4, 4]]},
    "s2": {"hidden_sizes": [32, 64, 144, 288], "depths": [4, 4, 12, 8], "num_attention_blocks": 4,
           "drop_path_rate": 0.02,
           "mlp_ratios": [[4] * 4, [4] * 4, [4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 3, 3, 3, 3, 4, 4]]},
    "l": {"hidden_sizes": [40, 80, 192, 384], "depths": [5, 5, 15, 10], "num_attention_blocks": 6, "drop_path_rate": 0.1,
          "mlp_ratios": [[4] * 5, [4] * 5, [4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4],
                         [4, 4, 4, 3, 3, 3, 3, 4, 4, 4]]},
}
"""EfficientFormerV2 sizes `"s0"`, `"s1"`, `"s2"`, `"l"`; `EfficientFormerV2Config.from_variant` takes a name."""

# CGRSeg's head on each encoder size of the paper (B on S2, L on L): context blocks over the pooled pyramid, and the
# band kernel of the context blocks and of the per-level blocks.
CGRSEG_HEADS = {
    "s2": {"cgr_context_blocks": 6, "cgr_context_band_size": 11, "cgr_band_size": 11, "decoder_hidden_size": 256},
    "l": {"cgr_context_blocks": 5, "cgr_context_band_size": 9, "cgr_band_size": 9, "decoder_hidden_size": 256},
}
"""`SSAConfig.from_efficientformer_v2_config` puts this head (`decoder_type="cgr"`, on stages 2-4) on that size."""


@strict
class EfficientFormerV2Config(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`EfficientFormerV2Backbone`][ssa_hf.EfficientFormerV2Backbone]. The defaults build S2
    (CGRSeg-B's encoder).

    A stem of two stride-2 3x3 convolutions, then four stages of blocks (a convolutional MLP with a 3x3 depth-wise
    convolution, each branch with a layer scale); the last `num_attention_blocks` blocks of stages 3 and 4 also attend
    (multi-head attention with talking heads, a local value branch and learned relative position biases; stage 3
    attends at half its resolution). Between stages a stride-2 3x3 convolution downsamples, and before stage 4 an
    attention that queries a subsampled grid is added to it.

    This is the segmentation form of CGRSeg's code: the relative position biases are tables for a `resolution` x
    `resolution` input (512), bicubically resized to the attention's real size.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        hidden_sizes (`list[int]`, *optional*, defaults to `[32, 64, 144, 288]`):
            Width of each stage.
        depths (`list[int]`, *optional*, defaults to `[4, 4, 12, 8]`):
            Blocks in each stage.
        mlp_ratios (`list[list[float]]`, *optional*, defaults to S2's):
            Each block's MLP expansion ratio, per stage.
        num_attention_blocks (`int`, *optional*, defaults to 4):
            How many of the last blocks of stages 3 and 4 attend.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of every attention.
        key_dim (`int`, *optional*, defaults to 32):
            Per-head query/key width of the blocks' attention.
        downsample_key_dim (`int`, *optional*, defaults to 16):
            Per-head query/key width of the attention before stage 4.
        attention_ratio (`int`, *optional*, defaults to 4):
            Value width per head as a multiple of the key width.
        resolution (`int`, *optional*, defaults to 512):
            Input size the relative-position bias tables are built for.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the stem, MLPs and attention projections.
        layer_scale_init_value (`float`, *optional*, defaults to 1e-5):
            Initial value of the layer scales.
        drop_path_rate (`float`, *optional*, defaults to 0.02):
            Stochastic depth, rising linearly over all blocks.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the batch norms.
        frozen_batch_norm (`bool`, *optional*, defaults to `True`):
            Keep the encoder's batch norms in eval mode in training (running statistics used, not updated), as the
            official backbone's `train()` does. (In the official runs that start from ImageNet weights the backbone
            is converted to SyncBN in its constructor, after which that code no longer finds its batch norms; set
            False to train them as those runs did.)
        out_features (`list[str]`, *optional*):
            Stages whose outputs the backbone returns (`"stage1"` ... `"stage4"`); by default all four.
        out_indices (`list[int]`, *optional*):
            The same by index into `stage_names` (`"stem"` is index 0).
    """

    model_type = "efficientformer_v2"

    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 144, 288)
    depths: list[int] | tuple[int, ...] = (4, 4, 12, 8)
    mlp_ratios: list | None = None
    num_attention_blocks: int = 4
    num_attention_heads: int = 8
    key_dim: int = 32
    downsample_key_dim: int = 16
    attention_ratio: int = 4
    resolution: int = 512
    hidden_act: str = "gelu"
    layer_scale_init_value: float = 1e-5
    drop_path_rate: float | int = 0.02
    batch_norm_eps: float = 1e-5
    frozen_batch_norm: bool = True
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.mlp_ratios is None:
            self.mlp_ratios = [list(r) for r in EFFICIENTFORMER_V2_VARIANTS["s2"]["mlp_ratios"]]
        self.mlp_ratios = [list(ratios) for ratios in self.mlp_ratios]
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:
            out_features = self.stage_names[1:]
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: one ratio per block, four stages."""
        if len(self.depths) != 4 or len(self.hidden_sizes) != 4:
            raise ValueError("EfficientFormerV2 has four stages: give four hidden_sizes and depths.")
        if [len(r) for r in self.mlp_ratios] != list(self.depths):
            raise ValueError(f"mlp_ratios needs one ratio per block, {list(self.depths)}; got "
                             f"{[len(r) for r in self.mlp_ratios]}.")

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "EfficientFormerV2Config":
        """The config of a paper size (`EFFICIENTFORMER_V2_VARIANTS`); `kwargs` override fields.

        Args:
            name: `"s0"`, `"s1"`, `"s2"` or `"l"` (also `"efficientformerv2-s2"`, ...).
            kwargs: other `EfficientFormerV2Config` fields.

        Returns:
            `EfficientFormerV2Config`: that size.
        """
        return cls(**(EFFICIENTFORMER_V2_VARIANTS[variant_name(name)] | kwargs))

    def variant(self) -> str | None:
        """The paper size this config builds, or None."""
        return next((name for name, spec in EFFICIENTFORMER_V2_VARIANTS.items()
                     if list(self.hidden_sizes) == spec["hidden_sizes"] and list(self.depths) == spec["depths"]),
                    None)


def variant_name(name: str) -> str:
    """`"EfficientFormerV2-S2"`, `"s2"`, `"L"` ... -> `"s2"`, `"l"`; a clear error for other names."""
    key = name.lower().replace("efficientformerv2", "").replace("efficientformer_v2", "").strip("-_ ")
    if key not in EFFICIENTFORMER_V2_VARIANTS:
        raise ValueError(f"unknown EfficientFormerV2 size {name!r}; the sizes are "
                         f"{', '.join(EFFICIENTFORMER_V2_VARIANTS)}")
    return key


__all__ = ["CGRSEG_HEADS", "EFFICIENTFORMER_V2_VARIANTS", "EfficientFormerV2Config"]
