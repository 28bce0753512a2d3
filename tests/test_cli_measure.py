"""``napari-vmunet measure`` and ``predict --objects --measure`` end to end
on files the tests write from the bundled samples."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vmunet.cli import main
from napari_vmunet.io import (
    ImageData,
    load_sample,
    read_image,
    write_image,
    write_labels,
)
from napari_vmunet.measure import read_csv


@pytest.fixture(scope='module')
def nuclei_files(tmp_path_factory):
    """The nuclei sample's held-out rows as TIFFs at 0.5 µm pixels: the image
    and the union of its human instance labels (a semantic mask)."""
    folder = tmp_path_factory.mktemp('nuclei')
    image, reference = load_sample('nuclei')
    like = ImageData(data=image.data[320:], axes='YX', scale=(0.5, 0.5), units='µm')
    img = write_image(folder / 'nuclei.tif', image.data[320:], like=like)
    mask = write_labels(folder / 'mask.tif', reference[320:] > 0, like=like)
    return img, mask, reference[320:]


def test_measure_an_anisotropic_nifti_box_in_millilitres(tmp_path, capsys):
    import nibabel as nib

    data = np.zeros((16, 16, 16), np.uint8)
    data[3:13, 2:12, 1:11] = 2
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / 'b.nii')
    out = tmp_path / 'table.csv'
    code = main(
        [
            'measure',
            str(tmp_path / 'b.nii'),
            '--class-names',
            'background,liver,lesion',
            '--output',
            str(out),
            '--quiet',
        ]
    )
    assert code == 0
    table = read_csv(out)
    assert list(table['class']) == ['lesion']
    assert table['volume_mL'][0] == pytest.approx(3.0)
    assert table['volume_mm3'][0] == pytest.approx(3000)
    assert 'lesion 3 mL' in capsys.readouterr().out


def test_measure_objects_of_a_mask_with_the_image(nuclei_files, tmp_path, capsys):
    img, mask, reference = nuclei_files
    out = tmp_path / 'nuclei.csv'
    objects = tmp_path / 'objects.tif'
    args = ['measure', str(mask), '--image', str(img), '--output', str(out)]
    extra = ['--split-touching', '--min-size', '5um2', '--objects-output', str(objects)]
    assert main([*args, '--quiet', *extra]) == 0
    table = read_csv(out)
    header = out.read_text().splitlines()[0].split(',')
    assert header[:6] == [
        'label', 'class_index', 'class', 'pixels', 'area_um2',
        'equivalent_diameter_um',
    ]  # fmt: skip
    assert {'centroid_y_um', 'intensity_mean', 'intensity_max'} <= set(header)
    saved = read_image(objects)
    assert saved.scale == (0.5, 0.5)
    assert sorted(np.unique(saved.data[saved.data > 0])) == list(table['label'])
    # the split finds (nearly) every human-drawn nucleus of these rows
    assert abs(table.n_rows - len(np.unique(reference)) + 1) <= 3
    np.testing.assert_allclose(table['area_um2'], table['pixels'] * 0.25)
    assert (table['area_um2'] >= 5).all()
    # intensities are those of the original image inside each object
    raw = read_image(img).data
    first = saved.data == table['label'][0]
    assert table['intensity_max'][0] == raw[first].max()
    assert 'objects' in capsys.readouterr().out


def test_measure_refuses_before_computing(nuclei_files, tmp_path, capsys):
    img, mask, _ = nuclei_files
    out = tmp_path / 'exists.csv'
    out.write_text('keep me')
    base = ['measure', str(mask), '--output']
    assert main([*base, str(out)]) == 1
    assert 'exists already' in capsys.readouterr().err
    assert out.read_text() == 'keep me'
    assert main([*base, str(img)]) == 1  # not a CSV, and an input
    assert main([*base, str(tmp_path / 't.csv'), '--min-size', '3mm3']) == 1
    assert 'does not fit a 2D image' in capsys.readouterr().err
    assert main([*base, str(tmp_path / 't.csv'), '--objects-output', 'x.tif']) == 1
    assert 'needs --objects' in capsys.readouterr().err
    assert not (tmp_path / 't.csv').exists()


def test_measure_an_empty_map_writes_an_empty_table_with_a_note(tmp_path, capsys):
    write_labels(tmp_path / 'empty.tif', np.zeros((20, 30), np.uint8))
    out = tmp_path / 'empty.csv'
    assert (
        main(['measure', str(tmp_path / 'empty.tif'), '--objects', '-o', str(out)]) == 0
    )
    assert read_csv(out).n_rows == 0
    assert out.read_text().startswith('label,class_index,class,pixels,area_px')
    err = capsys.readouterr().err
    assert 'no objects: the label map has no foreground' in err


def test_predict_objects_and_measure(nuclei_files, tmp_path, capsys):
    """The demo-nuclei model on the held-out rows: object ids in the labels
    file, one CSV row per object, class names from the checkpoint."""
    img, _, reference = nuclei_files
    out = tmp_path / 'pred'
    table_path = tmp_path / 'objects.csv'
    code = main(
        [
            'predict', str(img), '--model', 'demo-nuclei', '--output', str(out),
            '--device', 'cpu', '--objects', '--split-touching', '--quiet',
            '--measure', str(table_path),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    labels = read_image(out / 'nuclei_labels.tif')
    table = read_csv(table_path)
    assert labels.data.max() == table.n_rows > 40
    assert list(table)[:3] == ['image', 'label', 'class_index']
    assert set(table['image']) == {'nuclei.tif'} and set(table['class']) == {'nucleus'}
    from napari_vmunet.measure import match_objects

    assert match_objects(labels.data, reference).f1 > 0.9
    # the table is checked before the model is loaded
    assert main(['predict', str(img), '-m', 'demo-nuclei', '-o', str(tmp_path / 'p2'),
                 '--measure', str(table_path)]) == 1  # fmt: skip
    assert 'exists already' in capsys.readouterr().err
