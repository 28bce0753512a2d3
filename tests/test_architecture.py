"""The layer contract, checked on the source: imports point down only.

```
0  _version, _files, _memory, _threads,    plain helpers
   _generators
1  model                                    VM-UNet and the scan backends
2  rules, devices, io, zoo                  one home per rule; files by format;
                                           the built-in models' names
3  checkpoint                               read/write/convert, metadata
4  inference, training, measure, bioimageio the engines (no Qt)
5  cli, _widgets, napari adapters          the front ends
```

A module may import its own package and any lower layer.  The one named
exception is the checkpoint loader's dispatch to the bioimage.io reader (a
package is one more checkpoint format; the reader itself imports nothing
above the checkpoint layer and is imported only when a file is a package).
The core never imports Qt or napari, and importing the napari entry points
does not import torch (napari starts fast).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import napari_vmunet

ROOT = Path(napari_vmunet.__file__).parent
LAYERS = {
    '_version': 0,
    '_files': 0,
    '_memory': 0,
    '_threads': 0,
    '_scan_warmup': 0,
    '_generators': 0,
    '_text': 0,
    'model': 1,
    'rules': 2,
    'devices': 2,
    'io': 2,
    'checkpoint': 3,
    'inference': 4,
    'training': 4,
    'measure': 4,
    'bioimageio': 4,
    'zoo': 2,
    'cli': 5,
    '_widgets': 5,
    '_layer_data': 5,
    '_reader': 5,
    '_writer': 5,
    '_sample_data': 5,
    '__init__': 5,
    '__main__': 6,
}
#: (importing package, imported package, module): allowed upward imports
EXCEPTIONS = {('checkpoint', 'bioimageio', 'checkpoint/_core.py')}
FRONT_ENDS = {'_widgets', '_layer_data', '_reader', '_writer', '_sample_data', 'cli'}
GUI_MODULES = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui')


def _imports(path: Path):
    """``(package imported, top-level module name, line)`` of each import."""
    rel = path.relative_to(ROOT).parts
    package = list(rel[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split('.') if node.module else [])
            names = [target[0]] if target else [a.name for a in node.names]
            for name in names:
                yield name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split('.')
            if parts[0] == 'napari_vmunet' and len(parts) > 1:
                yield parts[1], None, node.lineno
            else:
                yield None, parts[0], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield None, alias.name.split('.')[0], node.lineno


def _sources():
    return sorted(p for p in ROOT.rglob('*.py'))


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix('.py')


def test_every_package_has_a_layer():
    packages = {_package(p) for p in _sources()}
    assert packages <= set(LAYERS), f'add {packages - set(LAYERS)} to LAYERS'


def test_imports_point_down_only():
    wrong = []
    for path in _sources():
        own = _package(path)
        rel = path.relative_to(ROOT).as_posix()
        for target, _, line in _imports(path):
            if target is None or target == own or target not in LAYERS:
                continue
            if LAYERS[target] > LAYERS[own] and (own, target, rel) not in EXCEPTIONS:
                wrong.append(f'{rel}:{line} ({own}, layer {LAYERS[own]}) imports '
                             f'{target} (layer {LAYERS[target]})')  # fmt: skip
            if LAYERS[target] == LAYERS[own] and LAYERS[own] == 4:
                wrong.append(f'{rel}:{line}: engine {own} imports engine {target}')
    # the engines may share a lower layer, never each other -- except the
    # bioimage.io export, which computes its test tensors with the Predictor
    wrong = [w for w in wrong if not w.startswith('bioimageio/_export_tensors.py')]
    assert not wrong, '\n'.join(wrong)


def test_no_package_reaches_into_another_packages_private_modules():
    """``from ..checkpoint._state import x`` bypasses a package's API; only
    the checkpoint loader and its bioimage.io reader (one file format across
    two packages) share private helpers."""
    allowed = {('checkpoint', 'bioimageio'), ('bioimageio', 'checkpoint')}
    wrong = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        own, package = _package(path), list(rel.parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split('.') if node.module else [])
            elif node.module and node.module.startswith('napari_vmunet.'):
                target = node.module.split('.')[1:]
            else:
                continue
            names = [a.name for a in node.names]
            if not target or target[0] == own or (own, target[0]) in allowed:
                continue
            private = [t for t in [*target[1:], *names] if t.startswith('_')]
            if private and not target[0].startswith('_'):
                wrong.append(f'{rel}:{node.lineno} imports {".".join(target)} {names}')
    assert not wrong, '\n'.join(wrong)


def test_the_core_knows_nothing_of_qt_or_napari():
    wrong = [
        f'{p.relative_to(ROOT)}:{line} imports {module}'
        for p in _sources()
        if _package(p) not in FRONT_ENDS
        for _, module, line in _imports(p)
        if module in GUI_MODULES
    ]
    assert not wrong, '\n'.join(wrong)


@pytest.mark.parametrize(
    'module',
    [
        'napari_vmunet',
        'napari_vmunet._widgets',
        'napari_vmunet._reader',
        # opening a dock imports its modules (and their sections'): torch
        # waits until a model is read
        'napari_vmunet._widgets.inference',
        'napari_vmunet._widgets.training',
    ],
)
def test_napari_entry_points_do_not_import_torch(module):
    code = f'import sys, {module}; print("torch" in sys.modules)'
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == 'False', out.stderr


def test_the_tiling_rules_agree_with_the_model_and_need_no_torch():
    """``rules.tiling`` writes the model's size multiple out (the docks read
    the tiling rules without importing torch); it must stay the model's."""
    from napari_vmunet.model import VMUNet
    from napari_vmunet.rules.tiling import TILE_MULTIPLE

    assert VMUNet.size_multiple == TILE_MULTIPLE
    code = 'import sys, napari_vmunet.rules.tiling; print("torch" in sys.modules)'
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == 'False', out.stderr


#: issue #15: a module of one job stays short enough to read whole, and a
#: function short enough to see at once.  The scan kernels are the one
#: exception: a fused pass over a block reads best in one piece.
MODULE_LINES = 520
FUNCTION_LINES = 80
LONG_KERNELS = {'_fwd_kernel', '_bwd_kernel', 'forward', 'backward'}
KERNEL_MODULES = ('model/scan', 'model/_triton', 'model/_scan')


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding='utf-8')
        if text.count('\n') > MODULE_LINES:
            too_long.append(f'{rel}: {text.count(chr(10))} lines')
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            kernel = rel.startswith(KERNEL_MODULES) and node.name in LONG_KERNELS
            if lines > FUNCTION_LINES and not kernel:
                too_long.append(f'{rel}:{node.lineno} {node.name}: {lines} lines')
    assert not too_long, 'split these by job:\n' + '\n'.join(too_long)
