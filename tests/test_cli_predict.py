"""``napari-vmunet predict`` end to end on files written by the test."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_vmunet.cli import main
from napari_vmunet.inference import Predictor
from napari_vmunet.io import load_sample, read_image, write_image
from tiny_models import save_tiny


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return save_tiny(
        tmp_path_factory.mktemp('ckpt'),
        num_classes=3,
        class_names=['background', 'grey', 'white'],
    )


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('inputs')
    brain, _ = load_sample('brain')
    # a small NIfTI crop of the real scan, a TIFF slice and a PNG
    crop = brain.data[90:93, 80:140, 60:130]
    nii = write_image(folder / 'brain_crop.nii.gz', crop, like=None)
    tif = write_image(folder / 'slice.tif', brain.data[95, 60:124, 50:114])
    png_data = (np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)
    png = folder / 'noise.png'
    from skimage.io import imsave

    imsave(png, png_data, check_contrast=False)
    return folder, [nii, tif, png]


def test_predict_folder_writes_each_format_and_matches_the_predictor(
    checkpoint, inputs, tmp_path, capsys
):
    folder, files = inputs
    out = tmp_path / 'out'
    code = main(
        [
            'predict',
            '--model',
            str(checkpoint),
            '--output',
            str(out),
            '--probabilities',
            '--quiet',
            str(folder),
        ]
    )
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [
            'brain_crop_labels.nii.gz',
            'brain_crop_probabilities.nii.gz',
            'slice_labels.tif',
            'slice_probabilities.tif',
            'noise_labels.png',
            'noise_probabilities.tif',
        ]
    )
    source = read_image(files[0])
    labels = read_image(out / 'brain_crop_labels.nii.gz')
    assert labels.data.shape == source.data.shape
    np.testing.assert_allclose(labels.affine, source.affine)
    want = Predictor(checkpoint, device='cpu').predict(source.data).labels
    np.testing.assert_array_equal(labels.data, want)
    probs = read_image(out / 'brain_crop_probabilities.nii.gz', allow_channels=True)
    assert probs.data.shape == (3, *source.data.shape)
    assert 'brain_crop.nii.gz' in capsys.readouterr().out


def test_a_failing_file_is_reported_and_the_others_still_run(
    checkpoint, inputs, tmp_path, capsys
):
    _, files = inputs
    broken = tmp_path / 'broken.tif'
    broken.write_bytes(b'not a tiff at all')
    out = tmp_path / 'out'
    code = main(
        [
            'predict',
            '-m',
            str(checkpoint),
            '-o',
            str(out),
            '-q',
            str(broken),
            str(files[1]),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert 'FAILED' in err and 'broken.tif' in err and '1 of 2' in err
    assert (out / 'slice_labels.tif').exists()


def test_single_input_to_a_named_file_and_glob(checkpoint, inputs, tmp_path):
    folder, _ = inputs
    target = tmp_path / 'result.tif'
    assert (
        main(
            [
                'predict',
                '-m',
                str(checkpoint),
                '-o',
                str(target),
                '-q',
                str(folder / 'slice.tif'),
            ]
        )
        == 0
    )
    assert target.exists()
    out = tmp_path / 'globbed'
    assert (
        main(
            [
                'predict',
                '-m',
                str(checkpoint),
                '-o',
                str(out),
                '-q',
                str(folder / '*.png'),
            ]
        )
        == 0
    )
    assert [p.name for p in out.iterdir()] == ['noise_labels.png']


def test_errors_are_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'napari_vmunet',
            'predict',
            '-m',
            'nope.pth',
            '-o',
            str(tmp_path),
            str(tmp_path / 'missing*.tif'),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith('napari-vmunet: error: no such file')
    assert 'Traceback' not in proc.stderr
