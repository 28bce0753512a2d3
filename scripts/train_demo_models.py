"""Train the built-in demo models with ``napari-vmunet train`` on the samples.

    python scripts/train_demo_models.py [nuclei] [brain] [--threads 2]
    python scripts/train_demo_models.py --stats-only

``--stats-only`` retrains nothing: it records the summary of the training
inputs (``rules.input_stats``, written by every training since) in the
bundled models, computed from the same training part of each sample.

For each sample it writes the training files into ``demo-training/``
(``napari_vmunet.cli.demo.training_part``: the nuclei image's top 320 rows;
the brain volume with labels on every fourth axial slice only), runs the
CLI command printed below (the same command is stored in the model's
metadata), copies the best checkpoint to
``src/napari_vmunet/data/demo-<sample>.safetensors`` and reports Dice on
the held-out part with ``napari-vmunet demo --headless``.  CPU only, no
downloads; each model takes tens of minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / 'demo-training'
DATA = ROOT / 'src' / 'napari_vmunet' / 'data'

RECIPES = {
    'nuclei': [
        '--images',
        'nuclei_top_image.tif',
        '--labels',
        'nuclei_top_labels.tif',
        '--output',
        'demo-nuclei.safetensors',
        '--preset',
        'full',
        '--dims',
        '16,32,64,128',
        '--size',
        '128',
        '--batch-size',
        '8',
        '--epochs',
        '60',
        '--steps-per-epoch',
        '25',
        '--seed',
        '0',
        '--class-names',
        'background,nucleus',
        '--training-data',
        (
            'napari-vmunet nuclei sample (DSB2018 / stardist img2d.tif + human '
            'mask2d.tif), rows 0-319 of 512'
        ),
        '--notes',
        (
            'Demonstration model: rows 320-511 of the nuclei sample were held '
            'out. Not a general nuclei model.'
        ),
    ],
    'brain': [
        '--images',
        'brain_t1.nii.gz',
        '--labels',
        'brain_labels_every4.nii.gz',
        '--output',
        'demo-brain.safetensors',
        '--preset',
        'full',
        '--num-classes',
        '3',
        '--class-names',
        'background,grey matter,white matter',
        '--dims',
        '16,32,64,128',
        '--size',
        '128',
        '--batch-size',
        '8',
        '--epochs',
        '40',
        '--steps-per-epoch',
        '25',
        '--seed',
        '0',
        '--training-data',
        (
            'napari-vmunet brain sample (MNI152 2009a T1, 1 mm) with grey/white '
            'matter labels from its probability maps; labels kept on axial '
            'slices z % 4 == 0 only (48 of 189)'
        ),
        '--notes',
        (
            'Demonstration model: axial slices z % 4 != 0 were held out. The '
            'MNI152 template is a smooth population average; this is not a '
            'clinical or general tissue-segmentation model.'
        ),
    ],
}


def write_training_files(sample: str) -> None:
    from napari_vmunet.cli.demo import training_part
    from napari_vmunet.io import load_sample, write_image, write_labels

    image, labels = load_sample(sample)
    part_image, part_labels = training_part(sample, image.data, labels)
    if sample == 'nuclei':
        write_image(WORK / 'nuclei_top_image.tif', part_image)
        write_labels(WORK / 'nuclei_top_labels.tif', part_labels)
    else:
        write_image(WORK / 'brain_t1.nii.gz', part_image, like=image)
        write_labels(WORK / 'brain_labels_every4.nii.gz', part_labels, like=image)


def record_stats(sample: str) -> None:
    """Add the training-input summary to a bundled model, weights and
    metadata unchanged."""
    from napari_vmunet.checkpoint import load_checkpoint, save_checkpoint
    from napari_vmunet.cli.demo import training_part
    from napari_vmunet.io import load_sample
    from napari_vmunet.training import TrainingPair
    from napari_vmunet.training.data import extract_slices, prepare_samples
    from napari_vmunet.training.provenance import summarize_training_inputs

    target = DATA / f'demo-{sample}.safetensors'
    ckpt = load_checkpoint(target)
    image, labels = load_sample(sample)
    part_image, part_labels = training_part(sample, image.data, labels)
    slices = extract_slices([TrainingPair(part_image, part_labels, name=sample)])
    norm = ckpt.metadata['input']['normalization']
    samples = prepare_samples(
        slices,
        num_classes=ckpt.config['num_classes'],
        input_channels=ckpt.config['input_channels'],
        normalization=norm,
    )
    stats = summarize_training_inputs(slices, samples, norm)
    created = ckpt.metadata['provenance']['created']
    save_checkpoint(
        ckpt, target, {'provenance': {'created': created}}, training_stats=stats
    )
    print(f'{target.name}: {stats["kind"]}, {stats["images"]} slice(s) recorded')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('samples', nargs='*', default=list(RECIPES))
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--stats-only', action='store_true')
    args = parser.parse_args()
    if args.stats_only:
        for sample in args.samples:
            record_stats(sample)
        return 0
    WORK.mkdir(exist_ok=True)
    for sample in args.samples:
        write_training_files(sample)
        command = ['napari-vmunet', 'train', *RECIPES[sample]]
        print('$ cd demo-training &&', shlex.join(command), flush=True)
        extra = ['--threads', str(args.threads)] if args.threads else []
        subprocess.run(
            [sys.executable, '-m', 'napari_vmunet', 'train', *RECIPES[sample], *extra],
            cwd=WORK,
            check=True,
        )
        target = DATA / f'demo-{sample}.safetensors'
        shutil.copyfile(WORK / f'demo-{sample}.safetensors', target)
        print(f'-> {target} ({target.stat().st_size / 2**20:.1f} MiB)')
        subprocess.run(
            [
                sys.executable,
                '-m',
                'napari_vmunet',
                'demo',
                '--headless',
                '--sample',
                sample,
                '--output',
                str(WORK / f'{sample}-demo'),
            ],
            check=True,
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
