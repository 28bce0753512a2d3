"""npe2 reader and writers, through a real napari viewer."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

import napari_vmunet
from napari_vmunet import io
from napari_vmunet._reader import napari_get_reader
from napari_vmunet._writer import layer_geometry

PLUGIN = 'napari-vmunet'
DATA = Path(napari_vmunet.__file__).parent / 'data'
ANISO = np.array(
    [
        [0.5, 0.0, 0.0, -20.0],
        [0.0, 0.7, 0.0, 10.0],
        [0.0, 0.0, 3.0, 5.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture
def aniso_nifti(tmp_path) -> Path:
    """A CT-like volume: fine in-plane pixels, thick slices."""
    vol = np.random.default_rng(0).integers(-1000, 1000, (12, 10, 6)).astype(np.int16)
    path = tmp_path / 'ct_scan.nii.gz'
    nib.save(nib.Nifti1Image(vol, ANISO), path)
    return path


@pytest.mark.parametrize(
    'path',
    ['a.tif', 'a.png', 'a.nii.gz.bak', ['a.nii', 'b.tif'], [], None, 3],
)
def test_reader_declines_without_raising(path):
    assert napari_get_reader(path) is None


@pytest.mark.parametrize(
    'path', ['a.nii', 'B.NII.GZ', 'c.ome.tif', ['a.nii', 'b.nii.gz']]
)
def test_reader_claims_nifti_and_ome_tiff(path):
    assert callable(napari_get_reader(path))


@pytest.mark.gui
def test_open_nifti_at_physical_scale(make_napari_viewer, aniso_nifti):
    viewer = make_napari_viewer()

    [layer] = viewer.open(aniso_nifti, plugin=PLUGIN)

    assert layer.name == 'ct_scan'
    assert layer.data.shape == (6, 10, 12)
    np.testing.assert_allclose(layer.scale, (3.0, 0.7, 0.5))
    np.testing.assert_allclose(layer.translate, (5.0, 10.0, -20.0))
    assert [str(u) for u in layer.units] == ['millimeter'] * 3
    # voxel (z, y, x) lands where nibabel puts voxel (x, y, z)
    world = layer.data_to_world((2, 3, 4))
    np.testing.assert_allclose(world, (ANISO @ [4, 3, 2, 1])[:3][::-1])
    assert layer.metadata['napari_vmunet']['meta']['format'] == 'nifti'


# napari draws oblique volumes without the out-of-slice rotation, and says so
NON_ORTHOGONAL = pytest.mark.filterwarnings('ignore:Non-orthogonal slicing')


@pytest.mark.gui
@NON_ORTHOGONAL
def test_open_oblique_nifti_uses_affine(make_napari_viewer, tmp_path):
    affine = np.array(
        [
            [0.0, -0.9, 0.0, 30.0],
            [0.8, 0.0, 0.1, -4.0],
            [0.0, 0.0, 2.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    nib.save(
        nib.Nifti1Image(np.ones((4, 5, 6), np.float32), affine), tmp_path / 'o.nii'
    )
    viewer = make_napari_viewer()

    [layer] = viewer.open(tmp_path / 'o.nii', plugin=PLUGIN)

    for voxel in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        expected = (affine @ [*voxel[::-1], 1])[:3][::-1]
        np.testing.assert_allclose(layer.data_to_world(voxel), expected, atol=1e-9)


@pytest.mark.gui
def test_open_ome_tiff_gets_micron_scale(make_napari_viewer, tmp_path):
    path = tmp_path / 'cells.ome.tif'
    metadata = {'axes': 'ZYX', 'PhysicalSizeX': 0.2, 'PhysicalSizeY': 0.2}
    metadata['PhysicalSizeZ'] = 1.0
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), ome=True, metadata=metadata)
    viewer = make_napari_viewer()

    [layer] = viewer.open(path, plugin=PLUGIN)

    np.testing.assert_allclose(layer.scale, (1.0, 0.2, 0.2))
    assert [str(u) for u in layer.units] == ['micrometer'] * 3


@pytest.mark.gui
@pytest.mark.parametrize('ext', ['.nii.gz', '.tif'])
def test_labels_saved_with_source_geometry(make_napari_viewer, aniso_nifti, ext):
    viewer = make_napari_viewer()
    [image] = viewer.open(aniso_nifti, plugin=PLUGIN)
    seg = (np.asarray(image.data) > 0).astype(np.int32) * 3
    labels = viewer.add_labels(
        seg, scale=image.scale, translate=image.translate, metadata=image.metadata
    )

    [written] = labels.save(
        str(Path(image.metadata['napari_vmunet']['source']).parent / f'seg{ext}'),
        plugin=PLUGIN,
    )

    back = io.read_image(written)
    np.testing.assert_array_equal(back.data, seg)
    assert back.data.dtype == np.uint8
    if ext == '.nii.gz':
        source = nib.load(aniso_nifti)
        np.testing.assert_array_equal(nib.load(written).affine, source.affine)
        assert nib.load(written).shape == source.shape
    else:
        assert back.units == 'mm'
        np.testing.assert_allclose(back.scale, (3.0, 0.7, 0.5), rtol=1e-6)


@pytest.mark.gui
def test_labels_without_metadata_use_layer_transform(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    seg = np.zeros((4, 6, 8), np.uint16)
    seg[1:3, 2:4, 3:6] = 300
    layer = viewer.add_labels(
        seg, scale=(2.0, 0.5, 0.25), translate=(1.0, 2.0, 3.0), units='mm'
    )

    [written] = layer.save(str(tmp_path / 'seg.nii.gz'), plugin=PLUGIN)

    nifti = nib.load(written)
    expected = np.diag([0.25, 0.5, 2.0, 1.0])
    expected[:3, 3] = (3.0, 2.0, 1.0)
    np.testing.assert_allclose(nifti.affine, expected)
    assert nifti.get_data_dtype() == np.uint16
    back = io.read_image(written)
    np.testing.assert_array_equal(back.data, seg)
    assert back.scale == (2.0, 0.5, 0.25)


@NON_ORTHOGONAL
def test_layer_geometry_matches_napari_transform():
    """rotate, shear and affine collapse into the same data->world map."""
    from napari.layers import Labels

    layer = Labels(
        np.zeros((5, 6, 7), np.uint8),
        scale=(2.0, 3.0, 0.5),
        translate=(1.0, -1.0, 4.0),
        rotate=(30.0, 0.0, 10.0),
        shear=(0.5, 0.0, 0.2),
        affine=np.diag([1.0, 4.0, 1.0, 1.0]),
    )
    like = layer_geometry(layer.data, layer._get_state())
    for voxel in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        np.testing.assert_allclose(
            (like.affine @ [*voxel, 1])[:3], layer.data_to_world(voxel), atol=1e-9
        )


@pytest.mark.gui
def test_probability_map_saved_as_nifti(make_napari_viewer, aniso_nifti, tmp_path):
    viewer = make_napari_viewer()
    [image] = viewer.open(aniso_nifti, plugin=PLUGIN)
    prob = np.random.default_rng(5).random(image.data.shape)
    layer = viewer.add_image(prob, scale=image.scale, metadata=image.metadata)

    [written] = layer.save(str(tmp_path / 'prob.nii.gz'), plugin=PLUGIN)

    nifti = nib.load(written)
    np.testing.assert_array_equal(nifti.affine, nib.load(aniso_nifti).affine)
    assert nifti.get_data_dtype() == np.float32
    np.testing.assert_allclose(io.read_image(written).data, prob.astype(np.float32))
