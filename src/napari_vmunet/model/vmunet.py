"""VM-UNet (Ruan et al. 2024): a U-Net built only from visual state-space
blocks, written to be state-dict compatible with JCruan519/VM-UNet.

Module attribute names, registration order, parameter shapes, initialisation
and forward arithmetic follow the original ``models/vmunet/vmamba.py`` /
``vmunet.py`` (VMamba "v0" SS2D), so the original ``best.pth`` files load
unchanged and give the same outputs.  What differs is *how* the SS2D core is
computed: tensors are built time-major ``(L, batch, K, Di)`` for our fast
scan (see :mod:`.scan`) instead of ``(batch, K*Di, L)``, which removes every
transpose around the scan.  The arithmetic is the same.

Shapes: feature maps between modules are channels-last ``(B, H, W, C)``;
``C`` is a stage width, ``Di = 2C`` the SS2D inner width, ``N = d_state``,
``R = ceil(C / 16)`` the rank of the step-size projection and ``K = 4`` the
scan directions (row-major, column-major and both reversed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .scan import BACKENDS, selective_scan

K_DIRECTIONS = 4


class DropPath(nn.Module):
    """Stochastic depth per sample, as timm's ``DropPath`` (identity in eval)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep) * mask

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


class PatchEmbed2D(nn.Module):
    """4x4/4 convolution to channels-last tokens, then LayerNorm."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging2D(nn.Module):
    """2x downsampling: concatenate 2x2 neighbours (4C), norm, project to 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
            dim=-1,
        )
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Upsampling by ``scale``: linear expansion, pixel shuffle, LayerNorm.

    ``PatchExpand2D`` (scale 2, input width ``2*dim``, output ``dim``) and
    ``Final_PatchExpand2D`` (scale 4, width ``dim`` -> ``dim // 4``) of the
    original are both this module.  The expanded channel
    ``(p1 * scale + p2) * c_out + c`` goes to pixel ``(scale*h + p1,
    scale*w + p2)``.
    """

    def __init__(self, in_dim: int, out_dim: int, scale: int):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        s = self.scale
        x = self.expand(x).view(B, H, W, s, s, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, H * s, W * s, -1)
        return self.norm(x)


def _cross_scan(x: torch.Tensor) -> torch.Tensor:
    """``(B, Di, H, W)`` -> time-major ``(L, B, K, Di)``: row-major,
    column-major, and both reversed (original ``xs`` order)."""
    B, C, H, W = x.shape
    xs = x.new_empty(H * W, B, K_DIRECTIONS, C)
    xs[:, :, 0] = x.permute(2, 3, 0, 1).reshape(H * W, B, C)
    xs[:, :, 1] = x.permute(3, 2, 0, 1).reshape(H * W, B, C)
    xs[:, :, 2:] = xs[:, :, :2].flip(0)
    return xs


def _cross_merge(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Sum the four directions of ``(L, B, K, Di)`` back into row-major
    ``(B, H, W, Di)`` (contiguous), adding in the original's order."""
    L, B, _, C = y.shape

    def col_to_row(v: torch.Tensor) -> torch.Tensor:
        return v.view(W, H, B, C).transpose(0, 1).reshape(L, B, C)

    rev = y[:, :, 2:].flip(0)
    out = y[:, :, 0] + rev[:, :, 0]
    out = out + col_to_row(y[:, :, 1])
    merged = y.new_empty(B, H, W, C)
    # the last sum written straight in (B, H, W, C) order: LayerNorm, next,
    # would otherwise copy it there
    into = merged.permute(1, 2, 0, 3).view(L, B, C)
    torch.add(out, col_to_row(rev[:, :, 1]), out=into)
    return merged


class _CrossScan(torch.autograd.Function):
    """:func:`_cross_scan` whose gradient is :func:`_cross_merge` (each is
    the other's transpose), as VMamba's own ``CrossScan``.

    Built from slice assignments, flips and selects, autograd's version
    clones and zero-fills the full ``(L, B, K, Di)`` gradient once per
    assignment and per select; this is one pass each way.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.hw = x.shape[-2:]
        return _cross_scan(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return _cross_merge(g, *ctx.hw).permute(0, 3, 1, 2)


class _CrossMerge(torch.autograd.Function):
    """:func:`_cross_merge` whose gradient is :func:`_cross_scan`."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return _cross_merge(y, H, W)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return _cross_scan(g.permute(0, 3, 1, 2)), None, None


class SS2D(nn.Module):
    """2-D selective scan (VMamba v0 ``SS2D`` with ``forward_corev0``).

    in_proj -> (x, z); x -> depthwise 3x3 conv -> SiLU -> scanned along four
    directions with per-direction projections -> the four outputs summed ->
    LayerNorm -> gated by SiLU(z) -> out_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = di = int(expand * d_model)
        self.dt_rank = rank = math.ceil(d_model / 16)
        k = K_DIRECTIONS
        self.scan_backend = 'auto'

        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv2d = nn.Conv2d(
            di, di, d_conv, padding=(d_conv - 1) // 2, groups=di, bias=True
        )
        self.act = nn.SiLU()
        # per-direction projections, stacked as in the original (which builds
        # four nn.Linear, stacks their weights and deletes them)
        bound = di**-0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(k, rank + 2 * d_state, di).uniform_(-bound, bound)
        )
        self.dt_projs_weight = nn.Parameter(
            torch.empty(k, di, rank).uniform_(-(rank**-0.5), rank**-0.5)
        )
        dt = torch.exp(
            torch.rand(k, di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(
                k * di, 1
            )
        )
        self.Ds = nn.Parameter(torch.ones(k * di))
        self.out_norm = nn.LayerNorm(di)
        self.out_proj = nn.Linear(di, d_model, bias=False)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, Di, H, W)`` after conv+SiLU -> ``y (B, H, W, Di)`` fp32."""
        B, C, H, W = x.shape
        L, N, R, K = H * W, self.d_state, self.dt_rank, K_DIRECTIONS
        xs = _CrossScan.apply(x)  # (L, B, K, Di)
        # the per-direction projections as one batched product over
        # (K, L*B) and one product with the block-diagonal stack of the step
        # projections: the same sums as the original's two einsums, whose
        # (L*B, 2) x (2, Di)-shaped batched products cost 15 % more here
        x_dbl = torch.bmm(
            xs.view(L * B, K, C).transpose(0, 1), self.x_proj_weight.transpose(1, 2)
        )  # (K, L*B, R + 2N)
        dts, Bs, Cs = torch.split(x_dbl.transpose(0, 1), [R, N, N], dim=-1)
        dts = F.linear(
            dts.reshape(L * B, K * R), torch.block_diag(*self.dt_projs_weight)
        )  # (L*B, K*Di), time-major as the scan takes it
        y = selective_scan(
            xs.view(L, B, -1).float(),
            dts.view(L, B, -1).float(),
            -torch.exp(self.A_logs.float()),
            Bs.view(L, B, K, N).float(),
            Cs.view(L, B, K, N).float(),
            self.Ds.float(),
            z=None,
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True,
            backend=self.scan_backend,
            time_major=True,
        )
        return _CrossMerge.apply(y.view(L, B, K, C), H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.forward_core(x)
        y = self.out_norm(y.to(z.dtype))
        return self.out_proj(y * F.silu(z))


class VSSBlock(nn.Module):
    """``x + DropPath(SS2D(LayerNorm(x)))`` -- VMamba v0 has no MLP."""

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, d_state: int = 16):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = SS2D(d_model=hidden_dim, d_state=d_state)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


class VSSLayer(nn.Module):
    """Encoder stage: blocks, then (optional) 2x patch merging."""

    def __init__(
        self, dim: int, drop_path: Sequence[float], d_state: int, downsample: bool
    ):
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, p, d_state) for p in drop_path)
        self.downsample = PatchMerging2D(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class VSSLayerUp(nn.Module):
    """Decoder stage: (optional) 2x patch expansion, then blocks."""

    def __init__(
        self, dim: int, drop_path: Sequence[float], d_state: int, upsample: bool
    ):
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, p, d_state) for p in drop_path)
        self.upsample = PatchExpand(2 * dim, dim, 2) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


