"""Objects and measurements (napari_vmunet.measure): physical units, 3D
objects, the split of touching objects, the table and its CSV."""

from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np
import pytest

from napari_vmunet.io import load_sample, read_image
from napari_vmunet.measure import (
    Cancelled,
    Geometry,
    Table,
    drive,
    find_objects,
    iter_objects,
    match_objects,
    measure,
    parse_size,
    read_csv,
    size_in_pixels,
)


def ball(shape, center, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist2 = sum(
        ((g - c) * sp) ** 2 for g, c, sp in zip(grid, center, spacing, strict=True)
    )
    return dist2 <= radius**2


# --------------------------------------------------------------- units
def test_anisotropic_box_is_three_millilitres(tmp_path):
    """10x10x10 voxels of 1x1x3 mm: 3000 mm³ = 3.0 mL, read from a NIfTI's
    geometry (voxel sizes 1, 1, 3 mm along i, j, k)."""
    import nibabel as nib

    data = np.zeros((20, 20, 20), np.uint8)  # nifti (i, j, k)
    data[2:12, 5:15, 4:14] = 1
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = (-10, 20, 30)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / 'box.nii.gz')
    labels = read_image(tmp_path / 'box.nii.gz')  # ZYX: k, j, i
    assert labels.scale == (3.0, 1.0, 1.0) and labels.units == 'mm'
    geometry = Geometry.from_image(labels)
    table = measure(labels.data, geometry=geometry)
    assert table.n_rows == 1
    assert table['voxels'][0] == 1000
    assert table['volume_mm3'][0] == pytest.approx(3000.0)
    assert table['volume_mL'][0] == pytest.approx(3.0)
    diameter = (6 * 3000 / np.pi) ** (1 / 3)
    assert table['equivalent_diameter_mm'][0] == pytest.approx(diameter)
    # world centroid (S, A, R mm): voxel centre (k 8.5, j 9.5, i 6.5)
    assert table['centroid_z_mm'][0] == pytest.approx(30 + 3 * 8.5)
    assert table['centroid_y_mm'][0] == pytest.approx(20 + 9.5)
    assert table['centroid_x_mm'][0] == pytest.approx(-10 + 6.5)
    assert [table[f'bbox_min_{a}_px'][0] for a in 'zyx'] == [4, 5, 2]
    assert [table[f'bbox_max_{a}_px'][0] for a in 'zyx'] == [14, 15, 12]


def test_column_units_follow_the_image():
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:4] = 1
    um = measure(labels, geometry=Geometry.from_scale((0.5, 0.25), unit='µm'))
    assert um['area_um2'][0] == pytest.approx(8 * 0.125)
    assert {'centroid_y_um', 'centroid_x_um', 'equivalent_diameter_um'} <= set(um)
    px = measure(labels)
    assert px['area_px'][0] == 8 and 'area_um2' not in px
    assert any('no physical pixel size' in n for n in px.notes)
    bare = measure(labels, geometry=Geometry.from_scale((2.0, 2.0)))
    assert bare['area_u2'][0] == 32 and any('no unit' in n for n in bare.notes)
    um3 = measure(labels[None], geometry=Geometry.from_scale((2, 1, 1), unit='um'))
    assert um3['volume_um3'][0] == 16 and 'volume_mL' not in um3


def test_oblique_geometry_gives_world_centroids():
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees
    world = np.eye(3)
    world[:2, :2] = rotation * 2.0
    world[:2, 2] = (5.0, 7.0)
    labels = np.zeros((6, 6), np.uint8)
    labels[1, 3] = 1
    table = measure(labels, geometry=Geometry(world, 'mm'))
    assert table['area_mm2'][0] == pytest.approx(4.0)  # spacing 2 x 2
    y, x = world[:2, :2] @ [1, 3] + world[:2, 2]
    assert table['centroid_y_mm'][0] == pytest.approx(y)
    assert table['centroid_x_mm'][0] == pytest.approx(x)


