"""HRNet(V2) as a transformers backbone: the encoder of the paper's OCRNet-HRNet-W48 row (configuration_hrnet.py).

Written from the architecture as mmsegmentation 0.30 builds it (`HRNet` with its default `multiscale_output`), so that
the official checkpoints convert onto it (`ssa_hf.convert_hrnet`); every module is named for what it does.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_hrnet import HRNetConfig


class HRNetConvNorm(nn.Module):
    """Conv without bias, batch norm, and (unless `activation=False`) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, eps: float = 1e-5,
                 activation: bool = True):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels, eps=eps)
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_states)))


class HRNetBottleneck(nn.Module):
    """The first stage's block: 1x1 reduce, 3x3, 1x1 expand (x4), plus the input (projected when its width
    differs), ReLU."""

    def __init__(self, in_channels: int, channels: int, eps: float):
        super().__init__()
        self.reduce = HRNetConvNorm(in_channels, channels, 1, eps=eps)
        self.spatial = HRNetConvNorm(channels, channels, 3, eps=eps)
        self.expand = HRNetConvNorm(channels, 4 * channels, 1, eps=eps, activation=False)
        self.shortcut = (HRNetConvNorm(in_channels, 4 * channels, 1, eps=eps, activation=False)
                         if in_channels != 4 * channels else nn.Identity())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.expand(self.spatial(self.reduce(hidden_states)))
        return F.relu(residual + self.shortcut(hidden_states))


class HRNetBasicBlock(nn.Module):
    """A branch's block: two 3x3 conv + BN (ReLU between), plus the input, ReLU."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.first = HRNetConvNorm(channels, channels, 3, eps=eps)
        self.second = HRNetConvNorm(channels, channels, 3, eps=eps, activation=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.relu(self.second(self.first(hidden_states)) + hidden_states)


def downsampling(in_channels: int, out_channels: int, steps: int, eps: float, last_activation: bool = False
                 ) -> nn.Sequential:
    """`steps` stride-2 3x3 conv + BN + ReLU, `in_channels` wide until the last, which is `out_channels` wide and has
    a ReLU only with `last_activation` (a new branch has one; a fusion term has none, it is summed before one)."""
    return nn.Sequential(*[HRNetConvNorm(in_channels, out_channels if step == steps - 1 else in_channels, 3, 2, eps,
                                         activation=step < steps - 1 or last_activation) for step in range(steps)])


class HRNetModule(nn.Module):
    """One module of a multi-resolution stage: a chain of basic blocks per branch, then every branch i becomes the
    ReLU of the sum over all branches j brought to its resolution and width (j > i: 1x1 conv + BN, bilinear
    upsampling; j < i: stride-2 convs)."""

    def __init__(self, channels: list[int], num_blocks: int, eps: float):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[HRNetBasicBlock(width, eps) for _ in range(num_blocks)])
                                      for width in channels)
        self.fusions = nn.ModuleList(nn.ModuleList(
            nn.Identity() if source == target
            else HRNetConvNorm(channels[source], channels[target], 1, eps=eps, activation=False) if source > target
            else downsampling(channels[source], channels[target], target - source, eps)
            for source in range(len(channels))) for target in range(len(channels)))

    def forward(self, branches: list[torch.Tensor]) -> list[torch.Tensor]:
        branches = [blocks(hidden_states) for blocks, hidden_states in zip(self.branches, branches)]
        fused = []
        for target, bring in enumerate(self.fusions):
            terms = [module(hidden_states) if source <= target else F.interpolate(
                module(hidden_states), size=branches[target].shape[2:], mode="bilinear", align_corners=False)
                for source, (module, hidden_states) in enumerate(zip(bring, branches))]
            total = terms[0]
            for term in terms[1:]:  # summed in branch order, as the official code does
                total = total + term
            fused.append(F.relu(total))
        return fused


class HRNetPreTrainedModel(PreTrainedModel):
    """The transformers base of HRNet models: `HRNetConfig` and mmseg's initialisation."""

    config_class = HRNetConfig
    config: HRNetConfig
    base_model_prefix = "hrnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """mmseg's HRNet init: convolutions Kaiming normal (fan out, ReLU), batch norms 1 and 0."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)


class HRNetBackbone(BackboneMixin, HRNetPreTrainedModel):
    """HRNet's four branches of the last stage, at strides 4, 8, 16 and 32 (those named by `config.out_features`);
    OCRNet's heads concatenate all four.

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import HRNetBackbone, HRNetConfig

    >>> backbone = HRNetBackbone(HRNetConfig.from_variant("w18", stage_modules=[1, 1, 1])).eval()
    >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 64)).feature_maps]
    [(1, 18, 16, 16), (1, 36, 8, 8), (1, 72, 4, 4), (1, 144, 2, 2)]

    ```
    """

    has_attentions = False

    def __init__(self, config: HRNetConfig):
        super().__init__(config)
        eps, widths = config.batch_norm_eps, list(config.branch_channels)
        self.stem = nn.Sequential(HRNetConvNorm(config.num_channels, config.stem_channels, 3, 2, eps),
                                  HRNetConvNorm(config.stem_channels, config.stem_channels, 3, 2, eps))
        first_width = 4 * config.stage1_channels
        self.stage1 = nn.Sequential(*[HRNetBottleneck(config.stem_channels if block == 0 else first_width,
                                                      config.stage1_channels, eps)
                                      for block in range(config.stage1_blocks)])
        # Before each later stage: branches whose width changes get a 3x3 conv, the new branch is made from the lowest
        # resolution so far by stride-2 convs; the others pass unchanged.
        self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
        previous = [first_width]
        for stage, num_modules in enumerate(config.stage_modules):
            current = widths[: stage + 2]
            self.transitions.append(nn.ModuleList(
                (nn.Identity() if current[branch] == previous[branch]
                 else HRNetConvNorm(previous[branch], current[branch], 3, eps=eps)) if branch < len(previous)
                else downsampling(previous[-1], current[branch], branch + 1 - len(previous), eps, last_activation=True)
                for branch in range(len(current))))
            self.stages.append(nn.ModuleList(HRNetModule(current, config.branch_blocks, eps)
                                             for _ in range(num_modules)))
            previous = current
        self.num_features = [config.stem_channels] + widths
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None, **kwargs) -> BackboneOutput:
        """
        Args:
            pixel_values: (B, C, H, W) images.
            output_hidden_states: also return the stem's output.
            output_attentions: unused.
            return_dict: a `BackboneOutput` rather than a tuple.

        Returns:
            `BackboneOutput`: `feature_maps`, one (B, C_i, H_i, W_i) map per entry of `out_features`.
        """
        stem = self.stem(pixel_values)
        branches = [self.stage1(stem)]
        for transition, modules in zip(self.transitions, self.stages):
            branches = [module(branches[index] if index < len(branches) else branches[-1])
                        for index, module in enumerate(transition)]
            for module in modules:
                branches = module(branches)
        all_hidden_states = [stem, *branches]
        feature_maps = tuple(state for name, state in zip(self.stage_names, all_hidden_states)
                             if name in self.out_features)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else \
            self.config.output_hidden_states
        output = BackboneOutput(feature_maps=feature_maps,
                                hidden_states=tuple(all_hidden_states) if output_hidden_states else None)
        return output if return_dict is not False else output.to_tuple()


__all__ = ["HRNetBackbone", "HRNetPreTrainedModel"]
