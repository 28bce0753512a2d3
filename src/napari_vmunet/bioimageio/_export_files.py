"""The files of a package besides its description: the weights, the test
tensors, ``environment.yaml``, the README written from the checkpoint's
metadata and provenance, and the cover made from the test prediction."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._version import __version__
from ._package import CALLABLE, IMPORT_FROM
from ._processing import describe

if TYPE_CHECKING:
    from ..checkpoint import Provenance

#: distinct colours for class overlays in the cover (background first)
_PALETTE = [
    (0, 0, 0),
    (255, 64, 64),
    (64, 200, 64),
    (64, 128, 255),
    (255, 200, 0),
    (200, 64, 255),
    (0, 220, 220),
    (255, 128, 0),
    (160, 160, 160),
]


def write_files(
    folder: Path,
    ckpt,
    image: np.ndarray,
    probs: np.ndarray,
    image_label: str,
    name: str,
    description: str,
    cover: Path | None,
) -> dict[str, Path]:
    files = {
        'weights': folder / 'weights.pt',
        'input': folder / 'test_input.npy',
        'output': folder / 'test_output.npy',
        'environment': folder / 'environment.yaml',
        'readme': folder / 'README.md',
    }
    state = {
        k: v.detach().cpu().contiguous() for k, v in ckpt.model.state_dict().items()
    }
    torch.save(state, files['weights'])
    np.save(files['input'], image[None])
    np.save(files['output'], probs)
    files['environment'].write_text(_environment(), encoding='utf-8')
    files['readme'].write_text(
        readme(ckpt, name, description, image_label, image.shape[-2:]),
        encoding='utf-8',
    )
    if cover is not None:
        files['cover'] = folder / f'cover{cover.suffix.lower()}'
        shutil.copyfile(cover, files['cover'])
    else:
        files['cover'] = folder / 'cover.png'
        _write_cover(files['cover'], image, probs, ckpt.meta.classes.colors)
    return files


def _environment() -> str:
    """The conda environment consumers build: PyTorch plus napari-vmunet from
    PyPI (the architecture is imported from it); no mamba-ssm or triton."""
    return (
        'name: napari-vmunet\n'
        'channels:\n'
        '  - conda-forge\n'
        '  - nodefaults\n'
        'dependencies:\n'
        '  - python>=3.10\n'
        '  - pytorch>=2.6\n'
        '  - pip\n'
        '  - pip:\n'
        f'      - napari-vmunet>={__version__}\n'
    )


def readme(
    ckpt, name: str, description: str, image_label: str, size: Sequence[int]
) -> str:
    """The package's documentation, from our metadata and provenance."""
    from ..checkpoint import describe_architecture

    meta, cfg = ckpt.meta, ckpt.config
    prov, names = meta.provenance, meta.classes.names
    tile = meta.input.tile_size
    k = cfg['num_classes']
    if k == 1:
        out = 'a foreground probability (sigmoid)'
        classes = '; the channel is the probability of class 1'
    else:
        out, classes = f'{k} class probabilities that sum to 1 (softmax)', ''
    source = Path(str(ckpt.path)).name
    norm = describe(meta.input.normalization.to_dict())
    lines = [
        f'# {name}',
        '',
        description,
        '',
        (
            'A VM-UNet (Vision Mamba U-Net, Ruan & Xiang 2024) exported by '
            f'napari-vmunet {__version__} from `{source}`.'
        ),
        '',
        '## Network',
        '',
        (
            f'- {describe_architecture(cfg)}; '
            f'{ckpt.parameter_count / 1e6:.2f} M parameters.'
        ),
        (
            f"- Architecture: `{IMPORT_FROM}.{CALLABLE}`, napari-vmunet's "
            'VM-UNet returning logits (pure PyTorch: no mamba-ssm or triton '
            'needed), installed by `environment.yaml`.'
        ),
        '',
        '## Input',
        '',
        (
            f'- `image`: batch, {cfg["input_channels"]} channel(s), y, x; '
            'float32; height and width any multiple of 32 (the model was '
            f'trained on {tile[0]}x{tile[1]} tiles; napari-vmunet predicts '
            'larger images in blended tiles of that size).'
        ),
        f"- Normalisation (the package's preprocessing): {norm}.",
        '',
        '## Output',
        '',
        f'- `probabilities`: batch, channel, y, x; {out}.',
        f'- Classes: {", ".join(f"{i} {n}" for i, n in enumerate(names))}{classes}.',
        '',
        '## Training',
        '',
        *_training_lines(prov),
        '',
        '## Validation',
        '',
        *_validation_lines(prov.best_val_dice, image_label, size),
        '',
        '## Use',
        '',
        (
            '- napari: choose this .zip in the napari-vmunet inference dock, '
            'or run `napari-vmunet predict IMAGES... --model THIS.zip '
            '--output OUT/`.'
        ),
        (
            '- bioimageio.core: `bioimageio predict THIS.zip` in an '
            'environment with napari-vmunet installed '
            '(`pip install napari-vmunet`).'
        ),
        '',
    ]
    return '\n'.join(lines)


def _training_lines(prov: Provenance) -> list[str]:
    """The README's training facts, those the checkpoint recorded."""
    facts = [
        ('Initialised from', prov.initialized_from),
        ('Training data', prov.training_data),
        ('Epochs', prov.epochs),
        ('Checkpoint created', prov.created),
        ('Written by napari-vmunet', prov.package_version),
        ('Command', f'`{prov.command}`' if prov.command else None),
        ('Notes', prov.notes),
    ]
    return [f'- {label}: {value}' for label, value in facts if value not in (None, '')]


def _validation_lines(
    dice: float | None, image_label: str, size: Sequence[int]
) -> list[str]:
    """The README's validation score (or its absence) and test tensors."""
    if dice is not None:
        score = (
            f'- Best validation Dice during training: {dice:.4f} (Dice on the '
            'validation split napari-vmunet held out of the training data; '
            'not a test on independent data).'
        )
    else:
        score = (
            '- No validation score was recorded for this checkpoint: measure '
            'Dice on labelled images of your own before relying on it.'
        )
    return [
        score,
        (
            f'- Test tensors: `test_input.npy` is {image_label} '
            f'({size[0]}x{size[1]} pixels, raw intensities); '
            "`test_output.npy` holds the probabilities napari-vmunet's "
            'Predictor computed for it on the CPU in one window; '
            '`bioimageio test` reproduces them.'
        ),
    ]


def _write_cover(
    path: Path, image: np.ndarray, probs: np.ndarray, colors: Sequence[str | None]
) -> None:
    """Input and prediction side by side (2:1, as bioimage.io recommends):
    the grey input on the left, the predicted classes over it on the right."""
    from ..io.plain import write_png

    grey = image.mean(axis=0)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    grey = np.clip((grey - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat((grey * 255)[..., None], 3, axis=-1)
    p = probs[0]
    labels = (p[0] >= 0.5).astype(int) if p.shape[0] == 1 else p.argmax(0)
    overlay = rgb.copy()
    for cls in range(1, int(labels.max()) + 1):
        mask = labels == cls
        color = np.array(_class_color(colors, cls), dtype=float)
        overlay[mask] = 0.45 * overlay[mask] + 0.55 * color
    cover = np.concatenate([rgb, overlay], axis=1).round().astype(np.uint8)
    write_png(path, cover)


def _class_color(colors: Sequence[str | None], cls: int) -> tuple[int, int, int]:
    value = colors[cls] if cls < len(colors) else None
    if value:
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
    return _PALETTE[1 + (cls - 1) % (len(_PALETTE) - 1)]