def test_sizes_with_units():
    mm = Geometry.from_scale((3.0, 1.0, 1.0), unit='mm')
    assert parse_size('30') == (30.0, 'px')
    assert parse_size('12.5 µm²') == (12.5, 'um2')
    assert size_in_pixels(*parse_size('0.003mL'), mm) == pytest.approx(1.0)
    assert size_in_pixels(*parse_size('30mm3'), mm) == pytest.approx(10.0)
    um = Geometry.from_scale((0.5, 0.5), unit='um')
    assert size_in_pixels(*parse_size('1um2'), um) == pytest.approx(4.0)
    assert size_in_pixels(*parse_size('1e-6mm2'), um) == pytest.approx(4.0)
    with pytest.raises(ValueError, match='does not fit a 2D image'):
        size_in_pixels(*parse_size('5mm3'), um)
    with pytest.raises(ValueError, match='no physical unit'):
        size_in_pixels(*parse_size('5um2'), Geometry.pixels(2))
    with pytest.raises(ValueError, match='cannot read the size'):
        parse_size('five')
    with pytest.raises(ValueError, match='unknown length unit'):
        Geometry.from_scale((1, 1), unit='parsec')


# ------------------------------------------------------------- objects
def test_objects_connect_in_3d_not_slice_by_slice():
    """A C-shaped object: two blobs in slices 0 and 2, joined in slice 1.
    Slice by slice it would be two objects in each of slices 0 and 2."""
    labels = np.zeros((3, 10, 10), np.uint8)
    labels[0, 1:4, 1:4] = labels[0, 6:9, 1:4] = 1
    labels[1, 1:9, 1:4] = 1
    labels[2, 1:4, 1:4] = labels[2, 6:9, 1:4] = 1
    objects = find_objects(labels)
    assert objects.count == 1
    assert objects.counts() == {'class 1': 1}


def test_touching_balls_split_in_3d_with_anisotropic_spacing():
    """Two touching balls of radius 6 mm on 2x1x1 mm voxels: one component,
    two objects after the split, each about its own ball's volume."""
    spacing = (2.0, 1.0, 1.0)
    shape = (16, 30, 40)
    a = ball(shape, (8, 15, 12), 6, spacing)
    b = ball(shape, (8, 15, 23), 6, spacing)
    labels = (a | b).astype(np.uint8)
    geometry = Geometry.from_scale(spacing, unit='mm')
    assert find_objects(labels, geometry=geometry).count == 1
    objects = find_objects(labels, geometry=geometry, split_touching=True)
    assert objects.count == 2
    table = measure(objects, geometry=geometry)
    ball_mm3 = a.sum() * 2.0
    np.testing.assert_allclose(table['volume_mm3'], ball_mm3, rtol=0.1)
    assert sorted(table['centroid_x_mm'].round()) == [12, 23]
    # the split is in 3D: every object spans many slices
    assert all(table['bbox_max_z_px'] - table['bbox_min_z_px'] >= 5)


def test_split_on_probability_follows_its_valley():
    """Two squares joined by a bridge: the distance transform cuts the
    bridge in its middle, the probability map where the model doubted."""
    labels = np.zeros((20, 44), np.uint8)
    labels[4:16, 2:14] = labels[4:16, 30:42] = 1
    labels[7:13, 14:30] = 1
    probability = np.ones(labels.shape, np.float32)
    probability[:, 14:16] = 0.5
    by_distance = find_objects(labels, split_touching=True)
    by_probability = find_objects(
        labels, split_touching=True, split_on='probability', probabilities=probability
    )
    assert by_distance.count == by_probability.count == 2
    left = by_distance.labels[10, 5]
    assert (by_distance.labels[10] == left).sum() == 12 + 8  # half the bridge
    left = by_probability.labels[10, 5]
    # the cut lies in the valley (columns 14-15), not in the middle (22)
    assert 12 <= (by_probability.labels[10] == left).sum() <= 12 + 2
    with pytest.raises(ValueError, match='needs the class probabilities'):
        find_objects(labels, split_touching=True, split_on='probability')


def test_min_size_and_hole_filling():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:9, 2:9] = 1
    labels[4:7, 4:7] = 0  # a hole of 9 pixels
    labels[5, 5] = 2  # with a pixel of another class inside
    labels[15:17, 15:17] = 1  # 4 pixels
    plain = find_objects(labels)
    assert plain.count == 3
    filled = find_objects(labels, fill_holes=True)
    ring = filled.labels[2, 2]
    assert (filled.labels == ring).sum() == 49 - 1  # the hole, not the class 2
    assert filled.classes[filled.labels[5, 5]] == 2
    big = find_objects(labels, min_size=5)
    assert big.count == 1 and big.counts() == {'class 1': 1}
    assert any('dropped' in n for n in big.notes)
    um = Geometry.from_scale((0.5, 0.5), unit='um')
    size = size_in_pixels(*parse_size('1.2um2'), um)  # 4.8 pixels
    assert find_objects(labels, geometry=um, min_size=size).count == 1


