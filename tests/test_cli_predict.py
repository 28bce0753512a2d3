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


def test_uncertainty_table_and_map_beside_the_labels_never_overwritten(
    checkpoint, inputs, tmp_path, capsys
):
    from napari_vmunet.measure import read_csv

    folder, files = inputs
    out, table = tmp_path / 'out', tmp_path / 'next.csv'
    args = ['predict', '-m', str(checkpoint), '-o', str(out), '-q']
    args += ['--uncertainty', str(table), '--uncertainty-map']
    chosen = [str(files[0]), str(files[2])]  # a NIfTI volume and a PNG
    assert main(args + chosen) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        'brain_crop_labels.nii.gz',
        'brain_crop_uncertainty.nii.gz',
        'noise_labels.png',
        'noise_uncertainty.tif',  # PNG holds no floats
    ]
    volume = read_image(files[0])
    want = Predictor(checkpoint, device='cpu').predict(
        volume.data, slice_axis=volume.axes.index('Z'), return_uncertainty=True
    )
    written = read_image(out / 'brain_crop_uncertainty.nii.gz')
    np.testing.assert_allclose(written.data, want.uncertainty, atol=1e-3)
    np.testing.assert_allclose(written.affine, volume.affine)
    rows = read_csv(table)
    assert rows.columns == ['file', 'rank', 'slice', 'uncertainty']
    mine = rows['file'] == 'brain_crop.nii.gz'
    assert rows['slice'][mine].tolist() == want.ranking().order.tolist()
    assert rows['rank'][mine].tolist() == [1, 2, 3]
    np.testing.assert_allclose(
        rows['uncertainty'][mine], want.slice_uncertainty[want.ranking().order]
    )
    assert rows['slice'][rows['file'] == 'noise.png'].tolist() == [0]

    # a second run refuses before computing anything, and changes nothing
    before = {p: p.stat().st_mtime_ns for p in [table, *out.iterdir()]}
    capsys.readouterr()
    for extra in (['--uncertainty', str(tmp_path / 'new.csv')], []):
        code = main(
            ['predict', '-m', str(checkpoint), '-o', str(out), '-q']
            + ['--uncertainty-map', *extra, *chosen]
        )
        assert code == 1  # a UserError
        assert 'exist already' in capsys.readouterr().err
    other = ['predict', '-m', str(checkpoint), '-o', str(tmp_path / 'other'), '-q']
    code = main(other + ['--uncertainty', str(table), str(files[1])])
    assert code == 1
    assert f'{table} exists already; pass --overwrite' in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert not (tmp_path / 'new.csv').exists()
    # nor over an image, input or not
    code = main(other + ['--uncertainty', str(files[1]), str(files[1])])
    assert code == 1 and 'written as .csv: got slice.tif' in capsys.readouterr().err
    assert main(args + ['--overwrite', *chosen]) == 0
    assert read_csv(table).n_rows == rows.n_rows
    # a folder given again does not feed the uncertainty maps back in
    again = tmp_path / 'again'
    code = main(['predict', '-m', str(checkpoint), '-o', str(again), '-q', str(out)])
    assert code == 1 and 'no readable images' in capsys.readouterr().err


def test_annotated_slices_are_left_out_of_the_ranking(
    checkpoint, inputs, tmp_path, capsys
):
    """``--annotations``: a slice with any label is not suggested again."""
    from napari_vmunet.io import write_image
    from napari_vmunet.measure import read_csv

    folder, files = inputs
    volume = read_image(files[0])
    z_axis = volume.axes.index('Z')
    painted = np.zeros(volume.data.shape, np.uint8)
    painted[(slice(None),) * z_axis + (1, 10, 10)] = 1  # slice 1 is annotated
    labels = write_image(tmp_path / 'painted.nii.gz', painted, like=volume)
    table = tmp_path / 'next.csv'
    args = ['predict', '-m', str(checkpoint), '-o', str(tmp_path / 'out'), '-q']
    args += ['--uncertainty', str(table), '--annotations', str(labels)]
    assert main(args + [str(files[0])]) == 0
    assert '1 annotated slice(s) left out' in capsys.readouterr().out
    want = Predictor(checkpoint, device='cpu').predict(
        volume.data, slice_axis=z_axis, return_uncertainty=True
    )
    rows = read_csv(table)
    assert rows['slice'].tolist() == want.ranking([1]).order.tolist()
    assert 1 not in rows['slice'].tolist() and rows['rank'].tolist() == [1, 2]

    # refused before any compute: without --uncertainty, or one file for two
    base = ['predict', '-m', str(checkpoint), '-o', str(tmp_path / 'o2'), '-q']
    assert main(base + ['--annotations', str(labels), str(files[0])]) == 1
    assert 'add --uncertainty' in capsys.readouterr().err
    two = ['--uncertainty', str(tmp_path / 'x.csv'), '--annotations', str(labels)]
    assert main(base + two + [str(files[0]), str(files[1])]) == 1
    assert 'named like the input' in capsys.readouterr().err
    assert not any((tmp_path / 'o2').glob('*'))  # nothing written


def test_blank_slices_are_left_out_of_the_ranking_and_counted(
    checkpoint, tmp_path, capsys
):
    """The air above the head (slices of one value) is never suggested; the
    CLI says how many such slices it left out."""
    from napari_vmunet.measure import read_csv

    brain, _ = load_sample('brain')
    data = np.asarray(brain.data)
    blank = [z for z in range(data.shape[0]) if np.ptp(data[z]) == 0]
    crop = data[[90, blank[0], 100], 80:140, 60:130]
    path = write_image(tmp_path / 'with_air.tif', crop)
    table = tmp_path / 'next.csv'
    args = ['predict', '-m', str(checkpoint), '-o', str(tmp_path / 'out'), '-q']
    assert main(args + ['--uncertainty', str(table), str(path)]) == 0
    assert '1 blank slice(s) left out' in capsys.readouterr().out
    assert sorted(read_csv(table)['slice'].tolist()) == [0, 2]
