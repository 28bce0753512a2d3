"""VM-UNet against the facts of the original (JCruan519/VM-UNet)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from napari_vmunet.model import VMUNet, selective_scan_reference
from napari_vmunet.model.vmunet import SS2D, PatchExpand
from tiny_models import TINY

DATA = Path(__file__).parent / 'data'


def test_state_dict_keys_and_shapes_match_the_original_exactly():
    expected = (DATA / 'vmunet_isic_state_dict.txt').read_text().splitlines()
    model = VMUNet()
    got = [f'{k}: {list(v.shape)}' for k, v in model.state_dict().items()]
    assert got == expected  # same keys, same order, same shapes
    assert len(got) == 222
    assert sum(p.numel() for p in model.parameters()) == 27_427_561


def test_synapse_config_parameter_count():
    model = VMUNet(num_classes=9)
    assert sum(p.numel() for p in model.parameters()) == 27_427_761
    assert model.state_dict()['vmunet.final_conv.weight'].shape == (9, 24, 1, 1)


def test_drop_path_schedule_is_the_original():
    model = VMUNet()
    enc = [b.drop_path.drop_prob for layer in model.vmunet.layers for b in layer.blocks]
    dec = [
        b.drop_path.drop_prob for layer in model.vmunet.layers_up for b in layer.blocks
    ]
    assert enc == pytest.approx([0.2 * i / 7 for i in range(8)], abs=1e-6)
    assert dec == pytest.approx([0.2 * (6 - i) / 6 for i in range(7)], abs=1e-6)


def test_ss2d_initialisation_follows_the_original():
    ss2d = SS2D(d_model=96)
    assert ss2d.dt_rank == 6 and ss2d.d_inner == 192
    assert torch.allclose(
        -torch.exp(ss2d.A_logs[5]), -torch.arange(1, 17, dtype=torch.float32)
    )
    assert torch.all(ss2d.Ds == 1)
    dt = F.softplus(ss2d.dt_projs_bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    assert ss2d.x_proj_weight.abs().max() <= 192**-0.5
    assert ss2d.dt_projs_weight.abs().max() <= 6**-0.5


def original_forward_corev0(ss2d: SS2D, x: torch.Tensor) -> torch.Tensor:
    """The original ``SS2D.forward_corev0``, transcribed literally
    (channels-first tensors, stack/flip cross-scan, reference scan)."""
    B, C, H, W = x.shape
    L = H * W
    K = 4
    x_hwwh = torch.stack(
        [
            x.view(B, -1, L),
            torch.transpose(x, dim0=2, dim1=3).contiguous().view(B, -1, L),
        ],
        dim=1,
    ).view(B, 2, -1, L)
    xs = torch.cat([x_hwwh, torch.flip(x_hwwh, dims=[-1])], dim=1)
    x_dbl = torch.einsum(
        'b k d l, k c d -> b k c l', xs.view(B, K, -1, L), ss2d.x_proj_weight
    )
    R, N = ss2d.dt_rank, ss2d.d_state
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum(
        'b k r l, k d r -> b k d l', dts.view(B, K, -1, L), ss2d.dt_projs_weight
    )
    xs = xs.float().view(B, -1, L)
    dts = dts.contiguous().float().view(B, -1, L)
    Bs = Bs.float().view(B, K, -1, L)
    Cs = Cs.float().view(B, K, -1, L)
    Ds = ss2d.Ds.float().view(-1)
    As = -torch.exp(ss2d.A_logs.float()).view(-1, N)
    dt_projs_bias = ss2d.dt_projs_bias.float().view(-1)
    out_y = selective_scan_reference(
        xs, dts, As, Bs, Cs, Ds, z=None, delta_bias=dt_projs_bias, delta_softplus=True
    ).view(B, K, -1, L)
    inv_y = torch.flip(out_y[:, 2:4], dims=[-1]).view(B, 2, -1, L)
    wh_y = (
        torch.transpose(out_y[:, 1].view(B, -1, W, H), dim0=2, dim1=3)
        .contiguous()
        .view(B, -1, L)
    )
    invwh_y = (
        torch.transpose(inv_y[:, 1].view(B, -1, W, H), dim0=2, dim1=3)
        .contiguous()
        .view(B, -1, L)
    )
    y = out_y[:, 0] + inv_y[:, 0] + wh_y + invwh_y
    return torch.transpose(y, dim0=1, dim1=2).contiguous().view(B, H, W, -1)


def original_ss2d_forward(ss2d: SS2D, x: torch.Tensor) -> torch.Tensor:
    xz = ss2d.in_proj(x)
    x, z = xz.chunk(2, dim=-1)
    x = x.permute(0, 3, 1, 2).contiguous()
    x = ss2d.act(ss2d.conv2d(x))
    y = original_forward_corev0(ss2d, x)
    y = ss2d.out_norm(y)
    y = y * F.silu(z)
    return ss2d.out_proj(y)


@pytest.mark.parametrize('backend', ['torch', 'numba', 'reference'])
@pytest.mark.parametrize('hw', [(8, 12), (12, 8), (16, 16)])
def test_ss2d_matches_the_original_on_non_square_maps(backend, hw):
    """64x96 images give 16x24 maps at stage 1: an H/W mix-up in the
    cross-scan or cross-merge shows up only when H != W."""
    torch.manual_seed(0)
    ss2d = SS2D(d_model=16).eval()
    ss2d.scan_backend = backend
    with torch.no_grad():
        ss2d.A_logs.add_(0.1 * torch.randn_like(ss2d.A_logs))
        x = torch.randn(2, *hw, 16)
        want = original_ss2d_forward(ss2d, x)
        got = ss2d(x)
    assert got.shape == want.shape == (2, *hw, 16)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize('backend', ['torch', 'numba'])
@pytest.mark.parametrize('hw', [(8, 12), (12, 8)])
def test_ss2d_gradients_match_the_original(hw, backend):
    """The cross-scan and cross-merge have hand-written gradients (each the
    other's transpose), the projections run as other products: every
    gradient, of the input and of each parameter, is the original's."""
    torch.manual_seed(1)
    ss2d = SS2D(d_model=24)
    ss2d.scan_backend = backend
    with torch.no_grad():
        ss2d.A_logs.add_(0.1 * torch.randn_like(ss2d.A_logs))
        ss2d.Ds.add_(0.1 * torch.randn_like(ss2d.Ds))
    x = torch.randn(3, *hw, 24)
    g = torch.randn(3, *hw, 24)
    results = []
    for forward in (original_ss2d_forward, lambda m, v: m(v)):
        ss2d.zero_grad()
        leaf = x.clone().requires_grad_()
        forward(ss2d, leaf).backward(g)
        results.append(
            {'x': leaf.grad}
            | {name: p.grad.clone() for name, p in ss2d.named_parameters()}
        )
    want, got = results
    assert want.keys() == got.keys() and len(want) == 12  # x and 11 parameters
    for name in want:
        scale = want[name].abs().max()
        assert scale > 0, name
        assert (got[name] - want[name]).abs().max() <= 1e-5 * scale, name


def test_patch_expand_pixel_shuffle_order():
    """Channel (p1*s + p2)*c_out + c goes to pixel (s*h + p1, s*w + p2)
    (einops 'b h w (p1 p2 c) -> b (h p1) (w p2) c')."""
    pe = PatchExpand(in_dim=8, out_dim=4, scale=2)
    with torch.no_grad():
        pe.norm.weight.fill_(1)
        pe.norm.bias.zero_()
        x = torch.randn(1, 3, 5, 8)
        expanded = pe.expand(x)
        out = pe(x)
    for p1 in range(2):
        for p2 in range(2):
            chunk = expanded[..., (p1 * 2 + p2) * 4 : (p1 * 2 + p2 + 1) * 4]
            want = F.layer_norm(chunk, (4,))
            torch.testing.assert_close(out[:, p1::2, p2::2], want)


@pytest.mark.parametrize('size', [(64, 96), (96, 64), (32, 32)])
def test_forward_shapes_outputs_and_backends_agree(size):
    torch.manual_seed(1)
    model = VMUNet(num_classes=1, **TINY).eval()
    x = torch.rand(2, 3, *size) * 255
    with torch.no_grad():
        prob = model(x)
        model.set_scan_backend('reference')
        prob_ref = model(x)
    assert prob.shape == (2, 1, *size)
    assert prob.min() >= 0 and prob.max() <= 1  # sigmoid for one class
    assert (prob - prob_ref).abs().max() < 1e-5


def test_multiclass_returns_logits_and_grey_input_is_repeated():
    torch.manual_seed(2)
    model = VMUNet(num_classes=3, **TINY).eval()
    grey = torch.rand(1, 1, 64, 64) * 255
    with torch.no_grad():
        out = model(grey)
        out_rgb = model(grey.repeat(1, 3, 1, 1))
    assert out.shape == (1, 3, 64, 64)
    assert out.min() < 0 or out.max() > 1  # raw logits, no softmax
    torch.testing.assert_close(out, out_rgb)


def test_single_channel_model_takes_single_channel_input():
    model = VMUNet(input_channels=1, **TINY).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match='1 input channels, got 2'):
        model(torch.rand(1, 2, 32, 32))