def test_instances_are_relabelled_from_the_map_as_it_is():
    """A hand-corrected instance map: an object cut in two by erasing
    becomes two objects, touching objects with different ids stay apart,
    and each keeps its class."""
    labels = np.zeros((10, 20), np.uint16)
    labels[2:8, 2:8] = 7
    labels[2:8, 8:14] = 9  # touches 7
    labels[2:8, 15:19] = 12
    labels[:, 17] = 0  # the user cut 12 in two
    classes = np.zeros(13, int)
    classes[[7, 9, 12]] = [1, 2, 1]
    objects = find_objects(labels, instances=True, classes=classes)
    assert objects.count == 4
    assert sorted(objects.classes[1:].tolist()) == [1, 1, 1, 2]
    assert objects.classes[objects.labels[4, 10]] == 2


def test_empty_prediction_gives_an_empty_table_with_a_note(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    objects = find_objects(labels, split_touching=True, min_size=3)
    assert objects.count == 0
    assert objects.notes == [
        'no objects: the label map has no foreground (every pixel is 0)'
    ]
    table = measure(objects, np.ones((16, 16)))
    assert table.n_rows == 0
    assert {'label', 'class', 'area_px', 'intensity_mean'} <= set(table)
    assert any(n.startswith('no objects') for n in table.notes)
    path = table.to_csv(tmp_path / 'empty.csv')
    assert path.read_text().splitlines()[0].startswith('label,class_index,class,')
    assert len(path.read_text().splitlines()) == 1


# -------------------------------------------------------- measurements
def test_intensities_on_the_original_image():
    labels = np.zeros((6, 6), np.uint8)
    labels[1:3, 1:3] = 1
    labels[4:6, 4:6] = 2
    image = np.arange(36, dtype=np.uint16).reshape(6, 6) * 100
    table = measure(labels, image, class_names=['background', 'a', 'b'])
    assert list(table['class']) == ['a', 'b']
    assert table['intensity_min'][0] == 700 and table['intensity_max'][0] == 1400
    assert table['intensity_mean'][0] == pytest.approx((7 + 8 + 13 + 14) * 25)
    rgb = np.stack([image, image * 0 + 5], axis=-1)
    per_channel = measure(labels, rgb, channel_axis=-1)
    assert per_channel['intensity_mean_c1'][1] == 5
    with pytest.raises(ValueError, match='does not match the label map'):
        measure(labels, image[:5])


def test_real_brain_volumes_in_millilitres():
    """Per class on the bundled tissue map: GM and WM volumes are their voxel
    counts at 1 mm³ (1000 per mL)."""
    image, labels = load_sample('brain')
    geometry = Geometry.from_image(image)
    table = measure(
        labels,
        image.data,
        geometry=geometry,
        class_names=['background', 'grey matter', 'white matter'],
    )
    assert list(table['class']) == ['grey matter', 'white matter']
    for row, value in enumerate((1, 2)):
        assert table['volume_mL'][row] == pytest.approx((labels == value).sum() / 1000)
    # the MNI152 template is larger than an average brain (it is registered
    # to a large reference head): about 1.1 L of grey matter here
    assert 600 < table['volume_mL'][0] < 1500


def test_split_recovers_the_human_nuclei():
    """On the bundled nuclei sample's human instances: their union merges
    touching nuclei, the split gives them back (F1 at IoU 0.5)."""
    _, reference = load_sample('nuclei')
    semantic = (reference > 0).astype(np.uint8)
    plain = match_objects(find_objects(semantic).labels, reference)
    split = match_objects(find_objects(semantic, split_touching=True).labels, reference)
    assert plain.reference == 125
    assert plain.f1 < 0.9 < split.f1
    assert split.mean_iou > 0.85


def test_match_objects_counts():
    a = np.zeros((10, 10), int)
    a[0:4, 0:4] = 1
    a[6:9, 6:9] = 2
    b = np.zeros((10, 10), int)
    b[0:4, 0:3] = 5  # IoU 12/16
    b[0:2, 6:8] = 6  # no overlap
    m = match_objects(a, b)
    assert (m.predicted, m.reference, m.matched) == (2, 2, 1)
    assert m.f1 == 0.5 and m.mean_iou == pytest.approx(0.75)


# ---------------------------------------------------- table and progress
def test_csv_round_trip_keeps_columns_and_units(tmp_path):
    labels = np.zeros((3, 12, 12), np.uint8)
    labels[0:2, 1:4, 1:5] = 1
    labels[1:3, 6:11, 6:9] = 2
    geometry = Geometry.from_scale((3.0, 1.0, 1.0), (1.0, 0.0, 0.0), unit='mm')
    objects = find_objects(labels, class_names=['background', '=evil', 'lesion'])
    table = measure(objects, labels * 10, geometry=geometry)
    path = table.to_csv(tmp_path / 'out' / 'table.csv')
    header = path.read_text(encoding='utf-8').splitlines()[0].split(',')
    assert header == [
        'label', 'class_index', 'class', 'voxels', 'volume_mm3', 'volume_mL',
        'equivalent_diameter_mm', 'centroid_z_mm', 'centroid_y_mm',
        'centroid_x_mm', 'bbox_min_z_px', 'bbox_min_y_px', 'bbox_min_x_px',
        'bbox_max_z_px', 'bbox_max_y_px', 'bbox_max_x_px', 'intensity_mean',
        'intensity_min', 'intensity_max',
    ]  # fmt: skip
    back = read_csv(path)
    assert list(back['class']) == ["'=evil", 'lesion']  # no spreadsheet formula
    np.testing.assert_allclose(back['volume_mL'], table['volume_mL'])
    np.testing.assert_array_equal(back['voxels'], [24, 30])
    assert not list(tmp_path.glob('out/.*'))  # no temporary left behind
    frame = table.to_pandas()
    assert list(frame.columns) == header and len(frame) == 2


def test_table_checks_its_columns():
    table = Table({'a': [1, 2]})
    with pytest.raises(ValueError, match='has 3 rows'):
        table['b'] = [1, 2, 3]
    assert table.row(1) == {'a': 2}
    assert table.take(np.array([True, False])).n_rows == 1


def test_progress_and_cancel():
    labels = np.zeros((40, 40), np.uint8)
    labels[::4, ::4] = 1  # 100 objects
    steps = list_steps(iter_objects(labels))
    assert steps[0].done == 0 and steps[-1].done == steps[-1].total == 100
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        find_objects(labels, should_cancel=stop)


def list_steps(gen):
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration:
            return steps


@pytest.mark.parametrize(
    ('labels', 'message'),
    [
        (np.zeros((4, 4), np.float32) + 0.5, 'whole numbers'),
        (np.zeros(4, np.uint8), '2D or 3D'),
        (-np.ones((4, 4), np.int16), 'negative'),
    ],
)
def test_bad_label_maps_are_refused_clearly(labels, message):
    with pytest.raises(ValueError, match=message):
        find_objects(labels)


def test_the_measure_package_needs_neither_torch_nor_qt():
    import subprocess
    import sys

    code = (
        'import sys, napari_vmunet.measure\n'
        'print(sorted(m for m in ("torch", "qtpy", "napari", "pandas") '
        'if m in sys.modules))'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == '[]'


@pytest.mark.parametrize('shape', [(37, 20, 23), (61, 45)])
def test_boxes_found_slab_by_slab_equal_find_objects(shape):
    """The slab-wise boxes (which let the GUI thread run between slabs)
    are scipy's, objects spanning many slabs and absent values included."""
    from scipy import ndimage as ndi
    from skimage.measure import label as sk_label

    from napari_vmunet.measure._boxes import find_boxes

    rng = np.random.default_rng(0)
    labels = sk_label(ndi.gaussian_filter(rng.random(shape), 1.5) > 0.5)
    labels[labels == 3] = 0  # a value missing in the middle
    want = ndi.find_objects(labels)
    plane = int(np.prod(shape[1:]))
    for slab in (1, plane, 3 * plane + 1, labels.size):
        assert find_boxes(labels, slab_pixels=slab) == want
    assert find_boxes(np.zeros(shape, np.int32)) == []


def test_measurements_per_box_equal_regionprops_on_the_whole_map():
    """Each object measured on the crop of its box gives what regionprops
    gives on the whole map: centroids and boxes shifted back, intensities."""
    from scipy import ndimage as ndi
    from skimage.measure import label as sk_label
    from skimage.measure import regionprops_table

    rng = np.random.default_rng(1)
    labels = sk_label(ndi.gaussian_filter(rng.random((30, 40, 50)), 1.5) > 0.52)
    image = rng.random(labels.shape).astype(np.float32)
    geometry = Geometry(np.diag([3.0, 1.0, 0.5, 1.0]), 'mm')
    table = measure(labels, image, geometry=geometry, classes=np.ones(labels.max() + 1))
    want = regionprops_table(
        labels,
        image,
        spacing=(3.0, 1.0, 0.5),
        properties=(
            'label',
            'area',
            'centroid',
            'bbox',
            'intensity_mean',
            'intensity_max',
        ),
    )
    np.testing.assert_array_equal(table['label'], want['label'])
    np.testing.assert_allclose(table['volume_mm3'], want['area'])
    for i, axis in enumerate('zyx'):
        np.testing.assert_allclose(table[f'centroid_{axis}_mm'], want[f'centroid-{i}'])
        np.testing.assert_array_equal(table[f'bbox_min_{axis}_px'], want[f'bbox-{i}'])
        np.testing.assert_array_equal(
            table[f'bbox_max_{axis}_px'], want[f'bbox-{i + 3}']
        )
    np.testing.assert_allclose(
        table['intensity_mean'], want['intensity_mean'], rtol=1e-6
    )
    np.testing.assert_allclose(table['intensity_max'], want['intensity_max'])


def touching_balls():
    """Two pairs of touching balls and a lone one, at 2x1x1 µm voxels."""
    shape = (24, 48, 48)
    spacing = (2.0, 1.0, 1.0)
    labels = np.zeros(shape, np.uint8)
    for centre in [(12, 12, 12), (12, 12, 21), (12, 34, 30), (12, 34, 39), (6, 36, 8)]:
        labels |= ball(shape, centre, 5.0, spacing).astype(np.uint8)
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    return labels, image, Geometry(np.diag([*spacing, 1.0]), 'µm')


def test_a_measuring_child_process_gives_what_this_process_gives():
    """Large maps are measured in a child (its own GIL): objects, their
    split, the table and the intensities are those of the in-process job."""
    from napari_vmunet.measure.job import iter_in_child, iter_objects_and_table

    labels, image, geometry = touching_balls()
    settings = dict(split_touching=True, fill_holes=False, min_size=(10, 'um3'))
    here = drive(iter_objects_and_table(labels, settings, geometry, image=image))
    steps = []
    child = drive(
        iter_in_child(labels, settings, geometry, image=image), progress=steps.append
    )
    assert here[0].labels.max() == 5
    np.testing.assert_array_equal(child[0].labels, here[0].labels)
    np.testing.assert_array_equal(child[0].classes, here[0].classes)
    assert child[1].keys() == here[1].keys()
    for name in here[1]:
        np.testing.assert_array_equal(child[1][name], here[1][name])
    assert child[1].notes == here[1].notes
    assert {s.stage for s in steps} == {'objects', 'measure'}


def test_a_measuring_child_reports_its_error_and_cancel_ends_it():
    from napari_vmunet.measure.job import MeasureProcessError, iter_in_child

    labels, _, geometry = touching_balls()
    wrong = Geometry(np.eye(3), 'µm')  # 2D geometry for a 3D map
    with pytest.raises(MeasureProcessError, match='geometry is 2D'):
        drive(iter_in_child(labels, None, geometry=wrong))
    big = np.tile(labels, (4, 4, 4))  # seconds of work: cancel it early
    gen = iter_in_child(
        big, dict(split_touching=True, fill_holes=True, min_size=None), geometry
    )
    next(gen)

    def measuring():
        return [p for p in mp.active_children() if p.name == 'napari-vmunet measure']

    assert len(measuring()) == 1
    gen.close()  # what a cancelled GUI worker does
    assert measuring() == []


def test_copies_in_slabs_are_exact(monkeypatch):
    from napari_vmunet.measure import job

    monkeypatch.setattr(job, 'SLAB_BYTES', 1000)
    src = np.random.default_rng(3).integers(0, 9, (37, 20, 30)).astype(np.int32)
    for view in (src, src[:, ::2, ::-1], src[5]):
        dst = np.zeros(view.shape, view.dtype)
        job.copy_in_slabs(dst, view)
        np.testing.assert_array_equal(dst, view)
