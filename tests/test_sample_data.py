"""Shipped sample data: contents, napari sample menu, provenance, rebuild."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import numpy as np
import pytest

import napari_vmunet
from napari_vmunet import io
from napari_vmunet._sample_data import make_brain, make_nuclei

DATA = Path(napari_vmunet.__file__).parent / 'data'
SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'make_sample_data.py'
SHIPPED = [
    'brain_t1.nii.gz',
    'brain_tissue_labels.nii.gz',
    'nuclei_image.tif',
    'nuclei_labels.tif',
]


def test_nuclei_sample():
    image, labels = io.load_sample('nuclei')
    assert (image.axes, image.data.shape, image.data.dtype) == (
        'YX',
        (512, 512),
        np.uint16,
    )
    assert labels.shape == (512, 512) and labels.dtype == np.uint16
    assert len(np.unique(labels[labels > 0])) == 125


def test_brain_sample():
    image, labels = io.load_sample('brain')
    assert (image.axes, image.data.shape) == ('ZYX', (189, 233, 197))
    assert (image.scale, image.units) == ((1.0, 1.0, 1.0), 'mm')
    assert labels.shape == image.data.shape and labels.dtype == np.uint8
    counts = np.bincount(labels.ravel(), minlength=3)
    assert len(counts) == 3 and np.all(counts > 100_000)  # bg, GM, WM all present
    # white matter is bright on T1, grey matter darker
    assert image.data[labels == 2].mean() > image.data[labels == 1].mean() + 20


def test_sample_layer_tuples_share_geometry():
    (t1, t1_kwargs, t1_type), (seg, seg_kwargs, seg_type) = make_brain()
    assert (t1_type, seg_type) == ('image', 'labels')
    assert seg_kwargs['scale'] == t1_kwargs['scale'] == (1.0, 1.0, 1.0)
    assert seg_kwargs['translate'] == (-72.0, -134.0, -98.0)
    assert list(seg_kwargs['features']['tissue']) == [
        'background',
        'grey matter',
        'white matter',
    ]
    # the labels can be saved with the template's NIfTI header
    assert 'nifti_header' in seg_kwargs['metadata']['napari_vmunet']['meta']
    (_, _, image_type), (_, labels_kwargs, labels_type) = make_nuclei()
    assert (image_type, labels_type) == ('image', 'labels')
    assert 'ground truth' in labels_kwargs['name']


@pytest.mark.gui
def test_open_samples_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()

    viewer.open_sample('napari-vmunet', 'nuclei')
    image, truth = viewer.layers
    assert image.data.shape == truth.data.shape == (512, 512)
    assert type(truth).__name__ == 'Labels' and 'ground truth' in truth.name

    viewer.open_sample('napari-vmunet', 'brain')
    t1, tissue = viewer.layers[2:]
    np.testing.assert_allclose(t1.scale, (1.0, 1.0, 1.0))
    assert [str(u) for u in t1.units] == ['millimeter'] * 3
    assert tissue.data.shape == (189, 233, 197)
    assert tissue.get_status((100, 120, 60), world=False)['value'].endswith(
        'tissue: grey matter'
    )


def test_shipped_data_is_small_and_documented():
    sizes = {name: (DATA / name).stat().st_size for name in SHIPPED}
    assert sum(sizes.values()) <= 3_000_000, sizes
    readme = (DATA / 'README.md').read_text(encoding='utf-8')
    for must in ['CC0', 'BSD-3-Clause', 'Copyright (C) 1993-2009 Louis Collins']:
        assert must in readme


@pytest.mark.skipif(
    importlib.util.find_spec('stardist') is None
    or importlib.util.find_spec('nilearn') is None,
    reason='needs the stardist and nilearn packages (data only)',
)
def test_script_rebuilds_the_shipped_files_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr('sys.argv', ['make_sample_data.py', '--out', str(tmp_path)])
    runpy.run_path(str(SCRIPT), run_name='__main__')
    for name in SHIPPED:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
