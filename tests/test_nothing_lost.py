"""Nothing lost, nothing silent: the user's files and hostile inputs.

Each test reproduces one way a careless or hostile user lost a file or got
a silent, wrong or cryptic result, and checks the fix: ``predict`` and
``train`` never write over what they must not, options and inputs are
checked before any work, and what a file says cannot reach the terminal.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vmunet.checkpoint import (
    CheckpointError,
    default_metadata,
    load_checkpoint,
    save_checkpoint,
)
from napari_vmunet.cli import main
from napari_vmunet.inference import Predictor
from napari_vmunet.io import ImageIOError, read_image, write_image, write_labels
from napari_vmunet.model import VMUNet
from napari_vmunet.rules.intensity import UnusableImageError
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair, last_path
from tiny_models import TINY, save_tiny

FAST_TRAIN = [
    '--dims', '8,16,32,64', '--size', '32', '--batch-size', '2',
    '--steps-per-epoch', '2', '--device', 'cpu', '--quiet',
]  # fmt: skip


@pytest.fixture(scope='module')
def model_path(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp('model'), tile_size=32)


def image(seed: int = 0, shape=(40, 48)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def predict(*args: str) -> int:
    return main(['predict', '--quiet', '--device', 'cpu', *args])


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


# --------------------------------------------------------------------------
# 1, 2, 5: predict never writes over inputs, outputs or names it must not


def test_predict_never_writes_over_its_own_input(model_path, tmp_path, capsys):
    src = write_image(tmp_path / 'self.png', image())
    before = snapshot(tmp_path)
    assert predict('-m', str(model_path), '-o', str(src), str(src)) == 1
    assert 'refusing to write over input files' in capsys.readouterr().err
    # --overwrite does not change that
    assert predict('-m', str(model_path), '-o', str(src), '--overwrite', str(src)) == 1
    assert snapshot(tmp_path) == before


def test_predict_keeps_the_users_labels_and_skips_earlier_outputs(
    model_path, tmp_path, capsys
):
    folder = tmp_path / 'd1'
    write_image(folder / 'scan.png', image())
    mine = write_labels(folder / 'scan_labels.png', np.eye(40, 48, dtype=np.uint8))
    before = snapshot(folder)
    assert predict('-m', str(model_path), '-o', str(folder), str(folder)) == 1
    err = capsys.readouterr().err
    assert 'exist already' in err and 'scan_labels.png' in err and '--overwrite' in err
    assert snapshot(folder) == before  # nothing written, nothing predicted
    # with --overwrite the result replaces it, and the old labels are not
    # predicted in turn (no scan_labels_labels.png)
    assert (
        predict('-m', str(model_path), '-o', str(folder), '--overwrite', str(folder))
        == 0
    )
    assert sorted(p.name for p in folder.iterdir()) == ['scan.png', 'scan_labels.png']
    assert 'skipped 1 file(s)' in capsys.readouterr().err
    assert mine.read_bytes() != before['scan_labels.png'][1]
    # named explicitly, an output-looking file is predicted
    out = tmp_path / 'out'
    assert predict('-m', str(model_path), '-o', str(out), str(mine)) == 0
    assert (out / 'scan_labels_labels.png').exists()


def test_same_named_inputs_get_distinct_outputs(model_path, tmp_path, capsys):
    a = write_image(tmp_path / 's1' / 'scan.png', image(1))
    b = write_image(tmp_path / 's2' / 'scan.png', image(2))
    c = write_image(tmp_path / 'x.png', image(3))
    tifffile.imwrite(tmp_path / 'x.tif', image(4))
    out = tmp_path / 'out'
    args = [str(p) for p in (a, b, c, tmp_path / 'x.tif')]
    assert predict('-m', str(model_path), '-o', str(out), *args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        's1_scan_labels.png',
        's2_scan_labels.png',
        'x_labels.png',
        'x_labels.tif',
    ]
    # one PNG and one JPEG of the same name both become *_labels.png
    from skimage.io import imsave

    imsave(tmp_path / 'x.jpg', image(5), check_contrast=False)
    out2 = tmp_path / 'out2'
    assert (
        predict('-m', str(model_path), '-o', str(out2), str(c), str(tmp_path / 'x.jpg'))
        == 0
    )
    assert sorted(p.name for p in out2.iterdir()) == [
        'x_jpg_labels.png',
        'x_png_labels.png',
    ]
    assert 'distinct outputs' in capsys.readouterr().err


def test_hidden_and_temporary_files_are_not_inputs(model_path, tmp_path, capsys):
    folder = tmp_path / 'in'
    write_image(folder / 'scan.tif', image())
    # what a kill during a write leaves behind
    (folder / '.scan_labels.1a2b3c4d.partial.tif').write_bytes(b'half a file')
    tifffile.imwrite(folder / '.hidden.tif', image(1))
    out = tmp_path / 'out'
    assert predict('-m', str(model_path), '-o', str(out), str(folder)) == 0
    assert [p.name for p in out.iterdir()] == ['scan_labels.tif']
    assert 'skipped 2 file(s)' in capsys.readouterr().err


def test_a_kill_during_a_write_leaves_nothing_behind_the_next_write(tmp_path):
    target = tmp_path / 'labels.tif'
    write_labels(target, np.ones((8, 8), np.uint8))
    leftover = tmp_path / '.labels.deadbeef.partial.tif'
    leftover.write_bytes(b'from a killed run')
    write_labels(target, np.zeros((8, 8), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['labels.tif']


# --------------------------------------------------------------------------
# 3: train never writes over the start model or an earlier run


def _train_files(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 40, (48, 48)).astype(np.uint8)
    lab = np.zeros((48, 48), np.uint8)
    lab[10:22, 12:24] = 1
    img[lab > 0] += 150
    return [
        '--images', str(write_image(tmp_path / 'img.tif', img)),
        '--labels', str(write_labels(tmp_path / 'lab.tif', lab)),
    ]  # fmt: skip


def test_train_refuses_to_replace_its_starting_model(model_path, tmp_path, capsys):
    start = tmp_path / 'm.safetensors'
    start.write_bytes(model_path.read_bytes())
    before = start.read_bytes()
    for extra in ([], ['--overwrite']):
        code = main(['train', *_train_files(tmp_path), '--init', str(start),
                     '--output', str(start), '--epochs', '1', *FAST_TRAIN[4:],
                     *extra])  # fmt: skip
        assert code == 1
        assert 'is the starting model itself' in capsys.readouterr().err
    assert start.read_bytes() == before


def test_train_refuses_an_existing_run_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / 'run.safetensors'
    args = ['train', *_train_files(tmp_path), '--output', str(out), '--epochs', '1',
            *FAST_TRAIN]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (out, last_path(out))}
    started = time.perf_counter()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert 'exist(s) from an earlier run' in err and '--overwrite' in err
    assert time.perf_counter() - started < 10  # refused before any training
    assert {p: p.read_bytes() for p in before} == before
    assert main([*args, '--overwrite']) == 0
    assert out.read_bytes() != before[out]


def test_nothing_is_computed_when_the_output_cannot_be_written(
    model_path, tmp_path, capsys
):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    src = write_image(tmp_path / 'in.png', image())
    assert predict('-m', str(model_path), '-o', str(blocker / 'out'), str(src)) == 1
    assert 'cannot write the predictions into' in capsys.readouterr().err
    code = main(['train', *_train_files(tmp_path), '--output',
                 str(blocker / 'run.safetensors'), *FAST_TRAIN])  # fmt: skip
    assert code == 1
    assert 'cannot write the checkpoints into' in capsys.readouterr().err
    assert main(['demo', '--headless', '-o', str(blocker / 'demo')]) == 1
    assert 'cannot write the demo results into' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'a-file', 'img.tif', 'in.png', 'lab.tif',
    ]  # fmt: skip


@pytest.mark.skipif(
    hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root writes anywhere'
)
def test_a_read_only_folder_is_refused_before_training(tmp_path, capsys):
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code = main(['train', *_train_files(tmp_path), '--output',
                     str(folder / 'run.safetensors'), *FAST_TRAIN])  # fmt: skip
    finally:
        folder.chmod(0o755)
    assert code == 1
    assert 'cannot write the checkpoints' in capsys.readouterr().err


# --------------------------------------------------------------------------
# 6: RGB z-stacks, interleaved and planar


@pytest.mark.parametrize('planar', [False, True])
def test_rgb_z_stacks_are_predicted_slice_by_slice(model_path, tmp_path, planar):
    rng = np.random.default_rng(0)
    stack = (rng.random((4, 48, 48, 3)) * 255).astype(np.uint8)
    path = tmp_path / 's.tif'
    if planar:
        tifffile.imwrite(path, np.moveaxis(stack, -1, 1), photometric='rgb',
                         planarconfig='separate')  # fmt: skip
    else:
        tifffile.imwrite(path, stack, photometric='rgb')
    read = read_image(path)
    assert read.axes == 'CZYX' and read.rgb
    out = tmp_path / 'out'
    assert predict('-m', str(model_path), '-o', str(out), str(path)) == 0
    labels = read_image(out / 's_labels.tif').data
    assert labels.shape == (4, 48, 48)
    predictor = Predictor(model_path, device='cpu')
    for z in range(4):
        np.testing.assert_array_equal(labels[z], predictor.predict(stack[z]).labels)


# --------------------------------------------------------------------------
# 7: memory bombs fail fast with a reason


def _nifti_header_claiming(path: Path, shape, gz: bool) -> Path:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    raw = header.binaryblock + b'\0' * 4 + b'\0' * 1024
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize('gz', [False, True])
def test_a_tiny_nifti_claiming_gigabytes_is_refused_at_once(tmp_path, gz):
    name = 'bomb.nii.gz' if gz else 'bomb.nii'
    path = _nifti_header_claiming(tmp_path / name, (2000, 2000, 2000), gz)
    started = time.perf_counter()
    with pytest.raises(ImageIOError, match=r'declares 2000 x 2000 x 2000 voxels'):
        read_image(path)
    assert time.perf_counter() - started < 2
    huge = _nifti_header_claiming(tmp_path / f'huge{name}', (30000,) * 3, gz)
    with pytest.raises(ImageIOError, match='cannot hold that much'):
        read_image(huge)


def test_a_zip_bomb_checkpoint_is_refused_unopened(tmp_path):
    path = tmp_path / 'bomb.pth'
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        z.writestr('archive/data.pkl', b'\0' * (300 * 2**20))  # 300 MB of zeros
    assert path.stat().st_size < 2 * 2**20
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match='times its size'):
        load_checkpoint(path)
    assert time.perf_counter() - started < 2


def _with_metadata(src: Path, dst: Path, edit) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework='pt') as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta['napari_vmunet'] = edit(meta['napari_vmunet'])
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_absurd_or_hostile_metadata_is_refused(model_path, tmp_path):
    def tile(raw):
        doc = json.loads(raw)
        doc['input']['tile_size'] = [100000, 100000]
        return json.dumps(doc)

    with pytest.raises(CheckpointError, match='up to 4096'):
        load_checkpoint(_with_metadata(model_path, tmp_path / 't.safetensors', tile))
    deep = _with_metadata(
        model_path, tmp_path / 'd.safetensors', lambda _: '[' * 100_000 + ']' * 100_000
    )
    with pytest.raises(CheckpointError, match='nested too deeply'):
        load_checkpoint(deep)
    with pytest.raises(ValueError, match='between 32 and 4096'):
        Predictor(model_path, device='cpu', tile_size=100_000)


# --------------------------------------------------------------------------
# 8: divergence says what to do, for one class as for several


def test_a_diverging_one_class_run_says_lower_the_learning_rate(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)).astype(np.float32)
    lab = (img > 0.5).astype(np.uint8)
    config = TrainConfig(
        lr=1e6, epochs=3, dims=TINY['dims'], tile_size=32, batch_size=2,
        steps_per_epoch=4, val_fraction=0, device='cpu', preset='full',
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match='lower the learning rate'):
        Trainer(config, [TrainingPair(img, lab)]).fit()


# --------------------------------------------------------------------------
# 9: options are validated before any work, in the core


@pytest.mark.parametrize(
    'option, message',
    [
        (['--threshold', 'nan'], 'strictly between 0 and 1'),
        (['--threshold', '2'], 'strictly between 0 and 1'),
        (['--batch-size', '-1'], 'at least 1 tile'),
        (['--batch-size', '0'], 'at least 1 tile'),
        (['--slice-axis', '5'], 'spatial axis index 0, 1 or 2'),
        (['--channel-map', 'a,b'], 'image channel numbers'),
        (['--overlap', '1.5'], 'fraction in [0, 1)'),
        (['--tile-size', '100'], 'multiple of 32'),
    ],
)
def test_bad_predict_options_are_refused_up_front(
    model_path, tmp_path, capsys, option, message
):
    src = write_image(tmp_path / 'in.png', image())
    out = tmp_path / 'out'
    assert predict('-m', str(model_path), '-o', str(out), *option, str(src)) == 1
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_a_resume_that_changes_the_recipe_is_refused(tmp_path, capsys):
    out = tmp_path / 'run.safetensors'
    base = ['train', *_train_files(tmp_path), '--output', str(out), *FAST_TRAIN]
    assert main([*base, '--epochs', '2', '--lr', '1e-3']) == 0
    capsys.readouterr()
    without_dims = [a for a in base if a not in ('--dims', '8,16,32,64')]
    for change, named in (
        (['--lr', '1e-2'], 'lr 0.01 (the run has 0.001)'),
        (['--normalization', 'percentile'], 'normalization'),
        (['--preset', 'full'], 'preset'),
        (['--dims', '16,32,64,128'], 'dims'),
    ):
        assert main([*without_dims, '--resume', '--epochs', '2', *change]) == 1
        err = capsys.readouterr().err
        assert 'changes the recipe' in err and named in err, err
    # leaving settings out resumes with the run's own
    assert main([*base, '--resume', '--epochs', '4']) == 0
    state = load_checkpoint(last_path(out)).training_state
    lrs = [h['lr'] for h in state['history']]
    assert len(lrs) == 4
    # more epochs: the rate goes on decaying, it never climbs back up
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    assert 'epochs changed from 2 to 4' in capsys.readouterr().err


# --------------------------------------------------------------------------
# 10: inputs that used to give silent results


def test_silent_inputs_are_refused_or_scaled(model_path, tmp_path):
    predictor = Predictor(model_path, device='cpu')
    with pytest.raises(ValueError, match='complex-valued'):
        predictor.predict(image().astype(np.complex64) * (1 + 1j))
    with pytest.raises(UnusableImageError, match='no finite value'):
        predictor.predict(np.full((40, 40), np.nan))
    # float64 beyond the float32 range: scaled, not a constant image
    big = image().astype(np.float64) * 1e300
    np.testing.assert_array_equal(
        predictor.predict(big).labels, predictor.predict(image()).labels
    )
    # training on an all-NaN slice is refused too
    nan = np.full((40, 40), np.nan, np.float32)
    with pytest.raises(ValueError, match='no finite value'):
        Trainer(
            TrainConfig(dims=TINY['dims'], tile_size=32, device='cpu'),
            [TrainingPair(nan, np.ones((40, 40), np.uint8))],
        )


def test_a_nifti_with_an_all_zero_sform_gets_a_valid_geometry(tmp_path):
    import nibabel as nib

    data = np.random.default_rng(0).random((8, 9, 10)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.set_sform(np.zeros((4, 4)), code=1)
    img.set_qform(np.diag([2.0, 2.0, 3.0, 1.0]), code=1)
    nib.save(img, tmp_path / 'zero-sform.nii.gz')
    with pytest.warns(UserWarning, match='voxel-to-world matrix is invalid'):
        read = read_image(tmp_path / 'zero-sform.nii.gz')
    assert read.scale == pytest.approx((3.0, 2.0, 2.0))
    img.set_qform(None, code=0)
    img.header['pixdim'][1:4] = 0
    nib.save(img, tmp_path / 'no-geometry.nii.gz')
    with pytest.warns(UserWarning, match='voxel-to-world matrix is invalid'):
        read = read_image(tmp_path / 'no-geometry.nii.gz')
    assert all(s > 0 for s in read.scale)


# --------------------------------------------------------------------------
# 11: what a file says never reaches the terminal as escape sequences


def test_escape_sequences_from_a_checkpoint_are_shown_not_sent(tmp_path, capsys):
    model = VMUNet(num_classes=1, **TINY)
    evil = '\x1b]0;pwned\x07\x1b[2J'
    meta = default_metadata(
        model.config,
        class_names=['background', f'cell{evil}'],
        notes=f'hello{evil}',
        tile_size=32,
    )
    path = save_checkpoint(model, tmp_path / 'evil.safetensors', meta)
    assert main(['info', str(path)]) == 0
    out = capsys.readouterr().out
    assert '\x1b' not in out and '\x07' not in out
    assert 'cell\\x1b]0;pwned\\x07' in out
    src = write_image(tmp_path / 'in.png', image())
    assert predict('-m', str(path), '-o', str(tmp_path / 'out'), str(src)) == 0
    captured = capsys.readouterr()
    assert '\x1b' not in captured.out + captured.err
