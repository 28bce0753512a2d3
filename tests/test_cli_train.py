"""``napari-vmunet train`` end to end, on files written by the test."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_vmunet.checkpoint import load_checkpoint
from napari_vmunet.cli import main
from napari_vmunet.io import write_image, write_labels
from napari_vmunet.training import last_path
from napari_vmunet.zoo import builtin_checkpoint

FAST = [
    '--dims', '8,16,32,64',
    '--size', '32',
    '--batch-size', '2',
    '--steps-per-epoch', '2',
    '--device', 'cpu',
    '--quiet',
]  # fmt: skip


def blob(seed, shape=(48, 48)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, shape).astype(np.uint16)
    labels = np.zeros(shape, np.uint8)
    y, x = rng.integers(0, min(shape[-2:]) - 14, 2)
    labels[..., y : y + 12, x : x + 12] = 1
    image[labels > 0] += 150
    return image, labels


@pytest.fixture
def files(tmp_path):
    """Two 2-D images and their labels: a TIFF and a PNG pair."""
    out = []
    for i, ext in enumerate(('.tif', '.png')):
        image, labels = blob(i)
        img = write_image(tmp_path / f'img{i}{ext}', image.astype(np.uint8))
        lab = write_labels(tmp_path / f'lab{i}{ext}', labels)
        out.append((str(img), str(lab)))
    return out


def train(args, capsys):
    code = main(['train', *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_a_checkpoint_and_prints_the_dice(tmp_path, files, capsys):
    out = tmp_path / 'model.safetensors'
    images, labels = zip(*files, strict=True)
    code, stdout, stderr = train(
        ['--images', *images, '--labels', *labels, '--output', str(out),
         '--epochs', '2', '--class-names', 'background,blob', *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert 'note: recipe: the scratch preset for a new model (lr 0.001' in stderr
    assert f'best model: {out}' in stdout
    assert 'validation Dice (1 slice(s)):' in stdout
    assert 'blob' in stdout
    assert f'resumable checkpoint: {last_path(out)}' in stdout
    ckpt = load_checkpoint(out)
    assert ckpt.class_names == ['background', 'blob']
    assert ckpt.config['dims'] == [8, 16, 32, 64]
    prov = ckpt.metadata['provenance']
    assert prov['command'].startswith('napari-vmunet train --images')
    assert '--epochs 2' in prov['command']
    assert 'from img0.tif, img1.png' in prov['training_data']

    # --resume continues the same run to more epochs
    code, stdout, stderr = train(
        ['--images', *images, '--labels', *labels, '--output', str(out),
         '--epochs', '3', '--resume', *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    state = load_checkpoint(last_path(out)).training_state
    assert state['epoch'] == 3
    assert [h['epoch'] for h in state['history']] == [1, 2, 3]

    # fine-tuning the decoder only, from that model
    tuned = tmp_path / 'tuned.safetensors'
    code, stdout, stderr = train(
        ['--images', *images, '--labels', *labels, '--output', str(tuned),
         '--init', str(out), '--epochs', '1', '--freeze-encoder', *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert 'note: recipe: the finetune preset for a trained model (lr 0.0001' in stderr
    prov = load_checkpoint(tuned).metadata['provenance']
    assert '--freeze-encoder' in prov['command']
    assert 'encoder frozen' in prov['notes']
    before = load_checkpoint(out).model.state_dict()
    after = load_checkpoint(tuned).model.state_dict()
    for key in before:
        if key.startswith(('vmunet.patch_embed.', 'vmunet.layers.')):
            assert (before[key] == after[key]).all(), key


def test_train_init_takes_a_built_in_models_name(tmp_path, files, capsys):
    out = tmp_path / 'tuned.safetensors'
    images, labels = zip(*files, strict=True)
    code, _, stderr = train(
        ['--images', *images, '--labels', *labels, '--output', str(out),
         '--init', 'demo-nuclei', '--epochs', '1', '--size', '32',
         '--batch-size', '2', '--steps-per-epoch', '1', '--device', 'cpu',
         '--quiet'],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    demo = builtin_checkpoint('demo-nuclei')
    tuned = load_checkpoint(out)
    assert tuned.meta.provenance.initialized_from == f'checkpoint:{demo}'
    assert tuned.config == load_checkpoint(demo).config
    assert tuned.class_names == load_checkpoint(demo).class_names
    code, _, stderr = train(
        ['--images', *images, '--labels', *labels, '--output',
         str(tmp_path / 'x.safetensors'), '--init', 'demo-nope', '--quiet'],
        capsys,
    )  # fmt: skip
    assert code == 1 and 'built-in models: demo-brain, demo-nuclei' in stderr


def test_train_on_a_nifti_volume_uses_the_annotated_slices(tmp_path, capsys):
    image, labels = blob(3, (6, 40, 40))
    labels[[0, 2, 3]] = 0  # annotated: slices 1, 4, 5
    write_image(tmp_path / 'vol.nii.gz', image.astype(np.float32))
    write_labels(tmp_path / 'lab.nii.gz', labels)
    out = tmp_path / 'vol.safetensors'
    code, stdout, stderr = train(
        ['--images', str(tmp_path / 'vol.nii.gz'), '--labels',
         str(tmp_path / 'lab.nii.gz'), '--output', str(out), '--epochs', '1',
         '--preset', 'full', '--val-fraction', '0.34', *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    prov = load_checkpoint(out).metadata['provenance']
    want = '2 training and 1 validation slice(s) from vol.nii.gz'
    assert prov['training_data'] == want
    assert '--preset full' in prov['command']


def test_train_errors_are_one_line_and_actionable(tmp_path, files, capsys):
    (img, lab), _ = files
    out = str(tmp_path / 'm.safetensors')
    code, _, err = train(
        ['--images', img, img, '--labels', lab, '--output', out], capsys
    )
    assert code == 1
    assert 'got 2 image(s) but 1 label map(s)' in err
    assert len(err.strip().splitlines()) == 2  # the message + the --debug hint
    code, _, err = train(
        ['--images', img, '--labels', lab, '--output', out, '--dims', '8,x'], capsys
    )
    assert code == 1 and 'e.g. 8,16,32,64' in err
    code, _, err = train(
        ['--images', img, '--labels', lab, '--output', out, '--resume', *FAST], capsys
    )
    assert code == 1 and 'nothing to resume' in err
    code, _, err = train(
        ['--images', img, '--labels', lab, '--output', out, '--size', '50'], capsys
    )
    assert code == 1 and 'multiple of 32' in err
    code, _, err = train(
        ['--images', img, '--labels', lab, '--output', str(tmp_path / 'm.pth')], capsys
    )
    assert code == 1 and 'must end in .safetensors' in err


def test_train_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(['train', '--help'])
    assert '--init' in capsys.readouterr().out


def test_ctrl_c_stops_after_the_step_and_leaves_a_resumable_run(tmp_path, files):
    out = tmp_path / 'model.safetensors'
    images, labels = zip(*files, strict=True)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'napari_vmunet', 'train', '--images', *images,
         '--labels', *labels, '--output', str(out), '--epochs', '1000', *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not last_path(out).exists() and proc.poll() is None:
        assert time.monotonic() < deadline, 'no epoch finished within 120 s'
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert 'stopping after this step' in stderr
    assert 'Traceback' not in stderr
    state = load_checkpoint(last_path(out)).training_state
    assert 1 <= state['epoch'] < 1000
