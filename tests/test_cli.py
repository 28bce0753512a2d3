"""The CLI as a whole: entry point, version, system information."""

from __future__ import annotations

import json
import subprocess
import sys

from napari_vmunet import __version__
from napari_vmunet.cli import main


def test_version_and_help_through_the_console_script():
    out = subprocess.run(
        [sys.executable, '-m', 'napari_vmunet', '--version'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f'napari-vmunet {__version__}'
    help_text = subprocess.run(
        [sys.executable, '-m', 'napari_vmunet', '--help'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ('predict', 'train', 'info', 'convert', 'demo'):
        assert command in help_text


def test_info_system_describes_torch_and_devices(capsys):
    assert main(['info', '--system', '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['napari_vmunet'] == __version__
    assert 'cpu' in info['devices']
    assert info['scan_backend'] in ('numba', 'torch', 'mamba', 'triton')
    assert info['scan_backend_reason']
    assert main(['info', '--system']) == 0
    assert 'scan:' in capsys.readouterr().out


def test_info_without_a_file_says_what_to_give(capsys):
    assert main(['info']) == 1
    assert 'give a checkpoint file' in capsys.readouterr().err
