"""The Triton scan backend, checked on CPU through Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before triton is imported, so the kernels
run in subprocesses (``tests/_triton_scan_cases.py``); each case compares the
forward and every gradient with the float64 reference.  Skipped, with the
reason, where triton is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import napari_vmunet
from napari_vmunet.model import scan as S

HERE = Path(__file__).parent
#: the subprocesses import the napari_vmunet under test (source or wheel)
SRC = Path(napari_vmunet.__file__).resolve().parents[1]

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec('triton') is None,
    reason='triton is not installed (pip install triton; Linux x86_64 has CPU wheels)',
)

FP32_CASES = [
    'odd_length',
    'odd_channels',
    'grouped',
    'stress',
    'no_z_no_D',
    'no_softplus_no_bias',
    'time_major',
    'mixed_groups',
]


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', **extra)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(SRC), env.get('PYTHONPATH')]))
    return env


def _run(script: str, *args: str, timeout: int = 300) -> dict:
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        env=_env(TRITON_INTERPRET='1'),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def kernel_results() -> dict:
    return _run('_triton_scan_cases.py', *FP32_CASES, 'bf16', 'self_check')


@needs_triton
@pytest.mark.parametrize('case', FP32_CASES)
def test_triton_kernels_match_the_float64_reference(kernel_results, case):
    errs = kernel_results[case]
    names = {'y', 'u', 'delta', 'A', 'B', 'C'} - set(errs)
    assert not names, f'{case}: missing {names}'
    for name, err in errs.items():
        if name == 'max_delta':
            continue
        assert err <= 1e-5, f'{case}: {name} error {err:.2e} > 1e-5'


@needs_triton
def test_triton_stress_case_reaches_large_steps(kernel_results):
    # softplus(delta + bias) well above 1: exp(-cumsum) tricks overflow there
    assert kernel_results['stress']['max_delta'] >= 1.5


@needs_triton
def test_triton_bf16_inputs_keep_an_fp32_state(kernel_results):
    for name, err in kernel_results['bf16'].items():
        assert err <= 1e-2, f'bf16: {name} error {err:.2e} > 1e-2'


@needs_triton
def test_triton_self_check_passes(kernel_results):
    assert kernel_results['self_check'] == {'passed': 1.0, 'problem': None}


@needs_triton
@pytest.mark.slow
def test_vmunet_with_triton_matches_torch_backend():
    res = _run('_triton_scan_cases.py', 'model')['model']
    assert res['blocks'] == 8
    assert res['ss2d_out'] <= 1e-5, res
    assert res['ss2d_param_grads'] <= 1e-4, res


def test_triton_backend_on_cpu_without_interpreter_explains(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    g = torch.Generator().manual_seed(0)
    x = dict(
        u=torch.randn(1, 4, 8, generator=g),
        delta=torch.randn(1, 4, 8, generator=g),
        A=-torch.rand(4, 16, generator=g),
        B=torch.randn(1, 16, 8, generator=g),
        C=torch.randn(1, 16, 8, generator=g),
    )
    with pytest.raises(S.TritonUnavailableError, match='CUDA tensors.*backend="torch"'):
        S.selective_scan(**x, backend='triton')
    assert S.backend_reason('cpu')[0] in ('numba', 'torch')  # never triton


def test_cpu_paths_never_import_triton():
    """``auto`` on CPU, the model and the package never import triton (it
    clashes with napari's OpenGL context, and CPU users do not need it)."""
    code = (
        'import sys, torch\n'
        'import napari_vmunet\n'
        'from napari_vmunet.model import VMUNet, resolve_backend\n'
        'from napari_vmunet.devices import diagnostics\n'
        'm = VMUNet(depths=(1,) * 4, depths_decoder=(1,) * 4, dims=(4, 8, 16, 32))\n'
        'with torch.no_grad(): m(torch.rand(1, 3, 32, 32))\n'
        'assert resolve_backend("auto", "cpu") == "numba"\n'
        'diagnostics("cpu")\n'
        'print("triton" in sys.modules)\n'
    )
    env = _env()
    env.pop('TRITON_INTERPRET', None)
    done = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == 'False'


@needs_triton
@pytest.mark.gui
def test_triton_import_after_a_viewer_has_drawn_does_not_crash():
    """A plain ``import triton`` segfaults once Mesa's GL context exists
    (checked by hand: exit code 139); the scan's import path survives it."""
    if not os.environ.get('DISPLAY'):
        pytest.skip('needs an X display (pytest-xvfb provides one)')
    res = _run('_triton_after_viewer.py', timeout=180)
    assert res['triton'] and res['err'] <= 1e-5, res


@needs_triton
@pytest.mark.slow
def test_gpu_check_script_runs_in_its_cpu_smoke_mode():
    """``benchmarks/gpu_check.py`` runs once per lent GPU: its logic is run
    here first, tiny and through the interpreter, so that it does not fail
    there (~80 s on 2 cores)."""
    script = HERE.parent / 'benchmarks' / 'gpu_check.py'
    if not script.exists():
        pytest.skip('benchmarks/ is not part of this checkout')
    done = subprocess.run(
        [sys.executable, str(script), '--cpu-smoke'],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for section in ('== 1.', '== 2.', '== 2b.', '== 3.', '== 4.', '== 5.', 'total'):
        assert section in out, f'{section} missing:\n{out}'
    assert 'self-check (interpreter): passed' in out
    assert 'failed' not in out and 'nan' not in out.lower(), out


@needs_triton
@pytest.mark.slow
def test_kernels_compile_for_real_gpus_without_one():
    """The interpreter accepts code that a GPU compile may reject: compile
    both kernels for sm_80 and sm_90 ahead of time (ptxas ships in the
    triton wheel; ~40 s)."""
    script = HERE.parent / 'benchmarks' / 'triton_compile.py'
    if not script.exists():
        pytest.skip('benchmarks/ is not part of this checkout')
    env = _env(TRITON_DEFAULT_FP_FUSION='1')
    env.pop('TRITON_INTERPRET', None)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if (
        done.returncode
        and 'ptxas' in done.stderr
        and 'not found' in done.stderr.lower()
    ):
        pytest.skip('this triton wheel has no ptxas')
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith('sm_')]
    assert len(lines) == 24 and all('REG:' in line for line in lines), done.stdout
