"""Files written by napari-vmunet 0.1 keep loading and resuming.

``tests/data/v0.1`` holds a real two-epoch run (best checkpoint, resumable
``last`` checkpoint and its training state) written by version 0.1 before
the architecture step, by::

    TrainConfig(output='v0.1-run.safetensors', dims=(4, 8, 16, 32),
                depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1), epochs=2,
                tile_size=32, batch_size=2, steps_per_epoch=2, device='cpu',
                class_names=['background', 'blob'], val_fraction=0)

on a 64x64 blob image.  Refactoring must never change what these files mean.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from napari_vmunet.checkpoint import load_checkpoint
from napari_vmunet.inference import Predictor
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair, last_path

DATA = Path(__file__).parent / 'data' / 'v0.1'


def blob():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 40, (64, 64)).astype(np.uint8)
    lab = np.zeros((64, 64), np.uint8)
    lab[10:30, 12:40] = 1
    img[lab > 0] += 150
    return img, lab


def test_a_v0_1_checkpoint_loads_with_its_metadata():
    ckpt = load_checkpoint(DATA / 'v0.1-run.safetensors')
    assert ckpt.source_format == 'napari-vmunet'
    assert ckpt.config['dims'] == [4, 8, 16, 32]
    assert ckpt.config['depths'] == [1, 1, 1, 1]
    assert ckpt.class_names == ['background', 'blob']
    meta = ckpt.metadata
    assert meta['input']['tile_size'] == [32, 32]
    assert meta['input']['normalization'] == {'mode': 'minmax'}
    assert meta['provenance']['epochs'] >= 1
    assert meta['provenance']['package_version'] == '0.1.0'
    img, _ = blob()
    labels = Predictor(ckpt, device='cpu').predict(img).labels
    assert labels.shape == img.shape


def test_a_v0_1_run_resumes_where_it_stopped(tmp_path):
    for f in DATA.iterdir():
        shutil.copy(f, tmp_path / f.name)
    out = tmp_path / 'v0.1-run.safetensors'
    state = load_checkpoint(last_path(out)).training_state
    assert state['epoch'] == 2 and len(state['history']) == 2
    img, lab = blob()
    config = TrainConfig(
        output=out, resume=True, epochs=3, device='cpu', val_fraction=0
    )
    trainer = Trainer(config, [TrainingPair(img, lab, name='blob')])
    assert trainer.epoch == 2 and trainer.tile == 32
    assert trainer.config.dims is None or list(trainer.config.dims) == [4, 8, 16, 32]
    finished = trainer.fit()
    assert finished.reason == 'completed' and finished.epochs_done == 3
    resumed = load_checkpoint(last_path(out)).training_state
    assert [h['epoch'] for h in resumed['history']] == [1, 2, 3]
