"""The ADM UNet (guided-diffusion's ``UNetModel``), written to export cleanly to ONNX.

Architecture and ``state_dict`` layout follow openai/guided-diffusion
(``guided_diffusion/unet.py`` and ``script_util.py:create_model``, Dhariwal & Nichol 2021), so
the public checkpoints (e.g. ``256x256_diffusion_uncond.pt``) load unchanged. Differences are in
how the forward pass is written, not in what it computes: attention uses ``matmul`` and slicing
instead of ``einsum``/``split`` so the ONNX graph is valid at opset 17.

Three options beyond guided-diffusion, all off by default so the original configurations are
reproduced exactly: ``norm_groups`` (fewer GroupNorm groups for narrow models; parameters do not
depend on it), ``patch_size`` (space-to-depth in front of the network, depth-to-space behind
it, so a small prior runs its convolutions at 1/patch_size resolution) and ``parameterization``
(``"v"``: the network body predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022,
"Progressive distillation", section 4) and ``forward`` turns it into
eps = sqrt(abar) v + sqrt(1 - abar) x_t with the training schedule's abar_t, parameter-free). Either
way ``forward`` returns epsilon, the model-file contract. The v form spares a small network from
reproducing x_t to the precision that an epsilon output needs at high noise, where the x0 estimate
(x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies every error in eps by sqrt(1/SNR) (~58 at t = 900).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.schedule import ADM_LINEAR, alphas_cumprod

DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

# Keyword arguments of guided-diffusion's create_model, with its defaults, plus ours.
CONFIG_DEFAULTS: Dict[str, Any] = {
    "image_size": 256,
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": "",
    "learn_sigma": False,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "16",
    "num_heads": 1,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": False,
    "dropout": 0.0,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
    "in_channels": 3,
    "norm_groups": 32,
    "patch_size": 1,
    "parameterization": "epsilon",
}
PARAMETERIZATIONS = ("epsilon", "v")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (as guided-diffusion does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def normalization(channels: int, groups: int) -> GroupNorm32:
    return GroupNorm32(min(groups, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


class Upsample(nn.Module):
    """Nearest-neighbour x2, optionally followed by a 3x3 convolution (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (key ``op``), or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding, optionally resampling (up/down)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: Optional[int] = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False,
                 norm_groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels, norm_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels, norm_groups), nn.SiLU(), nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions (legacy or new QKV channel order)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False, norm_groups: int = 32):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.new_order = use_new_attention_order
        self.head_channels = channels // self.num_heads
        self.norm = normalization(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        x = x.reshape(b, c, height * width)
        qkv = self.qkv(self.norm(x))
        h = self.proj_out(self._attend(qkv))
        return (x + h).reshape(b, c, height, width)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        b, _, length = qkv.shape
        heads, ch = self.num_heads, self.head_channels
        if self.new_order:  # [q(all heads) | k | v]
            q = qkv[:, :heads * ch].reshape(b * heads, ch, length)
            k = qkv[:, heads * ch:2 * heads * ch].reshape(b * heads, ch, length)
            v = qkv[:, 2 * heads * ch:].reshape(b * heads, ch, length)
        else:  # legacy: per head [q | k | v]
            per_head = qkv.reshape(b * heads, 3 * ch, length)
            q, k, v = per_head[:, :ch], per_head[:, ch:2 * ch], per_head[:, 2 * ch:]
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        weight = torch.matmul((q * scale).transpose(1, 2), k * scale)  # (b*heads, t, s)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        a = torch.matmul(v, weight.transpose(1, 2))  # (b*heads, ch, t)
        return a.reshape(b, heads * ch, length)


class TimestepEmbedSequential(nn.Sequential):
    """A sequence whose ResBlocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    """guided-diffusion's UNet: input_blocks, middle_block, output_blocks with skip connections."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), conv_resample: bool = True,
                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False, norm_groups: int = 32, patch_size: int = 1,
                 parameterization: str = "epsilon"):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.patch_size = patch_size
        self.parameterization = parameterization
        if parameterization == "v":
            # Rows t: (sqrt(abar_t), sqrt(1 - abar_t)) of the training schedule; not a parameter. On the
            # CPU even when the model is built on the meta device (checkpoint.load_model): no weights fill it.
            abar = alphas_cumprod(ADM_LINEAR)
            table = torch.tensor(np.stack([np.sqrt(abar), np.sqrt(1 - abar)], 1), dtype=torch.float32, device="cpu")
            self.register_buffer("v_to_eps", table, persistent=False)
        self.downsample_factor = patch_size * 2 ** (len(channel_mult) - 1)
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm,
                            norm_groups=norm_groups, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order, norm_groups)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([
            TimestepEmbedSequential(nn.Conv2d(in_channels * patch_size ** 2, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: List[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)))
                input_block_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + input_block_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch, norm_groups), nn.SiLU(),
            zero_module(nn.Conv2d(input_ch, out_channels * patch_size ** 2, 3, padding=1)))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the body runs in: that of the convolutions (guided-diffusion's ``UNetModel.dtype``)."""
        return next(self.input_blocks.parameters()).dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Epsilon (plus variance channels if learned) for x at training steps t (integers 0...999)."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.to(self.dtype)
        if self.patch_size > 1:
            h = F.pixel_unshuffle(h, self.patch_size)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.out(h)
        if self.patch_size > 1:
            h = F.pixel_shuffle(h, self.patch_size)
        if self.parameterization == "v":  # in float32 even for a float16 body: eps feeds a 1/sqrt(abar) gain
            rows = self.v_to_eps[timesteps.clamp(0, len(self.v_to_eps) - 1).long()][:, :, None, None]
            eps = rows[:, :1] * h[:, :self.in_channels].float() + rows[:, 1:] * x.float()
            h = torch.cat([eps, h[:, self.in_channels:].float()], dim=1)
        return h


def resolve_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Complete a create_model-style config with defaults; reject unknown or unsupported keys."""
    unknown = sorted(set(config) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
    cfg = {**CONFIG_DEFAULTS, **config}
    if cfg["class_cond"]:
        raise ValueError("class_cond models are not supported: fusion needs an unconditional prior")
    if cfg["in_channels"] not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {cfg['in_channels']}")
    if cfg["parameterization"] not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                         f"got {cfg['parameterization']!r}")
    return cfg


def unet_arguments(config: Dict[str, Any]) -> Dict[str, Any]:
    """UNetModel arguments derived from create_model keywords, as guided-diffusion derives them."""
    cfg = resolve_config(config)
    size = cfg["image_size"]
    if cfg["channel_mult"] == "":
        if size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {size}")
        channel_mult: Tuple[float, ...] = DEFAULT_CHANNEL_MULT[size]
    else:
        channel_mult = tuple(int(m) for m in str(cfg["channel_mult"]).split(","))
    attention = str(cfg["attention_resolutions"]).strip()
    attention_ds = tuple(size // int(r) for r in attention.split(",")) if attention else ()
    return dict(
        in_channels=cfg["in_channels"], model_channels=cfg["num_channels"],
        out_channels=cfg["in_channels"] * (2 if cfg["learn_sigma"] else 1),
        num_res_blocks=cfg["num_res_blocks"], attention_resolutions=attention_ds, dropout=cfg["dropout"],
        channel_mult=channel_mult, num_heads=cfg["num_heads"], num_head_channels=cfg["num_head_channels"],
        num_heads_upsample=cfg["num_heads_upsample"], use_scale_shift_norm=cfg["use_scale_shift_norm"],
        resblock_updown=cfg["resblock_updown"], use_new_attention_order=cfg["use_new_attention_order"],
        norm_groups=cfg["norm_groups"], patch_size=cfg["patch_size"], parameterization=cfg["parameterization"])


def create_model(**config: Any) -> UNetModel:
    """Build a UNetModel from guided-diffusion ``create_model`` keywords (plus in_channels etc.)."""
    return UNetModel(**unet_arguments(config))