def test_sizes_not_divisible_by_32_are_refused_with_advice():
    model = VMUNet(**TINY)
    with pytest.raises(ValueError, match='divisible by 32.*pad'):
        model(torch.rand(1, 3, 48, 64))


def test_training_step_reduces_loss_with_the_fast_scan():
    torch.manual_seed(3)
    model = VMUNet(**TINY, drop_path_rate=0.0)
    x = torch.rand(2, 3, 32, 32) * 255
    target = (x.mean(1, keepdim=True) > 127).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.binary_cross_entropy(model(x), target)
        loss.backward()
        assert all(
            torch.isfinite(p.grad).all()
            for p in model.parameters()
            if p.grad is not None
        )
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_gradients_match_between_fast_and_reference_scan():
    torch.manual_seed(4)
    model = VMUNet(num_classes=2, **TINY).eval()
    x = torch.rand(1, 3, 32, 64) * 255
    grads = {}
    for backend in ('torch', 'numba', 'reference'):
        model.zero_grad()
        model.set_scan_backend(backend)
        model(x).square().mean().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for fast in ('torch', 'numba'):
        for name, g in grads[fast].items():
            ref = grads['reference'][name]
            assert (g - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-12, (fast, name)


def test_unknown_scan_backend_is_refused():
    with pytest.raises(ValueError, match='unknown scan backend'):
        VMUNet(**TINY).set_scan_backend('cuda')
