"""The decoders in front of the SSA classifier, one class each, chosen by `SSAConfig.decoder_type` (`DECODE_HEADS`):
SegFormer's all-MLP head in the transformers and the mmseg layouts, UperNet (and its auxiliary FCN head), SeaFormer's
light head and SegNeXt's light Hamburger head. Each
builds its `classifier` (an `SSAClassifier`) and defines `fuse`, the encoder's feature maps -> the feature F that SSA
classifies (the map right before the original 1x1 classifier).

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .classifier_ssa import SSAClassifier, build_classifier
from .ops_ssa import adaptive_avg_pool, fused_feature


class SSASegformerMLP(nn.Module):
    """Holder of a per-stage linear projection of the SegFormer decoder, under transformers' parameter names
    (`linear_projections.i.proj`). The decode head folds its weights into the fusion conv's and applies them itself."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)


class SSADecodeHead(nn.Module):
    """A decoder ending in the SSA classifier: subclasses build `classifier` and define `fuse` (feature maps -> F)."""

    classifier: "SSAClassifier"

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def auxiliary_logits(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """Logits of a prediction that is part of the decoder and has its own loss in training (OCRNet's soft object
        regions), or None."""
        return None

    def fuse_and_auxiliary(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """F and `auxiliary_logits` in one pass (training)."""
        return self.fuse(feature_maps), self.auxiliary_logits(feature_maps)

    def output_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits the model returns, from the classifier's at F's resolution: as they are, unless the source
        decoder resizes after its classifier (DPT)."""
        return logits

    def plain_logits(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The plain baseline's logits (`classifier_type="plain"`): its classifier on F, unless the published
        decoder does more after its classifier (CGRSeg's second stage)."""
        return self.classifier(self.fuse(feature_maps)).logits

    def plain_logits_and_auxiliary(self, feature_maps: tuple[torch.Tensor, ...]
                                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`plain_logits` and `auxiliary_logits` (the baseline's forward)."""
        return self.plain_logits(feature_maps), self.auxiliary_logits(feature_maps)


def _feature_map(hidden_state: torch.Tensor, reshape_last_stage: bool) -> torch.Tensor:
    """MiT's last stage as (B, C, h, w) when the encoder returns it as a (B, N, C) sequence (square images)."""
    if reshape_last_stage or hidden_state.ndim != 3:
        return hidden_state
    side = int(math.sqrt(hidden_state.shape[1]))
    return hidden_state.reshape(hidden_state.shape[0], side, side, -1).permute(0, 3, 1, 2)


class SSASegformerDecodeHead(SSADecodeHead):
    """SegFormer's all-MLP decoder in the transformers layout, ending in the SSA classifier.

    The feature SSA sees is taken after fuse, batch norm and activation, before dropout (docs/method.md, section 2); the dropout
    lives inside the classifier, on the coarse path only.
    """

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        self.reshape_last_stage = getattr(config.backbone_config, "reshape_last_stage", True)
        self.linear_projections = nn.ModuleList(
            [SSASegformerMLP(size, config.decoder_hidden_size) for size in in_channels]
        )
        self.linear_fuse = nn.Conv2d(
            config.decoder_hidden_size * len(in_channels), config.decoder_hidden_size, 1, bias=False
        )
        self.batch_norm = nn.BatchNorm2d(config.decoder_hidden_size)
        self.activation = nn.ReLU()
        self.classifier = build_classifier(config)

    def fuse(self, encoder_hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F: (B, C, h/4, w/4) = ReLU(BN(linear_fuse(concat_i up(proj_i(x_i))))), as in transformers.

        The 1x1 fusion conv is linear and commutes with bilinear upsampling, so its block for stage i is folded into
        that stage's projection and applied at the stage's own resolution: F = act(BN(sum_i up((W_i P_i) x_i))).
        Same function (float rounding aside), without the 4C-channel concatenation at 1/4 resolution and its GEMM.
        """
        fuse_weight = self.linear_fuse.weight.flatten(1)  # (C, stages * C), stages concatenated in reverse order
        channels, num_stages = fuse_weight.shape[0], len(encoder_hidden_states)
        folded = []
        for stage, (hidden_state, projection) in enumerate(zip(encoder_hidden_states, self.linear_projections)):
            hidden_state = _feature_map(hidden_state, self.reshape_last_stage)
            block = fuse_weight[:, (num_stages - 1 - stage) * channels : (num_stages - stage) * channels]
            folded.append((hidden_state, block @ projection.proj.weight, block @ projection.proj.bias))
        return fused_feature(folded, "linear", self.batch_norm, self.activation)


class SSAConvModule(nn.Module):
    """Conv without bias, batch norm, ReLU: transformers' `UperNetConvModule` (norm named `batch_norm`); the
    `SSAMMSegConvModule` subclass is mmcv's `ConvModule` as mmseg decoders use it (norm named `bn`), and
    `SSAGroupNormConvModule` the same with group norm. `groups` makes the conv grouped (depth-wise), and
    `activation=False` leaves the ReLU out."""

    norm_name = "batch_norm"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1,
                 activation: bool = True):
        super().__init__()
        padding = (kernel_size // 2) * dilation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                              groups=groups, bias=False)
        self.add_module(self.norm_name, self.build_norm(out_channels))
        self.activation = nn.ReLU() if activation else nn.Identity()

    def build_norm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    @property
    def norm(self) -> nn.Module:
        return getattr(self, self.norm_name)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(hidden_states)))


class SSAGroupNormConvModule(SSAConvModule):
    """Conv without bias, group norm of `GROUPS` groups (SegNeXt's head), ReLU."""

    norm_name = "group_norm"
    GROUPS = 32

    def build_norm(self, channels: int) -> nn.Module:
        return nn.GroupNorm(self.GROUPS, channels)


class SSAMMSegConvModule(SSAConvModule):
    norm_name = "bn"


class SSASegformerMMSegDecodeHead(SSADecodeHead):
    """mmsegmentation 0.30's `SegformerHead` (the decoder of the official SSA code), ending in the SSA classifier:
    per stage a 1x1 conv + BN + ReLU, bilinear resize to stride 4, concatenation in stage order 1..4, and a 1x1
    fusion conv + BN + ReLU whose output is F. Parameter names follow mmseg (`convs.i.conv`, `fusion_conv.bn`, ...).
    """

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        self.reshape_last_stage = getattr(config.backbone_config, "reshape_last_stage", True)
        channels = config.decoder_hidden_size
        self.convs = nn.ModuleList([SSAMMSegConvModule(size, channels) for size in in_channels])
        self.fusion_conv = SSAMMSegConvModule(channels * len(in_channels), channels)
        self.classifier = build_classifier(config)

    def fuse(self, encoder_hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F: (B, C, h/4, w/4). As in the transformers layout, the fusion conv's block for stage i is
        applied at that stage's resolution, before upsampling (exact by linearity): F = ReLU(BN(sum_i up(W_i r_i)))
        with r_i = ReLU(BN(conv_i(x_i)))."""
        fuse_weight = self.fusion_conv.conv.weight.flatten(1)  # (C, stages * C), stages in order 1..n
        channels = fuse_weight.shape[0]
        folded = []
        for stage, (hidden_state, conv) in enumerate(zip(encoder_hidden_states, self.convs)):
            hidden_state = _feature_map(hidden_state, self.reshape_last_stage)
            block = fuse_weight[:, stage * channels : (stage + 1) * channels]
            folded.append((conv(hidden_state), block, None))
        fusion = self.fusion_conv
        return fused_feature(folded, "conv", fusion.norm, fusion.activation)


class SSAUperNetDecodeHead(SSADecodeHead):
    """UperNet (pyramid pooling 1, 2, 3, 6 on the last feature map + FPN) in the layout of transformers'
    `UperNetHead`, so its checkpoints load unchanged; F is the `fpn_bottleneck` output and the SSA
    classifier replaces `classifier`."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        channels = config.decoder_hidden_size
        self.psp_modules = nn.ModuleList(
            [nn.Sequential(nn.AdaptiveAvgPool2d(scale), SSAConvModule(in_channels[-1], channels))
             for scale in config.pool_scales]
        )
        self.bottleneck = SSAConvModule(in_channels[-1] + len(config.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList([SSAConvModule(size, channels) for size in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([SSAConvModule(channels, channels, 3) for _ in in_channels[:-1]])
        self.fpn_bottleneck = SSAConvModule(len(in_channels) * channels, channels, 3)
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F at the first feature map's resolution: (B, C, h, w)."""
        top = feature_maps[-1]
        pooled = []
        for pool, conv in self.psp_modules:
            bins = adaptive_avg_pool(top, pool.output_size)
            pooled.append(F.interpolate(conv(bins), size=top.shape[2:], mode="bilinear", align_corners=False))
        laterals = [conv(feature_maps[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down path
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="bilinear", align_corners=False
            )
        outputs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        size = outputs[0].shape[2:]
        outputs = [outputs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False)
                                  for o in outputs[1:]]
        return self.fpn_bottleneck(torch.cat(outputs, dim=1))


class SSAAuxiliaryHead(nn.Module):
    """The auxiliary FCN head of UperNet configs, in the layout of transformers' `UperNetFCNHead`: 3x3 conv modules
    on the third feature map and a 1x1 classifier. Training only (its loss is weighted by auxiliary_loss_weight)."""

    def __init__(self, config, in_channels: list[int], in_index: int = 2):
        super().__init__()
        self.in_index = in_index
        source = config.auxiliary_in_channels or in_channels[in_index]
        channels = config.auxiliary_channels
        convs = [SSAConvModule(source if i == 0 else channels, channels, 3)
                 for i in range(config.auxiliary_num_convs)]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.concat_input = config.auxiliary_concat_input
        if self.concat_input:
            self.conv_cat = SSAConvModule(source + channels, channels, 3)
        self.classifier = nn.Conv2d(channels, config.num_labels, 1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        hidden_states = feature_maps[self.in_index]
        output = self.convs(hidden_states)
        if self.concat_input:
            output = self.conv_cat(torch.cat([hidden_states, output], dim=1))
        return self.classifier(output)


class SeaFormerFusionBlock(nn.Module):
    """SeaFormer's fusion of a detail map and a context map: the detail map's 1x1 embedding, multiplied by the
    context map's 1x1 embedding through a hard sigmoid, upsampled (bilinear) to the detail map's size."""

    def __init__(self, detail_channels: int, context_channels: int, channels: int):
        super().__init__()
        self.local_embedding = SSAConvModule(detail_channels, channels, activation=False)
        self.global_gate = SSAConvModule(context_channels, channels, activation=False)

    def forward(self, detail: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        gate = F.relu6(self.global_gate(context) + 3) / 6
        gate = F.interpolate(gate, size=detail.shape[2:], mode="bilinear", align_corners=False)
        return self.local_embedding(detail) * gate


class SSASeaFormerDecodeHead(SSADecodeHead):
    """SeaFormer's light segmentation head (`LightHead`), ending in the SSA classifier: the stride-8 detail map is
    fused with each context map in turn (`SeaFormerFusionBlock`, widths `decoder_embed_dims`), then a depth-wise 1x1
    conv + BN + ReLU (`linear_fuse`) gives F at stride 8 (the official `LightHead_ssa` feeds SSA with it)."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        widths = list(config.decoder_embed_dims)
        self.fusions = nn.ModuleList(
            SeaFormerFusionBlock(in_channels[0] if index == 0 else widths[index - 1], in_channels[index + 1], width)
            for index, width in enumerate(widths))
        channels = config.decoder_hidden_size
        self.linear_fuse = SSAConvModule(channels, channels, groups=channels)
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F: (B, C, h/8, w/8)."""
        detail = feature_maps[0]
        for fusion, context in zip(self.fusions, feature_maps[1:]):
            detail = fusion(detail, context)
        return self.linear_fuse(detail)


class NonNegativeMatrixFactorization(nn.Module):
    """The "ham" of Hamburger (Geng et al., ICLR 2021): the (D, N) feature matrix of every image is approximated by
    non-negative bases (D, R) times coefficients (R, N), found by multiplicative updates from starting bases, and the
    reconstruction is returned.

    Starting bases: in training, fresh uniform random bases, normalised over D, for every image and forward pass, as
    the official code draws them (from the global generator, which `ssa-seg train` reseeds per iteration, so a resumed
    run draws the same). In evaluation, the official code draws fresh ones too, so its predictions vary from run to
    run (by up to 0.5 in the logits); here they come from a generator seeded with `seed`, the same for every image
    and call, so the same weights and input always give the same output. `bases` set through `set_bases` replace
    either for the following forward passes (to reproduce a particular official run)."""

    def __init__(self, channels: int, num_bases: int, train_steps: int, eval_steps: int, seed: int):
        super().__init__()
        self.num_bases, self.train_steps, self.eval_steps, self.seed = num_bases, train_steps, eval_steps, seed
        self.fixed_bases = None
        # The evaluation bases: one draw, kept (a constant of an exported graph); not saved, since the seed makes them.
        self.register_buffer("seeded_bases", self.draw_seeded_bases(channels), persistent=False)

    def draw_seeded_bases(self, channels: int) -> torch.Tensor:
        """(1, D, R) uniform bases from a CPU generator seeded with `seed`, normalised over D."""
        generator = torch.Generator().manual_seed(self.seed)
        return F.normalize(torch.rand(1, channels, self.num_bases, generator=generator, device="cpu"), dim=1)

    def set_bases(self, bases: torch.Tensor | None) -> None:
        """Use these starting bases, (1 or B, D, R) and normalised as the official `_build_bases` returns them, in
        every following forward pass; None returns to the default ones."""
        if bases is not None and (bases.ndim != 3 or bases.shape[-1] != self.num_bases):
            raise ValueError(f"bases must have shape (1 or batch, channels, {self.num_bases}), got "
                             f"{tuple(bases.shape)}")
        self.fixed_bases = bases

    def starting_bases(self, batch: int, channels: int, device, dtype) -> torch.Tensor:
        """(B, D, R) starting bases (see the class docstring for which)."""
        if self.fixed_bases is not None:
            bases = self.fixed_bases
        elif self.training:
            bases = F.normalize(torch.rand(batch, channels, self.num_bases, device=device), dim=1)
        else:
            bases = self.seeded_bases
        return bases.to(device=device, dtype=dtype).expand(batch, -1, -1)

    @staticmethod
    def update_coefficients(features, bases, coefficients):
        """coef <- coef * (x^T B) / (coef B^T B)."""
        numerator = torch.bmm(features.transpose(1, 2), bases)
        denominator = coefficients.bmm(bases.transpose(1, 2).bmm(bases))
        return coefficients * numerator / (denominator + 1e-6)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        features = hidden_states.reshape(batch, channels, height * width)  # x: (B, D, N)
        bases = self.starting_bases(batch, channels, hidden_states.device, hidden_states.dtype)
        coefficients = torch.bmm(features.transpose(1, 2), bases).softmax(dim=-1)  # (B, N, R)
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coefficients = self.update_coefficients(features, bases, coefficients)
            numerator = torch.bmm(features, coefficients)
            denominator = bases.bmm(coefficients.transpose(1, 2).bmm(coefficients))
            bases = bases * numerator / (denominator + 1e-6)
        coefficients = self.update_coefficients(features, bases, coefficients)
        return torch.bmm(bases, coefficients.transpose(1, 2)).view(batch, channels, height, width)


class Hamburger(nn.Module):
    """A 1x1 conv with bias and ReLU ("bread"), the matrix decomposition ("ham"), a 1x1 conv with group norm, and a
    residual ReLU: relu(x + out(ham(relu(in(x)))))."""

    def __init__(self, config):
        super().__init__()
        channels = config.ham_channels
        self.input_projection = nn.Conv2d(channels, channels, 1)
        self.decomposition = NonNegativeMatrixFactorization(channels, config.ham_num_bases, config.ham_train_steps,
                                                            config.ham_eval_steps, config.ham_seed)
        self.output_projection = SSAGroupNormConvModule(channels, channels, activation=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        enjoy = self.decomposition(F.relu(self.input_projection(hidden_states)))
        return F.relu(hidden_states + self.output_projection(enjoy))


class SSAHamDecodeHead(SSADecodeHead):
    """SegNeXt's light Hamburger head (`LightHamHead`), ending in the SSA classifier: the feature maps resized to the
    first one's size (stride 8, bilinear) and concatenated, squeezed by a 1x1 conv + GN + ReLU, the Hamburger, and
    aligned by a 1x1 conv + GN + ReLU whose output is F (as the official `LightHamHead_ssa`)."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        self.squeeze = SSAGroupNormConvModule(sum(in_channels), config.ham_channels)
        self.hamburger = Hamburger(config)
        self.align = SSAGroupNormConvModule(config.ham_channels, config.decoder_hidden_size)
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F at the first feature map's resolution."""
        size = feature_maps[0].shape[2:]
        stacked = torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in feature_maps],
                            dim=1)
        return self.align(self.hamburger(self.squeeze(stacked)))


class RectangularCalibration(nn.Module):
    """CGRSeg's rectangular self-calibration attention: a square depth-wise conv of the input, gated by a sigmoid
    excitation of its row means plus column means through a horizontal then a vertical depth-wise band conv."""

    def __init__(self, channels: int, band_kernel_size: int, square_kernel_size: int):
        super().__init__()
        self.local = nn.Conv2d(channels, channels, square_kernel_size, padding=square_kernel_size // 2,
                               groups=channels)
        self.band_horizontal = nn.Conv2d(channels, channels, (1, band_kernel_size),
                                         padding=(0, band_kernel_size // 2), groups=channels)
        self.band_norm = nn.BatchNorm2d(channels)
        self.band_vertical = nn.Conv2d(channels, channels, (band_kernel_size, 1),
                                       padding=(band_kernel_size // 2, 0), groups=channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gathered = hidden_states.mean(dim=3, keepdim=True) + hidden_states.mean(dim=2, keepdim=True)  # (B, C, H, W)
        gate = torch.sigmoid(self.band_vertical(F.relu(self.band_norm(self.band_horizontal(gathered)))))
        return gate * self.local(hidden_states)


class RectangularCalibrationBlock(nn.Module):
    """x + gamma * mlp(BN(calibration(x))): CGRSeg's `RCM`, the MLP of 1x1 convs with GELU, gamma a layer scale."""

    def __init__(self, channels: int, band_kernel_size: int, square_kernel_size: int, mlp_ratio: float):
        super().__init__()
        self.calibration = RectangularCalibration(channels, band_kernel_size, square_kernel_size)
        self.norm = nn.BatchNorm2d(channels)
        hidden = int(mlp_ratio * channels)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        self.scale = nn.Parameter(torch.full((channels,), 1e-6))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.mlp(self.norm(self.calibration(hidden_states)))
        return hidden_states + output * self.scale[:, None, None]


class SemanticInjection(nn.Module):
    """CGRSeg's fusion of a level's refined map with its share of the global context: 1x1 conv + BN of each, the
    context's through a hard sigmoid and upsampled (bilinear) as a gate."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.local_embedding = SSAMMSegConvModule(in_channels, channels, activation=False)
        self.global_gate = SSAMMSegConvModule(in_channels, channels, activation=False)

    def forward(self, local: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        gate = F.interpolate(F.relu6(self.global_gate(context) + 3) / 6, size=local.shape[2:], mode="bilinear",
                             align_corners=False)
        return self.local_embedding(local) * gate


class ZeroStartConv2d(nn.Conv2d):
    """A conv whose weight and bias start at zero (`SSAPreTrainedModel._init_weights`): the last layer of CGRSeg's
    channel gate, so that the gate starts neutral."""


class DynamicPrototypeGuidance(nn.Module):
    """The second stage of the published CGRSeg (`DPGHead`, its baseline here): class contexts gathered from the
    first prediction are pooled by an attention over the classes and scale the feature's channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.class_attention = nn.Conv2d(channels, 1, 1)
        self.channel_gate = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.LayerNorm([channels, 1, 1]), nn.ReLU(),
                                          ZeroStartConv2d(channels, channels, 1))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        batch, channels = features.shape[:2]
        probabilities = logits.flatten(2).softmax(dim=2)  # (B, K, N): each class's distribution over pixels
        contexts = torch.bmm(probabilities, features.flatten(2).transpose(1, 2))  # (B, K, C) class contexts
        contexts = contexts.transpose(1, 2)[..., None]  # (B, C, K, 1)
        weights = self.class_attention(contexts).flatten(2).softmax(dim=2)  # (B, 1, K)
        pooled = torch.bmm(contexts.flatten(2), weights.transpose(1, 2)).view(batch, channels, 1, 1)
        return features * torch.sigmoid(self.channel_gate(pooled))


class SSACGRDecodeHead(SSADecodeHead):
    """CGRSeg's head (Ni et al., ECCV 2024), ending in the SSA classifier as the official `CGRSeg_ssa`: all levels
    pooled to a 64th of the image and refined together by rectangular calibration blocks (the global context); then,
    from the coarsest level down, each level (plus the upsampled result of the level below, by a 1x1 conv) is refined
    and fused with its share of the context; the finest result, through a depth-wise 1x1 conv + BN + ReLU
    (`linear_fuse`), is F. The published CGRSeg's second stage (`DynamicPrototypeGuidance` and a second pass of the
    classifier) is built only for the plain baseline (`classifier_type="plain"`): SSA replaces it."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        channels = config.decoder_hidden_size
        self.in_channels = list(in_channels)
        self.context = nn.Sequential(*(RectangularCalibrationBlock(sum(in_channels), config.cgr_context_band_size,
                                                                   config.cgr_square_kernel_size, config.cgr_mlp_ratio)
                                       for _ in range(config.cgr_context_blocks)))
        self.refinements = nn.ModuleList(RectangularCalibrationBlock(size, config.cgr_band_size,
                                                                     config.cgr_square_kernel_size,
                                                                     config.cgr_mlp_ratio) for size in in_channels)
        self.injections = nn.ModuleList(SemanticInjection(size, channels) for size in in_channels)
        self.top_down = nn.ModuleList(nn.Conv2d(channels, size, 1) for size in in_channels[:-1])
        self.linear_fuse = SSAMMSegConvModule(channels, channels, groups=channels)
        self.classifier = build_classifier(config)
        self.prototype_guidance = DynamicPrototypeGuidance(channels) if config.classifier_type == "plain" else None

    def refine(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The map before `linear_fuse` (B, C, h/8, w/8), from the feature maps at strides 8, 16, 32."""
        if feature_maps[0].device.type == "cpu":  # the head's depth-wise convs run ~15% faster pixel-major there
            feature_maps = [m.contiguous(memory_format=torch.channels_last) for m in feature_maps]
        last = feature_maps[-1]
        size = ((last.shape[2] - 1) // 2 + 1, (last.shape[3] - 1) // 2 + 1)  # the coarsest level at stride 2
        pooled = torch.cat([adaptive_avg_pool(m, size) for m in feature_maps], dim=1)
        contexts = self.context(pooled).split(self.in_channels, dim=1)
        result = None
        for level in range(len(feature_maps) - 1, -1, -1):
            local = feature_maps[level]
            if result is not None:
                local = local + self.top_down[level](F.interpolate(result, size=local.shape[2:], mode="bilinear",
                                                                   align_corners=False))
            result = self.injections[level](self.refinements[level](local), contexts[level])
        return result

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F at the first feature map's resolution."""
        return self.linear_fuse(self.refine(feature_maps))

    def plain_logits(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The published CGRSeg: the classifier on F, then on the prototype-guided map plus itself."""
        refined = self.refine(feature_maps)
        first = self.classifier(self.linear_fuse(refined)).logits
        return self.classifier(self.prototype_guidance(refined, first) + refined).logits


class SSASqueezeDecodeHead(SSADecodeHead):
    """AFFormer's light head (`CLS`): a 1x1 conv + GN + ReLU (`squeeze`) of the last feature map is F (as the
    official `CLS_ssa`; its `align` conv is built but never called, and is left out here)."""

    def __init__(self, config, in_channels: list[int]):
        super().__init__()
        self.squeeze = SSAGroupNormConvModule(in_channels[-1], config.decoder_hidden_size)
        self.classifier = build_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F at the last feature map's resolution."""
        return self.squeeze(feature_maps[-1])


DECODE_HEADS = {
    "segformer": SSASegformerDecodeHead,
    "segformer_mmseg": SSASegformerMMSegDecodeHead,
    "upernet": SSAUperNetDecodeHead,
    "seaformer": SSASeaFormerDecodeHead,
    "ham": SSAHamDecodeHead,
    "cgr": SSACGRDecodeHead,
    "afformer": SSASqueezeDecodeHead,
}


__all__ = ["DECODE_HEADS", "DynamicPrototypeGuidance", "Hamburger", "NonNegativeMatrixFactorization",
           "RectangularCalibration", "RectangularCalibrationBlock", "SSAAuxiliaryHead", "SSACGRDecodeHead",
           "SSAConvModule", "SSADecodeHead", "SSAGroupNormConvModule", "SSAHamDecodeHead", "SSAMMSegConvModule",
           "SSASeaFormerDecodeHead", "SSASegformerDecodeHead", "SSASegformerMMSegDecodeHead", "SSASqueezeDecodeHead",
           "SSAUperNetDecodeHead", "SeaFormerFusionBlock", "SemanticInjection", "ZeroStartConv2d"]
