"""bioimage.io model packages: export passes bioimageio.core's own test
offline, import gives back the same model, and bad packages are refused."""

from __future__ import annotations

import hashlib
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_vmunet.bioimageio import (
    NotExpressible,
    export_bioimageio,
    preprocessing_for,
)
from napari_vmunet.bioimageio._import import is_package
from napari_vmunet.bioimageio._processing import normalization_from
from napari_vmunet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_vmunet.cli import main
from napari_vmunet.inference import Predictor
from napari_vmunet.io.samples import load_sample
from napari_vmunet.model import VMUNet
from tiny_models import TINY_SHALLOW


def _tiny(tmp: Path, name: str, num_classes: int, **meta) -> Path:
    torch.manual_seed(num_classes)
    net = VMUNet(num_classes=num_classes, input_channels=3, **TINY_SHALLOW).eval()
    return save_checkpoint(net, tmp / f'{name}.safetensors', metadata=meta or None)


@pytest.fixture(scope='module')
def one_class(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp('bioimageio')
    return _tiny(
        tmp,
        'nuclei-tiny',
        1,
        classes={'names': ['background', 'nucleus'], 'colors': [None, '#00ff00']},
        input={'tile_size': [64, 64]},
        provenance={'training_data': 'a test', 'epochs': 3, 'best_val_dice': 0.5},
    )


@pytest.fixture(scope='module')
def one_class_zip(one_class) -> Path:
    out = one_class.parent / 'nuclei-tiny.zip'
    export_bioimageio(one_class, out, authors=['Jane Doe'])
    return out


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every attempt to resolve a host name or open a connection fails and is
    recorded."""
    attempts: list = []

    def refuse(*args, **_kwargs):
        attempts.append(args)
        raise OSError('no network in this test')

    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket.socket, 'connect', lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket.socket, 'connect_ex', lambda self, *a: refuse(*a))
    return attempts


def _rdf(folder: Path) -> dict:
    return yaml.safe_load((folder / 'rdf.yaml').read_text())


def _unpack(package: Path, dest: Path) -> Path:
    with zipfile.ZipFile(package) as archive:
        archive.extractall(dest)
    return dest


def _edit(folder: Path, change) -> Path:
    rdf = _rdf(folder)
    change(rdf)
    (folder / 'rdf.yaml').write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _core_test(package: Path):
    from bioimageio.core import test_model

    summary = test_model(package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    assert summary.status == 'passed', failed
    return summary


# --------------------------------------------------------------------------
# export


@pytest.mark.slow
def test_package_passes_bioimageio_core_test_offline(one_class, tmp_path, no_network):
    out = export_bioimageio(
        one_class,
        tmp_path / 'model.zip',
        authors=['Jane Doe; John Smith'],
        cite=['A dataset paper|https://doi.org/10.1038/s41592-019-0612-7'],
    )
    _core_test(out)
    assert no_network == []  # neither the export nor the test asked the network
    folder = _unpack(out, tmp_path / 'pkg')
    rdf = _rdf(folder)
    assert rdf['format_version'].startswith('0.5')
    assert [a['name'] for a in rdf['authors']] == ['Jane Doe', 'John Smith']
    assert rdf['cite'][0]['doi'] == '10.48550/arXiv.2402.02491'
    assert rdf['cite'][1]['doi'] == '10.1038/s41592-019-0612-7'
    weights = rdf['weights']['pytorch_state_dict']
    assert weights['architecture']['import_from'] == 'napari_vmunet.bioimageio'
    assert weights['architecture']['callable'] == 'VMUNetLogits'
    assert weights['architecture']['kwargs']['num_classes'] == 1
    assert weights['sha256'] == _sha(folder / 'weights.pt')
    assert 'napari-vmunet' in (folder / 'environment.yaml').read_text()
    ops = [s['id'] for s in rdf['inputs'][0]['preprocessing']]
    assert 'scale_range' in ops and 'scale_linear' in ops
    assert [s['id'] for s in rdf['outputs'][0]['postprocessing']][0] == 'sigmoid'
    space = [a for a in rdf['inputs'][0]['axes'] if a['type'] == 'space']
    assert all(a['size'] == {'min': 32, 'step': 32} for a in space)
    x = np.load(folder / 'test_input.npy')
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    # the test input is the bundled sample's centre crop, raw intensities
    image = np.asarray(load_sample('nuclei')[0].data, dtype=np.float32)
    np.testing.assert_array_equal(x[0, 0], image[128:384, 128:384])
    readme = (folder / 'README.md').read_text()
    assert '## Validation' in readme and '0.5000' in readme and 'a test' in readme
    cover = folder / 'cover.png'
    assert cover.read_bytes()[:4] == b'\x89PNG'


def test_multiclass_percentile_package_passes(tmp_path, no_network):
    ckpt = _tiny(
        tmp_path,
        'brain-tiny',
        3,
        classes={'names': ['background', 'grey matter', 'white matter']},
        input={'normalization': 'percentile:1,99:0,1'},
    )
    out = export_bioimageio(
        ckpt, tmp_path / 'brain.zip', authors=['Jane Doe'], test_image='brain'
    )
    _core_test(out)
    assert no_network == []
    rdf = _rdf(_unpack(out, tmp_path / 'pkg'))
    post = rdf['outputs'][0]['postprocessing'][0]
    assert post == {'id': 'softmax', 'kwargs': {'axis': 'channel'}}
    names = rdf['outputs'][0]['axes'][1]['channel_names']
    assert names == ['background', 'grey_matter', 'white_matter']
    assert [
        s['id'] for s in rdf['inputs'][0]['preprocessing'] if s['id'] != 'ensure_dtype'
    ] == [
        'scale_range',
        'clip',
    ]


def test_window_normalisation_is_reproduced(tmp_path):
    """A fixed window (CT-style) is scale_linear + clip; the package's
    preprocessing gives exactly our normalisation."""
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import get_test_input_sample

    ckpt = _tiny(tmp_path, 'ct', 1, input={'normalization': 'window:-125,275:0,1'})
    image = np.linspace(-400, 600, 64 * 64, dtype=np.float32).reshape(64, 64)
    path = tmp_path / 'ct.tif'
    import tifffile

    tifffile.imwrite(path, image)
    out = export_bioimageio(ckpt, tmp_path / 'ct.zip', authors=['A B'], test_image=path)
    descr = load_model_description(out)
    steps = [s.id for s in descr.inputs[0].preprocessing]
    assert 'scale_linear' in steps and 'clip' in steps and 'scale_range' not in steps
    with create_prediction_pipeline(descr) as pipeline:
        sample = get_test_input_sample(descr)
        pipeline.apply_preprocessing(sample)
        got = sample.members['image'].data.values[0, 0]
    from napari_vmunet.rules.normalization import normalize

    want = normalize(
        image, {'mode': 'window', 'low': -125, 'high': 275, 'range': [0, 1]}
    )
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_normalisations_map_to_spec_operations_and_back():
    cases = [
        {'mode': 'minmax'},
        {'mode': 'minmax', 'range': [0.0, 1.0]},
        {'mode': 'percentile', 'low': 1.0, 'high': 99.8},
        {'mode': 'percentile', 'low': 2.0, 'high': 98.0, 'range': [-1.0, 1.0]},
        {'mode': 'window', 'low': -125.0, 'high': 275.0, 'range': [0.0, 1.0]},
        {'mode': 'none'},
    ]
    from napari_vmunet.rules.normalization import check_normalization

    for norm in cases:
        steps = preprocessing_for(norm)
        back = normalization_from(steps)
        assert back is not None, norm
        want = check_normalization(norm)
        assert back['mode'] == want['mode']
        for key in ('low', 'high'):
            if key in want:
                assert back[key] == pytest.approx(want[key])
        assert back['range'] == pytest.approx(want['range'])
    assert preprocessing_for({'mode': 'none'}) == []
    # the default range [0, 255] after [0, 1]: one linear step, no clip
    assert [s['id'] for s in preprocessing_for({'mode': 'minmax'})] == [
        'scale_range',
        'scale_linear',
    ]


def test_inexpressible_normalisation_is_refused_before_writing(tmp_path):
    ckpt = _tiny(tmp_path, 'frac', 1, input={'normalization': 'percentile:0,0.5'})
    out = tmp_path / 'frac.zip'
    with pytest.raises(NotExpressible, match='upper percentile to be above 1'):
        export_bioimageio(ckpt, out, authors=['A B'])
    assert not out.exists()


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'authors': []}, 'at least one author'),
        ({'license_id': 'my-own'}, 'SPDX'),
        ({'name': 'a/b'}, 'model name'),
        ({'cite': ['A paper without a reference']}, 'needs a DOI or a URL'),
        ({'cite': ['A paper|not-a-doi']}, 'neither a DOI'),
        ({'cover': 'missing.png'}, 'cover image does not exist'),
        ({'test_image': 'missing.tif'}, 'test image does not exist'),
    ],
)
def test_bad_export_input_is_refused_before_writing(
    one_class, tmp_path, kwargs, message
):
    out = tmp_path / 'x.zip'
    args = {'authors': ['Jane Doe'], **kwargs}
    with pytest.raises(ValueError, match=message):
        export_bioimageio(one_class, out, **args)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_output_must_be_a_zip_and_small_test_images_are_refused(one_class, tmp_path):
    with pytest.raises(ValueError, match='ending in .zip'):
        export_bioimageio(one_class, tmp_path / 'x.yaml', authors=['A B'])
    import tifffile

    tifffile.imwrite(tmp_path / 'small.tif', np.ones((20, 40), np.uint8))
    with pytest.raises(ValueError, match='at least 32x32'):
        export_bioimageio(
            one_class,
            tmp_path / 'x.zip',
            authors=['A B'],
            test_image=tmp_path / 'small.tif',
        )


# --------------------------------------------------------------------------
# import


def test_round_trip_gives_the_same_model(one_class, one_class_zip, tmp_path):
    original = load_checkpoint(one_class)
    folder = _unpack(one_class_zip, tmp_path / 'pkg')
    image = np.asarray(load_sample('nuclei')[0].data, dtype=np.float32)[:160, :224]
    want = Predictor(original, device='cpu').predict(image, return_probabilities=True)
    x = torch.from_numpy(
        np.random.default_rng(0).random((2, 3, 64, 96), np.float32) * 255
    )
    with torch.no_grad():
        y = original.model(x)
    for source in (one_class_zip, folder, folder / 'rdf.yaml'):
        assert is_package(source)
        ckpt = load_checkpoint(source)
        assert ckpt.source_format == 'bioimageio'
        assert ckpt.config == original.config
        assert ckpt.metadata['classes'] == original.metadata['classes']
        assert ckpt.metadata['input'] == original.metadata['input']
        with torch.no_grad():
            assert (ckpt.model(x) - y).abs().max().item() <= 1e-5
        got = Predictor(ckpt, device='cpu').predict(image, return_probabilities=True)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(
            got.probabilities.astype(np.float32),
            want.probabilities.astype(np.float32),
            atol=1e-5,
        )
    assert not is_package(one_class)


def test_predict_cli_takes_a_package(one_class_zip, tmp_path):
    import tifffile

    image = np.asarray(load_sample('nuclei')[0].data)[:96, :96]
    tifffile.imwrite(tmp_path / 'cells.tif', image)
    code = main(
        [
            'predict',
            str(tmp_path / 'cells.tif'),
            '--model',
            str(one_class_zip),
            '--output',
            str(tmp_path / 'out'),
            '--device',
            'cpu',
        ]
    )
    assert code == 0
    labels = tifffile.imread(next((tmp_path / 'out').iterdir()))
    assert labels.shape == (96, 96)


def _folder(package: Path, tmp_path: Path) -> Path:
    return _unpack(package, tmp_path / 'pkg')


def test_foreign_architecture_is_refused(one_class_zip, tmp_path):
    def foreign(rdf):
        rdf['weights']['pytorch_state_dict']['architecture'] = {
            'source': 'unet.py',
            'callable': 'UNet2d',
            'kwargs': {'in_channels': 1},
        }

    folder = _edit(_folder(one_class_zip, tmp_path), foreign)
    with pytest.raises(CheckpointError, match='UNet2d from unet.py, not a VM-UNet'):
        load_checkpoint(folder)


def test_foreign_weights_are_refused(one_class_zip, tmp_path):
    folder = _folder(one_class_zip, tmp_path)
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), folder / 'weights.pt')
    sha = _sha(folder / 'weights.pt')
    _edit(folder, lambda rdf: rdf['weights']['pytorch_state_dict'].update(sha256=sha))
    with pytest.raises(
        CheckpointError, match='weights file weights.pt that is not a VM-UNet'
    ):
        load_checkpoint(folder)


def test_missing_weights_file_is_refused(one_class_zip, tmp_path):
    folder = _folder(one_class_zip, tmp_path)
    (folder / 'weights.pt').unlink()
    with pytest.raises(CheckpointError, match='weights file weights.pt .*no such file'):
        load_checkpoint(folder)


def test_tampered_weights_fail_the_sha256_check(one_class_zip, tmp_path):
    folder = _folder(one_class_zip, tmp_path)
    sd = torch.load(folder / 'weights.pt', weights_only=True)
    sd['vmunet.final_conv.bias'] += 1.0
    torch.save(sd, folder / 'weights.pt')
    with pytest.raises(CheckpointError, match=r'weights\.pt whose sha256 .* differs'):
        load_checkpoint(folder)
    # the same inside a zip
    tampered = tmp_path / 'tampered.zip'
    with zipfile.ZipFile(one_class_zip) as src, zipfile.ZipFile(tampered, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == 'weights.pt':
                data = (folder / 'weights.pt').read_bytes()
            dst.writestr(info, data)
    with pytest.raises(
        CheckpointError,
        match=r'tampered\.zip: has a weights file weights\.pt whose sha256',
    ):
        load_checkpoint(tampered)


def test_tampered_kwargs_are_refused(one_class_zip, tmp_path):
    folder = _folder(one_class_zip, tmp_path)
    kwargs = lambda rdf: rdf['weights']['pytorch_state_dict']['architecture']['kwargs']  # noqa: E731
    _edit(folder, lambda rdf: kwargs(rdf).update(num_classes=3))
    with pytest.raises(CheckpointError, match='num_classes=3 but the weights have 1'):
        load_checkpoint(folder)
    _edit(folder, lambda rdf: kwargs(rdf).update(num_classes=1, dims=[8, 16, 32, 128]))
    with pytest.raises(CheckpointError, match='dims='):
        load_checkpoint(folder)
    _edit(folder, lambda rdf: kwargs(rdf).update(dims=[8, 16, 32, 64], extra=1))
    with pytest.raises(CheckpointError, match='keyword argument.*extra'):
        load_checkpoint(folder)


def test_tampered_metadata_is_refused(one_class_zip, tmp_path):
    folder = _folder(one_class_zip, tmp_path)

    def change(rdf):
        rdf['config']['napari_vmunet']['metadata']['architecture']['num_classes'] = 2
        rdf['config']['napari_vmunet']['metadata']['classes'] = {
            'names': ['a', 'b'],
            'colors': [None, None],
        }

    _edit(folder, change)
    with pytest.raises(CheckpointError, match='disagrees with its weights'):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    ('source', 'message'),
    [
        ('https://example.com/weights.pt', 'never downloads'),
        ('../weights.pt', 'outside the package'),
    ],
)
def test_weights_outside_the_package_are_refused(
    one_class_zip, tmp_path, source, message
):
    folder = _folder(one_class_zip, tmp_path)
    _edit(
        folder, lambda rdf: rdf['weights']['pytorch_state_dict'].update(source=source)
    )
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_other_descriptions_are_refused(one_class_zip, tmp_path):
    folder = _folder(one_class_zip, tmp_path)
    _edit(folder, lambda rdf: rdf.update(type='dataset'))
    with pytest.raises(CheckpointError, match='dataset description, not a model'):
        load_checkpoint(folder)
    _edit(folder, lambda rdf: rdf.update(type='model', format_version='0.4.10'))
    with pytest.raises(CheckpointError, match='spec 0.4.10'):
        load_checkpoint(folder)
    _edit(folder, lambda rdf: rdf.update(format_version='0.5.12', weights={'onnx': {}}))
    with pytest.raises(CheckpointError, match='only as onnx'):
        load_checkpoint(folder)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ('touch pwned',))


def test_code_in_a_package_never_runs(one_class_zip, tmp_path, monkeypatch):
    """Pickled code in the weights is refused; an architecture source file
    of the original repository's kind is never imported: our own VMUNet is
    built from the kwargs."""
    monkeypatch.chdir(tmp_path)
    folder = _folder(one_class_zip, tmp_path)
    good = (folder / 'weights.pt').read_bytes()
    torch.save({'vmunet.x': _Boom()}, folder / 'weights.pt')
    sha = _sha(folder / 'weights.pt')
    _edit(folder, lambda rdf: rdf['weights']['pytorch_state_dict'].update(sha256=sha))
    with pytest.raises(CheckpointError, match='would run code'):
        load_checkpoint(folder)
    assert not (tmp_path / 'pwned').exists()

    (folder / 'weights.pt').write_bytes(good)
    (folder / 'vmunet.py').write_text(
        "open('imported', 'w').close()\nclass VMUNet:\n    pass\n"
    )

    def original(rdf):
        weights = rdf['weights']['pytorch_state_dict']
        weights['sha256'] = _sha(folder / 'weights.pt')
        weights['architecture'] = {
            'source': 'vmunet.py',
            'callable': 'VMUNet',
            'kwargs': {'num_classes': 1, 'input_channels': 3, 'load_ckpt_path': None},
        }
        del rdf['config']

    _edit(folder, original)
    ckpt = load_checkpoint(folder)
    assert not (tmp_path / 'imported').exists()
    assert not any(tmp_path.rglob('imported'))
    assert ckpt.config['dims'] == TINY_SHALLOW['dims']
    # without our metadata: class names from the output channel, the
    # normalisation read back from the preprocessing
    assert ckpt.class_names == ['background', 'nucleus']
    assert ckpt.metadata['input']['normalization'] == {'mode': 'minmax'}


# --------------------------------------------------------------------------
# CLI


def test_cli_exports_and_refuses_to_overwrite(one_class, tmp_path, capsys):
    out = tmp_path / 'cli.zip'
    args = [
        'export-bioimageio',
        str(one_class),
        '--output',
        str(out),
        '--authors',
        'Jane Doe',
        '--authors',
        'John Smith',
        '--name',
        'Tiny nuclei (test)',
        '--cite',
        'Some paper|10.1234/abcd',
        '--test-image',
        'brain',
    ]
    assert main(args) == 0
    assert f'wrote {out}' in capsys.readouterr().out
    rdf = _rdf(_unpack(out, tmp_path / 'pkg'))
    assert rdf['name'] == 'Tiny nuclei (test)'
    assert [a['name'] for a in rdf['authors']] == ['Jane Doe', 'John Smith']
    assert main(args) == 1
    assert 'already exists; pass --force' in capsys.readouterr().err
    assert main(['info', str(out)]) == 0
    assert 'bioimage.io model package' in capsys.readouterr().out


def test_cli_reports_a_missing_extra(one_class, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, 'bioimageio.spec', None)
    code = main(
        [
            'export-bioimageio',
            str(one_class),
            '-o',
            str(tmp_path / 'x.zip'),
            '--authors',
            'A B',
        ]
    )
    assert code == 1
    assert "pip install 'napari-vmunet[bioimageio]'" in capsys.readouterr().err
    assert not (tmp_path / 'x.zip').exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
