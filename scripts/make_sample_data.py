"""Build ``src/napari_vmunet/data/`` (the sample data shipped in the wheel)
from the real data inside the installed ``stardist`` and ``nilearn`` packages.

    pip install --no-deps stardist nilearn   # only needed to run this script
    python scripts/make_sample_data.py

The packages are located with :func:`importlib.util.find_spec` and never
imported (stardist would pull in TensorFlow).  Output is deterministic (no
timestamps), so re-running it leaves git clean.  Provenance and licences are
in ``src/napari_vmunet/data/README.md``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

OUT = Path(__file__).resolve().parents[1] / 'src' / 'napari_vmunet' / 'data'
MNI = 'mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz'


def package_dir(name: str) -> Path:
    """The folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f'{name} is not installed: pip install --no-deps {name}')
    return Path(next(iter(spec.submodule_search_locations)))


def write_tiff(path: Path, data: np.ndarray) -> None:
    """Lossless zlib TIFF that any reader (Fiji, tifffile, imageio) opens."""
    tifffile.imwrite(
        path,
        data,
        compression='zlib',
        compressionargs={'level': 9},
        predictor=True,
        photometric='minisblack',
        metadata=None,
        software=None,
    )


def write_nifti(path: Path, image: nib.Nifti1Image) -> None:
    """gzip level 9 with mtime 0: smaller than nibabel's default and
    byte-identical on every run."""
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=9, mtime=0))


def make_nuclei(out: Path) -> None:
    """The DSB2018 image and its human-drawn instance mask, values untouched."""
    images = package_dir('stardist') / 'data' / 'images'
    image = tifffile.imread(images / 'img2d.tif')
    mask = tifffile.imread(images / 'mask2d.tif')
    write_tiff(out / 'nuclei_image.tif', image)
    write_tiff(out / 'nuclei_labels.tif', mask)


def tissue_labels(p_gm: np.ndarray, p_wm: np.ndarray) -> np.ndarray:
    """0 background, 1 grey matter, 2 white matter from probability maps."""
    labels = np.zeros(p_gm.shape, np.uint8)
    labels[(p_gm > 0.5) & (p_gm >= p_wm)] = 1
    labels[(p_wm > 0.5) & (p_wm > p_gm)] = 2
    return labels


def probability(path: Path) -> np.ndarray:
    """The template maps are uint8; nilearn scales them by their maximum."""
    data = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    return data / data.max()


def make_brain(out: Path) -> None:
    """The T1 template as it is, plus a 3-class tissue map on its grid."""
    folder = package_dir('nilearn') / 'datasets' / 'data'
    t1 = nib.load(folder / MNI.format('t1'))
    write_nifti(out / 'brain_t1.nii.gz', t1)
    labels = tissue_labels(
        probability(folder / MNI.format('gm')), probability(folder / MNI.format('wm'))
    )
    header = t1.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent('label')
    header['cal_min'], header['cal_max'] = 0, 2
    header['descrip'] = b'tissue 1=GM 2=WM (p>0.5) MNI152 2009a'
    write_nifti(
        out / 'brain_tissue_labels.nii.gz', nib.Nifti1Image(labels, t1.affine, header)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=OUT, help='output folder')
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    make_nuclei(args.out)
    make_brain(args.out)
    for path in sorted(args.out.iterdir()):
        print(f'{path.stat().st_size / 1e3:9.1f} kB  {path.name}')


if __name__ == '__main__':
    main()
