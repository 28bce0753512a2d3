"""Distributed training and prediction with torchrun: 2 CPU processes (gloo)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_vmunet.checkpoint import load_checkpoint
from napari_vmunet.io import load_sample, read_image, write_image, write_labels

pytestmark = pytest.mark.skipif(
    sys.platform == 'win32', reason='torchrun with gloo is tested on POSIX'
)


def torchrun(*args, cwd, timeout=300):
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc_per_node=2',
        '-m',
        'napari_vmunet',
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ddp')
    image, labels = load_sample('nuclei')
    write_image(folder / 'a.tif', image.data[:128, :128])
    write_labels(folder / 'a_labels.tif', labels[:128, :128])
    write_image(folder / 'b.tif', image.data[256:384, 256:384])
    write_labels(folder / 'b_labels.tif', labels[256:384, 256:384])
    return folder


TRAIN = [
    'train',
    '--images',
    'a.tif',
    'b.tif',
    '--labels',
    'a_labels.tif',
    'b_labels.tif',
    '--output',
    'ddp.safetensors',
    '--dims',
    '8,16,32,64',
    '--size',
    '64',
    '--batch-size',
    '2',
    '--steps-per-epoch',
    '4',
    '--threads',
    '1',
    '--quiet',
]


def test_two_ranks_keep_identical_weights_and_rank_0_writes_the_checkpoint(files):
    out = torchrun(*TRAIN, '--epochs', '2', cwd=files)
    assert 'ranks: 2; weights identical on every rank: yes' in out
    assert out.count('best model:') == 1  # only rank 0 reports
    ckpt = load_checkpoint(files / 'ddp.safetensors')
    assert ckpt.metadata['provenance']['epochs'] == 2
    # resume works the same way under torchrun
    out = torchrun(*TRAIN, '--epochs', '3', '--resume', cwd=files)
    assert 'weights identical on every rank: yes' in out
    resumed = load_checkpoint(files / 'ddp.last.safetensors')
    assert resumed.training_state['epoch'] == 3


def test_predict_splits_the_inputs_across_ranks(files, tmp_path):
    model = files / 'ddp.safetensors'
    if not model.exists():
        torchrun(*TRAIN, '--epochs', '1', cwd=files)
    out = torchrun(
        'predict',
        '-m',
        str(model),
        '-o',
        str(tmp_path),
        '-q',
        str(files / 'a.tif'),
        str(files / 'b.tif'),
        cwd=files,
    )
    assert '[rank 0/2]' in out and '[rank 1/2]' in out
    for name in ('a', 'b'):
        labels = read_image(tmp_path / f'{name}_labels.tif').data
        assert labels.shape == (128, 128)
        assert np.isin(np.unique(labels), [0, 1]).all()
