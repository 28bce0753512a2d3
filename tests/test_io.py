"""napari_vmunet.io: geometry, round trips, dtypes, atomic writes, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

import napari_vmunet
from napari_vmunet import io
from napari_vmunet._layer_data import layer_kwargs
from napari_vmunet.io import ImageData, ImageIOError

DATA = Path(napari_vmunet.__file__).parent / 'data'

# voxel (i, j, k) -> RAS mm; oblique with shear, flipped (LAS) and scaled
OBLIQUE = np.array(
    [
        [0.9, 0.1, 0.05, -10.0],
        [-0.1, 0.95, 0.2, 20.0],
        [0.02, -0.15, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
LAS = np.array(
    [
        [-0.8, 0.0, 0.0, 100.0],
        [0.0, 0.7, 0.0, -50.0],
        [0.0, 0.0, 3.0, 20.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if '.partial' in p.name]


# --------------------------------------------------------------------- NIfTI


def test_real_t1_geometry_and_label_round_trip(tmp_path):
    src = DATA / 'brain_t1.nii.gz'
    image = io.read_image(src)
    assert image.axes == 'ZYX'
    assert image.data.shape == (189, 233, 197)
    assert image.scale == (1.0, 1.0, 1.0)
    assert image.translate == (-72.0, -134.0, -98.0)
    assert image.units == 'mm'
    labels = (image.data > 100).astype(np.int64) + (image.data > 160)

    out = io.write_labels(tmp_path / 'seg.nii.gz', labels, like=image)

    written = nib.load(out)
    source = nib.load(src)
    assert written.shape == source.shape == (197, 233, 189)
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8
    assert written.header.get_intent()[0] == 'label'
    # voxel order on disk is the scan's own: label[i, j, k] describes t1[i, j, k]
    t1 = np.asanyarray(source.dataobj).astype(int)
    expected = (t1 > 100).astype(int) + (t1 > 160)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected)
    back = io.read_image(out)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_array_equal(back.affine, image.affine)


@pytest.mark.parametrize('affine', [OBLIQUE, LAS], ids=['oblique', 'flipped'])
def test_nifti_axes_reversed_and_world_consistent(tmp_path, affine):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 1000, (7, 8, 9)).astype(np.int16)  # (i, j, k)
    image = io.read_image(_save_nifti(tmp_path / 'v.nii.gz', vol, affine))

    assert image.axes == 'ZYX' and image.data.shape == (9, 8, 7)
    assert image.data[4, 3, 2] == vol[2, 3, 4]
    # world of array voxel (z, y, x) == NIfTI world of (x, y, z), axes reversed
    world = image.affine @ [4, 3, 2, 1]
    np.testing.assert_allclose(world[:3], (affine @ [2, 3, 4, 1])[:3][::-1])
    np.testing.assert_allclose(
        image.scale, np.linalg.norm(affine[:3, :3], axis=0)[::-1], rtol=1e-6
    )
    np.testing.assert_allclose(image.translate, affine[:3, 3][::-1])

    kwargs = layer_kwargs(image)
    assert 'translate' not in kwargs  # oblique/flipped: everything in the affine
    np.testing.assert_allclose(
        kwargs['affine'] @ np.diag([*kwargs['scale'], 1.0]), image.affine, atol=1e-12
    )


@pytest.mark.parametrize('affine', [OBLIQUE, LAS], ids=['oblique', 'flipped'])
def test_nifti_label_round_trip_keeps_affine(tmp_path, affine):
    vol = np.arange(7 * 8 * 9, dtype=np.float32).reshape(7, 8, 9)
    image = io.read_image(_save_nifti(tmp_path / 'v.nii', vol, affine))
    labels = (image.data.astype(int) % 5).astype(np.int32)

    out = io.write_labels(tmp_path / 'l.nii.gz', labels, like=image)

    written = nib.load(out)
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), vol.astype(int) % 5)
    back = io.read_image(out)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)


def test_qform_only_header_is_preserved(tmp_path):
    nifti = nib.Nifti1Image(np.zeros((5, 6, 4), np.int16), None)
    nifti.set_qform(LAS, code=1)
    nifti.set_sform(None, code=0)
    nib.save(nifti, tmp_path / 'q.nii')
    image = io.read_image(tmp_path / 'q.nii')

    out = io.write_labels(tmp_path / 'ql.nii', np.ones(image.data.shape), like=image)

    written = nib.load(out)
    assert (written.header['qform_code'], written.header['sform_code']) == (1, 0)
    np.testing.assert_allclose(written.affine, LAS, atol=1e-6)


def test_single_slice_nifti_is_2d_and_written_back_3d(tmp_path):
    src = _save_nifti(
        tmp_path / 'flat.nii.gz',
        np.arange(12, dtype=np.uint8).reshape(3, 4, 1),
        np.diag([2.0, 3.0, 4.0, 1.0]),
    )
    image = io.read_image(src)
    assert (image.axes, image.data.shape, image.scale) == ('YX', (4, 3), (3.0, 2.0))

    out = io.write_labels(tmp_path / 'l.nii.gz', image.data % 3, like=image)

    assert nib.load(out).shape == (3, 4, 1)
    np.testing.assert_array_equal(io.read_image(out).data, image.data % 3)


def test_4d_nifti_is_refused_with_explanation_or_read_as_channels(tmp_path):
    vol = np.random.default_rng(1).random((3, 4, 5, 2)).astype(np.float32)
    src = _save_nifti(tmp_path / 'multi.nii.gz', vol, np.eye(4))

    with pytest.raises(ImageIOError, match=r'4th axis of size 2.*allow_channels'):
        io.read_image(src)

    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2, 3)), np.eye(4)), tmp_path / '5d.nii')
    with pytest.raises(ImageIOError, match='only one extra axis'):
        io.read_image(tmp_path / '5d.nii', allow_channels=True)

    image = io.read_image(src, allow_channels=True)
    assert image.axes == 'CZYX' and image.data.shape == (2, 5, 4, 3)
    assert image.spatial_shape == (5, 4, 3)
    out = io.write_image(tmp_path / 'prob.nii.gz', image.data, like=image)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), vol)
    labels = io.write_labels(tmp_path / 'l.nii.gz', np.ones((5, 4, 3)), like=image)
    assert nib.load(labels).shape == (3, 4, 5)


def test_write_nifti_without_source_uses_scale_and_units(tmp_path):
    like = ImageData(
        data=np.zeros((4, 6, 8)), axes='ZYX', scale=(2.0, 0.5, 0.25), units='µm'
    )
    out = io.write_labels(tmp_path / 'l.nii.gz', np.ones((4, 6, 8), bool), like=like)
    written = nib.load(out)
    assert written.header.get_xyzt_units()[0] == 'micron'
    np.testing.assert_allclose(written.affine, np.diag([0.25, 0.5, 2.0, 1.0]))
    back = io.read_image(out)
    assert (back.scale, back.units) == ((2.0, 0.5, 0.25), 'µm')


# ---------------------------------------------------------------------- TIFF


def test_real_nuclei_tiff_has_pixel_units():
    image = io.read_image(DATA / 'nuclei_image.tif')
    assert (image.axes, image.data.shape, image.data.dtype) == (
        'YX',
        (512, 512),
        np.uint16,
    )
    assert (image.scale, image.units, image.rgb) == ((1.0, 1.0), None, False)


@pytest.mark.parametrize(
    ('name', 'dtype', 'flavour'),
    [
        ('l.tif', np.uint16, 'imagej'),
        ('l.tif', np.uint32, 'ome'),
        ('l.ome.tif', np.uint8, 'ome'),
    ],
)
def test_tiff_labels_keep_pixel_size(tmp_path, name, dtype, flavour):
    like = ImageData(
        data=np.zeros((3, 10, 12)), axes='ZYX', scale=(2.0, 0.3, 0.3), units='µm'
    )
    top = int(np.iinfo(dtype).max)
    labels = np.zeros((3, 10, 12), np.int64)
    labels[1, 2:5, 3:7] = top

    out = io.write_labels(tmp_path / name, labels, like=like)

    back = io.read_image(out)
    assert back.data.dtype == dtype
    np.testing.assert_array_equal(back.data, labels)
    assert back.meta['tiff_flavour'] == flavour
    np.testing.assert_allclose(back.scale, (2.0, 0.3, 0.3), rtol=1e-6)
    assert back.units == 'µm'


def test_tiff_probability_maps_channels(tmp_path):
    like = ImageData(data=np.zeros((4, 8, 9)), axes='ZYX', scale=(1, 0.5, 0.5))
    like.units = 'µm'
    prob = np.random.default_rng(2).random((3, 4, 8, 9))  # CZYX, float64
    out = io.write_image(tmp_path / 'p.tif', prob, like=like)
    back = io.read_image(out)
    assert (back.axes, back.data.dtype) == ('CZYX', np.float32)
    np.testing.assert_allclose(back.data, prob.astype(np.float32))

    prob2d = np.random.default_rng(3).random((8, 9, 2)).astype(np.float32)
    back2d = io.read_image(io.write_image(tmp_path / 'p2.tif', prob2d, axes='YXC'))
    assert back2d.axes == 'YXC' and not back2d.rgb
    np.testing.assert_array_equal(back2d.data, prob2d)


def test_ome_tiff_sizes_are_converted_to_microns(tmp_path):
    path = tmp_path / 'stack.ome.tif'
    metadata = {
        'axes': 'ZCYX',
        'PhysicalSizeX': 250.0,
        'PhysicalSizeXUnit': 'nm',
        'PhysicalSizeY': 250.0,
        'PhysicalSizeYUnit': 'nm',
        'PhysicalSizeZ': 1.5,
    }
    data = np.zeros((5, 2, 16, 16), np.uint16)
    tifffile.imwrite(path, data, ome=True, metadata=metadata)

    image = io.read_image(path)

    assert (image.axes, image.data.shape) == ('CZYX', (2, 5, 16, 16))
    np.testing.assert_allclose(image.scale, (1.5, 0.25, 0.25))
    assert layer_kwargs(image)['channel_axis'] == 0


def test_imagej_units_and_rgb(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / 'rgb.tif', rgb, photometric='rgb')
    image = io.read_image(tmp_path / 'rgb.tif')
    assert (image.axes, image.rgb) == ('YXC', True)
    assert layer_kwargs(image)['rgb'] is True

    tifffile.imwrite(
        tmp_path / 'nm.tif',
        np.zeros((4, 5), np.uint8),
        imagej=True,
        resolution=(1 / 80.0, 1 / 80.0),
        metadata={'unit': 'nm'},
    )
    np.testing.assert_allclose(io.read_image(tmp_path / 'nm.tif').scale, (0.08, 0.08))


# ---------------------------------------------------------------- PNG / JPEG


def test_png_labels_and_rgb_images(tmp_path):
    labels = np.zeros((9, 11), np.int64)
    labels[2:4, 3:8] = 300
    out = io.write_labels(tmp_path / 'l.png', labels)
    back = io.read_image(out)
    assert back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, labels)

    with pytest.raises(ImageIOError, match='PNG holds 2D'):
        io.write_labels(tmp_path / 'v.png', np.ones((2, 3, 4), np.uint8))

    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 1] = 200
    io.write_image(tmp_path / 'rgb.png', rgb, axes='YXC')
    image = io.read_image(tmp_path / 'rgb.png')
    assert (image.axes, image.rgb) == ('YXC', True)
    np.testing.assert_array_equal(image.data, rgb)


def test_jpeg_is_read_as_rgb(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / 'photo.jpg', np.full((8, 8, 3), 128, np.uint8))
    image = io.read_image(tmp_path / 'photo.jpg')
    assert (image.axes, image.rgb, image.data.shape) == ('YXC', True, (8, 8, 3))


# -------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    ('top', 'expected'),
    [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65536, np.uint32)],
)
def test_smallest_unsigned_dtype(tmp_path, top, expected):
    labels = np.zeros((4, 4), np.int64)
    labels[0, 0] = top
    assert io.label_dtype(labels) == expected
    out = io.write_labels(tmp_path / 'l.nii.gz', labels)
    assert nib.load(out).get_data_dtype() == expected


def test_label_dtype_edge_cases():
    assert io.label_dtype(np.ones((2, 2), bool)) == np.uint8
    assert io.label_dtype(np.array([[0.0, 3.0]])) == np.uint8
    with pytest.raises(ImageIOError, match='>= 0'):
        io.label_dtype(np.array([[-1, 2]]))
    with pytest.raises(ImageIOError, match='whole numbers'):
        io.label_dtype(np.array([[0.5, 1.0]]))


def test_float64_image_is_stored_as_float32(tmp_path):
    out = io.write_image(tmp_path / 'p.nii.gz', np.full((3, 4, 5), 0.25))
    assert nib.load(out).get_data_dtype() == np.float32


# -------------------------------------------------------------- atomic write


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    io.write_labels(tmp_path / 'a.nii.gz', np.ones((3, 4, 5), np.uint8))
    io.write_labels(tmp_path / 'a.tif', np.ones((3, 4, 5), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.nii.gz', 'a.tif']


@pytest.mark.parametrize('name', ['old.nii.gz', 'old.tif'])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, name):
    target = tmp_path / name
    io.write_labels(target, np.ones((3, 4, 5), np.uint8))
    before = target.read_bytes()

    def crash_midway(path):
        Path(path).write_bytes(b'half a file')
        raise OSError('disk full')

    monkeypatch.setattr(nib, 'save', lambda image, path: crash_midway(path))
    monkeypatch.setattr(tifffile, 'imwrite', lambda path, *a, **k: crash_midway(path))
    with pytest.raises(OSError, match='disk full'):
        io.write_labels(target, np.full((3, 4, 5), 7, np.uint8))

    assert target.read_bytes() == before
    assert _partials(tmp_path) == []


def test_write_creates_missing_folders(tmp_path):
    out = io.write_labels(tmp_path / 'a' / 'b' / 'l.tif', np.ones((4, 4), np.uint8))
    assert out.is_file() and out.is_absolute()


# -------------------------------------------------------------------- errors


def test_unsupported_extension_lists_supported(tmp_path):
    (tmp_path / 'x.bmp').write_bytes(b'BM')
    with pytest.raises(ImageIOError, match=r"'\.bmp'.*\.nii, \.nii\.gz, \.tif"):
        io.read_image(tmp_path / 'x.bmp')
    with pytest.raises(ImageIOError, match=r'supported: \.nii\.gz, \.nii, \.tif'):
        io.write_labels(tmp_path / 'x.npy', np.ones((2, 2), np.uint8))


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such image file'):
        io.read_image(tmp_path / 'missing.nii.gz')
    (tmp_path / 'scan.nii').mkdir()
    with pytest.raises(ImageIOError, match='is a folder'):
        io.read_image(tmp_path / 'scan.nii')


def test_corrupt_files_are_reported(tmp_path):
    (tmp_path / 'junk.nii.gz').write_bytes(gzip.compress(b'not a nifti header'))
    with pytest.raises(ImageIOError, match='junk.nii.gz is not a readable NIfTI'):
        io.read_image(tmp_path / 'junk.nii.gz')

    good = (DATA / 'brain_tissue_labels.nii.gz').read_bytes()
    (tmp_path / 'cut.nii.gz').write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageIOError, match='truncated'):
        io.read_image(tmp_path / 'cut.nii.gz')

    (tmp_path / 'junk.tif').write_bytes(b'II*\x00' + b'\xff' * 64)
    with pytest.raises(ImageIOError, match='junk.tif is not a readable TIFF'):
        io.read_image(tmp_path / 'junk.tif')


def test_labels_shape_must_match_reference(tmp_path):
    like = ImageData(data=np.zeros((2, 5, 6)), axes='ZYX')
    with pytest.raises(ImageIOError, match=r'\(5, 6\) does not match.*ZYX'):
        io.write_labels(tmp_path / 'l.nii.gz', np.ones((5, 6), np.uint8), like=like)


def test_unknown_sample_name():
    with pytest.raises(ValueError, match='choose one of: nuclei, brain'):
        io.load_sample('lungs')


# ----------------------------------------------------------------- ImageData


def test_metadata_round_trip_keeps_geometry():
    image = io.read_image(DATA / 'brain_tissue_labels.nii.gz')
    clone = ImageData.from_metadata(image.to_metadata())
    assert clone.data.shape == image.data.shape
    assert clone.data.strides == (0, 0, 0)  # a placeholder, no pixel memory
    assert (clone.axes, clone.scale, clone.translate, clone.units) == (
        image.axes,
        image.scale,
        image.translate,
        image.units,
    )
    np.testing.assert_array_equal(clone.affine, image.affine)
    assert clone.meta['nifti_header'] is image.meta['nifti_header']


def test_imagedata_validates_axes():
    with pytest.raises(ValueError, match='do not describe'):
        ImageData(data=np.zeros((2, 3)), axes='ZYX')
    with pytest.raises(ValueError, match='one value per spatial axis'):
        ImageData(data=np.zeros((2, 3)), axes='YX', scale=(1.0,))