def _drop_path_rates(rate: float, depths: Sequence[int], reverse: bool) -> list:
    dpr = [p.item() for p in torch.linspace(0, rate, sum(depths))]
    if reverse:
        dpr = dpr[::-1]
    out, start = [], 0
    for d in depths:
        out.append(dpr[start : start + d])
        start += d
    return out


class VSSM(nn.Module):
    """The encoder-decoder held by :class:`VMUNet` as ``.vmunet``."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1,
        depths: Sequence[int] = (2, 2, 2, 2),
        depths_decoder: Sequence[int] = (2, 2, 2, 1),
        dims: Sequence[int] = (96, 192, 384, 768),
        dims_decoder: Sequence[int] | None = None,
        d_state: int = 16,
        drop_path_rate: float = 0.2,
    ):
        super().__init__()
        dims = list(dims)
        dims_decoder = list(dims_decoder or dims[::-1])
        self.num_layers = len(depths)
        self.patch_embed = PatchEmbed2D(4, in_chans, dims[0])
        self.pos_drop = nn.Dropout(p=0.0)
        enc = _drop_path_rates(drop_path_rate, depths, reverse=False)
        dec = _drop_path_rates(drop_path_rate, depths_decoder, reverse=True)
        self.layers = nn.ModuleList(
            VSSLayer(dims[i], enc[i], d_state, downsample=i < self.num_layers - 1)
            for i in range(self.num_layers)
        )
        self.layers_up = nn.ModuleList(
            VSSLayerUp(dims_decoder[i], dec[i], d_state, upsample=i != 0)
            for i in range(len(depths_decoder))
        )
        self.final_up = PatchExpand(dims_decoder[-1], dims_decoder[-1] // 4, 4)
        self.final_conv = nn.Conv2d(dims_decoder[-1] // 4, num_classes, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        # skip[0] (the patch embedding) is never used; skips are added
        # before each decoder stage upsamples
        for i, layer in enumerate(self.layers_up):
            x = layer(x if i == 0 else x + skips[-i])
        x = self.final_up(x).permute(0, 3, 1, 2)
        return self.final_conv(x)


class VMUNet(nn.Module):
    """VM-UNet: state-dict compatible with JCruan519/VM-UNet's ``VMUNet``.

    All parameters live under ``vmunet.``.  ``forward`` takes ``(B, C, H, W)``
    floats with ``H`` and ``W`` divisible by 32 (the original's input range is
    0-255 after per-image min-max scaling), repeats a single channel to three
    when the model expects three, and returns probabilities (sigmoid) for one
    class or logits for several -- exactly as the original.
    """

    def __init__(
        self,
        num_classes: int = 1,
        input_channels: int = 3,
        depths: Sequence[int] = (2, 2, 2, 2),
        depths_decoder: Sequence[int] = (2, 2, 2, 1),
        dims: Sequence[int] = (96, 192, 384, 768),
        dims_decoder: Sequence[int] | None = None,
        d_state: int = 16,
        drop_path_rate: float = 0.2,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.input_channels = input_channels
        self.config = {
            'num_classes': num_classes,
            'input_channels': input_channels,
            'depths': list(depths),
            'depths_decoder': list(depths_decoder),
            'dims': list(dims),
            'dims_decoder': list(dims_decoder or list(dims)[::-1]),
            'd_state': d_state,
            'drop_path_rate': drop_path_rate,
        }
        self.vmunet = VSSM(
            in_chans=input_channels,
            num_classes=num_classes,
            depths=depths,
            depths_decoder=depths_decoder,
            dims=dims,
            dims_decoder=dims_decoder,
            d_state=d_state,
            drop_path_rate=drop_path_rate,
        )

    #: Input height and width must be multiples of this.
    size_multiple = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        return torch.sigmoid(logits) if self.num_classes == 1 else logits

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's raw output for every class count (``forward``
        without the one-class sigmoid); the bioimage.io export names it."""
        if x.ndim != 4:
            raise ValueError(
                f'expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}'
            )
        H, W = x.shape[-2:]
        m = self.size_multiple
        if H % m or W % m:
            raise ValueError(
                f'VM-UNet needs height and width divisible by {m}, got {H}x{W}; '
                'pad the image (napari_vmunet.inference.Predictor does this)'
            )
        if x.shape[1] == 1 and self.input_channels != 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != self.input_channels:
            raise ValueError(
                f'the model takes {self.input_channels} input channels, '
                f'got {x.shape[1]}'
            )
        return self.vmunet(x)

    def set_scan_backend(self, backend: str) -> None:
        """Use ``backend`` (``auto``/``torch``/``numba``/``reference``/``mamba``/
        ``triton``) in every SS2D block."""
        if backend not in BACKENDS:
            raise ValueError(f'unknown scan backend {backend!r}; use one of {BACKENDS}')
        for m in self.modules():
            if isinstance(m, SS2D):
                m.scan_backend = backend
