"""The numba scan's own rules: where it runs, where it hands over to the torch
scan, its exp2, its threads, its checkpoints.  Its accuracy against the
reference at the VM-UNet stage shapes is in ``test_scan.py`` (``FAST``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from napari_vmunet.model import scan as S
from napari_vmunet.model import scan_numba
from napari_vmunet.model.scan import selective_scan, selective_scan_reference
from test_scan import NAMES, grads, loop_reference, make_inputs, rel_err


@pytest.fixture(autouse=True)
def _no_warm_up_running(monkeypatch):
    """A dock test earlier in the session may have started the background
    warm-up; these tests decide for themselves."""
    from napari_vmunet import _scan_warmup

    monkeypatch.setattr(_scan_warmup, '_process', None)


def test_exp2_matches_float64_to_a_float32_rounding_and_underflows_to_zero():
    from numba import njit

    from napari_vmunet.model._scan_numba_kernels import _exp2

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = _exp2(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [-rng.random(100_000) * 130, [0.0, -0.0, -1e-30, -0.5, -1, -126, -126.9]]
    ).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    want = np.exp2(x.astype(np.float64))
    normal = want > 2.0**-126
    assert np.max(np.abs(out - want)[normal] / want[normal]) < 2.5e-7
    assert np.all(out[~normal] <= 2.0**-126)  # underflow: 0 or the smallest normal
    deep = np.array([-127.0, -149.0, -1e4, -np.inf], dtype=np.float32)
    out = np.empty_like(deep)
    apply(deep, out)
    assert np.all(out == 0)
    nan = np.array([np.nan], dtype=np.float32)
    apply(nan, nan)
    assert np.isnan(nan[0])  # a NaN is not clamped into a plausible number


def test_decays_that_could_be_positive_go_to_the_torch_scan(monkeypatch):
    calls = []
    apply = scan_numba.NumbaSelectiveScan.apply
    monkeypatch.setattr(
        scan_numba.NumbaSelectiveScan,
        'apply',
        lambda *a: calls.append(1) or apply(*a),
    )
    inputs = make_inputs(1, 32, 30, seed=2)
    with torch.no_grad():
        selective_scan(**inputs, delta_softplus=True, backend='numba')
        assert calls == [1]
        # a positive A (growth), and a negative delta without softplus:
        # the kernels' exp2 is for non-positive exponents only
        grow = dict(inputs, A=inputs['A'].abs() * 0.01)
        neg = dict(inputs, delta_bias=None)
        for case, softplus in ((grow, True), (neg, False)):
            out = selective_scan(**case, delta_softplus=softplus, backend='numba')
            ref = selective_scan_reference(**case, delta_softplus=softplus)
            assert rel_err(out, ref) <= 1e-5
    assert calls == [1]


def test_nan_in_the_input_comes_out_as_nan_not_as_numbers():
    inputs = make_inputs(1, 32, 30, seed=3)
    inputs['delta'][0, 5, 10] = float('nan')
    with torch.no_grad():
        out = selective_scan(**inputs, delta_softplus=True, backend='numba')
        torch_out = selective_scan(**inputs, delta_softplus=True, backend='torch')
    assert torch.equal(torch.isnan(out), torch.isnan(torch_out))
    assert torch.isnan(out[0, 5, 10:]).all()  # that channel, from that step on
    assert torch.isfinite(out[0, :5]).all()


@pytest.mark.parametrize('block', [1, 3, 7, 64, 1000])
def test_any_checkpoint_interval_gives_the_same_gradients(block):
    inputs = make_inputs(2, 32, 45, seed=4)
    _, ref = grads(loop_reference, inputs, NAMES, torch.float64)
    _, fast = grads(
        lambda **kw: selective_scan(**kw, backend='numba', block=block),
        inputs,
        NAMES,
        torch.float32,
    )
    for name in NAMES:
        assert rel_err(fast[name], ref[name]) <= 1e-5, (block, name)


def test_checkpoints_fill_about_an_l2_cache():
    assert scan_numba.checkpoint_block(16, 48) == 64  # capped
    assert scan_numba.checkpoint_block(16, 384) == 10
    assert scan_numba.checkpoint_block(16, 4096) == scan_numba.MIN_BLOCK


def test_threads_share_the_rows_and_give_the_same_bits(monkeypatch):
    inputs = make_inputs(2, 64, 50, seed=5)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(grads(S.selective_scan, inputs, NAMES, torch.float32))
    finally:
        torch.set_num_threads(threads)
    (y1, g1), (y3, g3) = results
    assert torch.equal(y1, y3)
    for name in NAMES:
        assert torch.equal(g1[name], g3[name]), name


def test_rows_are_split_until_every_thread_has_one():
    from napari_vmunet.model.scan_torch import _row_split

    assert _row_split(192, 16, 49152, 4, fused=True) == 1 or torch.get_num_threads() > 4
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(16)
        assert _row_split(1536, 16, 49152, 4, fused=True) == 4  # 16 rows of 384
        assert _row_split(48, 16, 49152, 4, fused=True) == 1  # rows stay >= 32 wide
        assert _row_split(1536, 16, 49152, 4, fused=False) == 1  # the torch scan
    finally:
        torch.set_num_threads(threads)


def test_two_threads_scanning_at_once_both_get_their_own_result():
    """The dock predicts on a worker thread while, say, a notebook cell scans."""
    cases = [make_inputs(1, 64, 200, seed=s) for s in (6, 7)]
    with torch.no_grad():
        want = [
            selective_scan(**c, delta_softplus=True, backend='torch') for c in cases
        ]
    got, errors = [None, None], []

    def run(i):
        try:
            with torch.no_grad():
                for _ in range(5):
                    got[i] = selective_scan(**cases[i], delta_softplus=True)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    for g, w in zip(got, want, strict=True):
        assert rel_err(g, w) <= 1e-5


def test_without_numba_auto_is_the_torch_scan_and_says_why(monkeypatch):
    import napari_vmunet.model as model_package

    # as on a machine where numba does not import
    kernels = 'napari_vmunet.model._scan_numba_kernels'
    monkeypatch.setitem(sys.modules, kernels, None)
    monkeypatch.delattr(model_package, '_scan_numba_kernels', raising=False)
    caches = (scan_numba.load_kernels, S._auto_cpu)
    for cache in caches:
        cache.cache_clear()
    try:
        backend, why = S.backend_reason('cpu')
        assert backend == 'torch' and 'numba is not usable here' in why
        inputs = make_inputs(1, 16, 12)
        with torch.no_grad():
            out = selective_scan(**inputs, delta_softplus=True)  # auto: torch
        ref = selective_scan_reference(**inputs, delta_softplus=True)
        assert rel_err(out, ref) <= 1e-5
        with pytest.raises(scan_numba.NumbaUnavailableError, match='backend="torch"'):
            selective_scan(**inputs, backend='numba')
    finally:
        for cache in caches:
            cache.cache_clear()


def test_numba_imports_on_first_scan_not_with_the_package():
    code = (
        'import sys, napari_vmunet, napari_vmunet.model;'
        'assert "numba" not in sys.modules, "numba at import";'
        'from napari_vmunet.model.scan import backend_reason;'
        'print(backend_reason("cpu")[0])'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == 'numba'


def test_the_background_warm_up_compiles_and_auto_waits_for_it(monkeypatch):
    from napari_vmunet import _scan_warmup

    _scan_warmup.start()
    process = _scan_warmup._process
    assert process is not None
    if _scan_warmup.running():
        backend, why = S.backend_reason('cpu')
        assert backend == 'torch' and 'compiled in the background' in why
    assert process.wait(timeout=300) == 0
    assert not _scan_warmup.running()
    assert S.backend_reason('cpu')[0] == 'numba'
    _scan_warmup.start()  # once per session
    assert _scan_warmup._process is process


def test_warm_up_runs_every_kernel_in_process():
    scan_numba.warm_up()
    kernels = scan_numba.load_kernels()
    for name in (
        '_fwd_kernel',
        '_bwd_kernel',
        '_softplus_kernel',
        '_softplus_bwd_kernel',
    ):
        assert getattr(kernels, name).signatures, name


def test_kernels_that_do_not_compile_leave_auto_on_the_torch_scan_and_say_so(
    monkeypatch,
):
    def fails():
        raise RuntimeError('LLVM ERROR: no target for this CPU')

    monkeypatch.setattr(scan_numba, 'warm_up', fails)
    S._auto_cpu.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match='do not compile here'):
            backend, why = S.backend_reason('cpu')
        assert backend == 'torch' and 'LLVM ERROR' in why
    finally:
        S._auto_cpu.cache_clear()


def test_auto_on_cpu_checks_the_kernels_inside_inference_mode():
    S._auto_cpu.cache_clear()
    inputs = make_inputs(1, 32, 20, seed=8)
    with torch.inference_mode():
        out = selective_scan(**inputs, delta_softplus=True)
    assert S.backend_reason('cpu')[0] == 'numba'
    assert rel_err(out, selective_scan_reference(**inputs, delta_softplus=True)) <= 1e-5


def test_softplus_without_a_bias_and_empty_sequences():
    inputs = make_inputs(1, 32, 25, seed=9)
    del inputs['delta_bias']
    names = ['u', 'delta', 'A', 'B', 'C', 'D']
    ref_y, ref = grads(loop_reference, inputs, names, torch.float64)
    y, fast = grads(
        lambda **kw: selective_scan(**kw, backend='numba'), inputs, names, torch.float32
    )
    assert rel_err(y, ref_y) <= 1e-5
    for name in names:
        assert rel_err(fast[name], ref[name]) <= 1e-5, name
    for batch, length in ((1, 0), (2, 0), (0, 5)):  # nothing to scan, both CPU scans
        empty = make_inputs(batch, 32, length, seed=9)
        with torch.no_grad():
            for backend in ('numba', 'torch'):
                out = selective_scan(**empty, delta_softplus=True, backend=backend)
                assert out.shape == (batch, 32, length), backend


def test_the_kernels_compile_and_run_after_a_viewer_has_drawn(tmp_path):
    """triton's LLVM clashes with Mesa's once a napari viewer has drawn (see
    test_scan_triton.py); numba's own must not: an empty cache, so that the
    kernels are compiled after the draw, in a process of their own."""
    if not os.environ.get('DISPLAY'):
        pytest.skip('needs an X display (pytest-xvfb provides one)')
    code = (
        'import numpy as np, napari, torch\n'
        'viewer = napari.Viewer(show=False)\n'
        'viewer.add_image(np.random.rand(64, 64))\n'
        'viewer.window.resize(800, 600)\n'
        'viewer.screenshot(canvas_only=True)\n'
        'maps = open("/proc/self/maps").read()\n'
        'print("mesa", "libLLVM" in maps or "libgallium" in maps)\n'
        'from napari_vmunet.model.scan import selective_scan\n'
        'g = torch.Generator().manual_seed(0)\n'
        'x = dict(u=torch.randn(1, 64, 37, generator=g),\n'
        '         delta=torch.randn(1, 64, 37, generator=g),\n'
        '         A=-torch.rand(64, 16, generator=g) - 0.5,\n'
        '         B=torch.randn(1, 4, 16, 37, generator=g),\n'
        '         C=torch.randn(1, 4, 16, 37, generator=g))\n'
        'fast = selective_scan(**x, delta_softplus=True, backend="numba")\n'
        'ref = selective_scan(**x, delta_softplus=True, backend="reference")\n'
        'print("err", float((fast - ref).abs().max() / ref.abs().max()))\n'
        'viewer.close()\n'
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = dict(line.split(' ', 1) for line in done.stdout.splitlines() if ' ' in line)
    if lines.get('mesa') != 'True':
        pytest.skip("this display's OpenGL is not Mesa's LLVM")
    assert float(lines['err']) <= 1e-5
    assert list(tmp_path.rglob('*.nbi')), 'nothing was compiled into the empty cache'
