"""Writing a checkpoint as a bioimage.io model package (spec 0.5, a .zip).

What goes in (see docs/checkpoints.md for why):

* ``weights.pt`` -- the state dict (``vmunet.*``) in ``pytorch_state_dict``
  format, saved with ``torch.save`` (tensors only, loadable with
  ``weights_only=True``).
* the architecture as an *import* from the napari-vmunet library,
  ``napari_vmunet.bioimageio.VMUNetLogits`` with the checkpoint's keyword
  arguments, and ``environment.yaml`` naming napari-vmunet; no source file
  is shipped, so the package runs exactly the code that is tested here,
  on the pure-PyTorch scan (no mamba-ssm, no triton).
* test tensors: a real image (the bundled nuclei sample or the user's),
  centre-cropped to a multiple of 32, and the probabilities our
  :class:`~napari_vmunet.inference.Predictor` computes for it on the CPU in
  one window -- what bioimage.io's own test must reproduce.
* preprocessing from the checkpoint's normalisation (:mod:`._processing`),
  postprocessing ``sigmoid`` (one class) or ``softmax`` (several).
* ``README.md`` written from the checkpoint's metadata and provenance, a
  cover made from the test prediction (unless one is given), our whole
  metadata document under ``config.napari_vmunet`` (so importing gives back
  class names, colours, tile size and provenance).

Nothing here touches the network: URLs in citations are registered as known
so bioimageio.spec does not check them, and everything else is a local
file.  bioimageio.spec is imported only inside :func:`export_bioimageio`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._files import write_atomically_one
from .._version import __version__
from ._network import VMUNetLogits
from ._processing import describe, preprocessing_for

if TYPE_CHECKING:
    from ..checkpoint import Metadata

#: where the package's architecture is imported from
IMPORT_FROM = 'napari_vmunet.bioimageio'
CALLABLE = VMUNetLogits.__name__
#: key under the package's ``config`` holding our metadata
CONFIG_KEY = 'napari_vmunet'
#: the paper every VM-UNet package cites (Ruan & Xiang 2024)
VMUNET_CITATION = (
    (
        'Ruan J, Xiang S. VM-UNet: Vision Mamba UNet for Medical Image '
        'Segmentation. arXiv:2402.02491 (2024)'
    ),
    '10.48550/arXiv.2402.02491',
)
DEFAULT_LICENSE = 'CC-BY-4.0'
#: largest test image side: keeps the package small and its test quick
MAX_TEST_SIDE = 256
SIZE_STEP = 32
DEFAULT_SAMPLE = 'nuclei'
_NAME_CHARS = re.compile(r'[^A-Za-z0-9_+\- ()]')
_DOI = re.compile(r'^(doi:|https?://(dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$', re.I)
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

Progress = Callable[[str], None]


class BioimageioMissingError(ImportError):
    """bioimageio.spec is not installed (it is an optional extra)."""


def require_spec() -> None:
    """Import bioimageio.spec or say how to install it."""
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError as err:
        raise BioimageioMissingError(
            'exporting for bioimage.io needs the bioimageio.spec package: '
            "pip install 'napari-vmunet[bioimageio]'"
        ) from err


def export_bioimageio(
    model: Any,
    output: str | os.PathLike,
    *,
    authors: Sequence[str],
    name: str | None = None,
    description: str | None = None,
    license_id: str = DEFAULT_LICENSE,
    cite: Sequence[str | tuple[str, str]] = (),
    cover: str | os.PathLike | None = None,
    test_image: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write ``model`` (a checkpoint path or a loaded ``Checkpoint``) as a
    bioimage.io model package ``output`` (``.zip``) and return its path.

    ``authors``: at least one name.  ``license_id``: an SPDX identifier.
    ``cite``: extra citations as ``'TEXT|DOI'`` / ``'TEXT|URL'`` strings or
    ``(text, doi_or_url)`` pairs;
    the VM-UNet paper is always cited.  ``test_image``: an image file, or
    the name of a bundled sample (``nuclei``, ``brain``; default nuclei);
    volumes give their middle slice.  ``cover``: a PNG/JPEG to use instead of
    the cover made from the test prediction.

    Bad input raises ``ValueError`` (or ``CheckpointError``) before anything
    is written; the zip is written atomically (never half a package).
    """
    say = progress or (lambda _msg: None)
    output = Path(output).expanduser()
    if output.suffix.lower() != '.zip':
        raise ValueError(
            f'{output}: a bioimage.io package is written as a .zip file; '
            'give an output name ending in .zip'
        )
    if output.is_dir():
        raise ValueError(f'{output} is a folder; give a file name ending in .zip')
    require_spec()
    ckpt = _checkpoint(model)
    meta = ckpt.meta
    # everything the user typed is checked before any work
    name = _name(name, ckpt)
    description = _description(description, meta)
    authors = _authors(authors)
    license_id = _license(license_id)
    cites = [VMUNET_CITATION, *(_citation(c) for c in cite)]
    cover_path = _cover_file(cover)
    preprocessing = preprocessing_for(meta.input.normalization.to_dict())

    say('reading the test image')
    image, image_label = _test_plane(test_image, ckpt.config['input_channels'])
    say('predicting the test output')
    probs = _predict(ckpt, image)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='napari-vmunet-bioimageio-') as tmp:
        folder = Path(tmp)
        files = _write_files(
            folder, ckpt, image, probs, image_label, name, description, cover_path
        )
        say('writing the package')
        with _offline(cites):
            descr = _description_node(
                ckpt,
                files,
                name=name,
                description=description,
                authors=authors,
                license_id=license_id,
                cites=cites,
                preprocessing=preprocessing,
            )
            _save(descr, output)
    return output


# --------------------------------------------------------------------------
# checking what the user gave


def _checkpoint(model: Any):
    from ..checkpoint import Checkpoint, load_checkpoint

    if isinstance(model, Checkpoint):
        return model
    return load_checkpoint(model)


def _name(name: str | None, ckpt) -> str:
    if name is None or not name.strip():
        stem = Path(str(ckpt.path)).name.split('.')[0]
        name = _NAME_CHARS.sub('-', f'VM-UNet {stem}')[:64].strip()
        return name if len(name) >= 5 else 'VM-UNet model'
    name = ' '.join(name.split())
    bad = sorted(set(_NAME_CHARS.findall(name)))
    if bad or not 5 <= len(name) <= 128:
        raise ValueError(
            f'model name {name!r} is not accepted by bioimage.io: it must be '
            '5 to 128 characters of letters, digits, spaces and _ + - ( )'
            + (f' (it contains {" ".join(bad)})' if bad else '')
        )
    return name


def _description(description: str | None, meta: Metadata) -> str:
    if description is None or not description.strip():
        names = meta.classes.names
        description = (
            f'VM-UNet (Vision Mamba U-Net) segmentation of '
            f'{", ".join(names[1:])} (classes: {", ".join(names)}), '
            'exported by napari-vmunet.'
        )
        if meta.provenance.notes:
            description += f' {meta.provenance.notes}'
    description = ' '.join(description.split())
    if len(description) > 1024:
        raise ValueError(
            f'the description has {len(description)} characters; bioimage.io '
            'takes at most 1024 (put the rest in the README)'
        )
    return description


def _authors(authors: Sequence[str] | str | None) -> list[str]:
    if isinstance(authors, str):
        authors = [authors]
    out = []
    for entry in authors or []:
        out += [a.strip() for a in str(entry).split(';') if a.strip()]
    if not out:
        raise ValueError(
            'a bioimage.io package needs at least one author: give the '
            'names of the people who trained the model (--authors "Jane Doe")'
        )
    for author in out:
        if '/' in author:
            raise ValueError(f'author name {author!r} may not contain "/"')
    return out


def _license(license_id: str) -> str:
    from bioimageio.spec.model.v0_5 import LicenseId

    license_id = (license_id or '').strip()
    try:
        LicenseId(license_id)
    except ValueError:
        raise ValueError(
            f'license {license_id!r} is not an SPDX license identifier that '
            'bioimage.io accepts; use e.g. CC-BY-4.0 (the recommended one for '
            'models), MIT, BSD-3-Clause or Apache-2.0'
        ) from None
    return license_id


def _citation(entry: str | tuple[str, str]) -> tuple[str, str]:
    if isinstance(entry, str):
        text, sep, ref = entry.rpartition('|')
        if not sep:
            raise ValueError(
                f'citation {entry!r} needs a DOI or a URL: write "TEXT|DOI" '
                '(e.g. "Doe J. et al. 2025|10.1234/abcd") or "TEXT|https://..."'
            )
    else:
        text, ref = entry
    text, ref = ' '.join(str(text).split()), str(ref).strip()
    if not text:
        raise ValueError(f'citation {entry!r} has no text before the "|"')
    if not (_DOI.match(ref) or ref.startswith(('https://', 'http://'))):
        raise ValueError(
            f'citation reference {ref!r} is neither a DOI (10.xxxx/...) nor a '
            'URL (https://...)'
        )
    return text, ref


def _cover_file(cover: str | os.PathLike | None) -> Path | None:
    if cover is None or str(cover) == '':
        return None
    path = Path(cover).expanduser()
    if not path.is_file():
        raise ValueError(f'{path}: the cover image does not exist')
    if path.suffix.lower() not in ('.png', '.jpg', '.jpeg', '.gif'):
        raise ValueError(
            f'{path}: bioimage.io covers are PNG, JPEG or GIF images, got '
            f'{path.suffix or "no extension"}'
        )
    return path


# --------------------------------------------------------------------------
# test tensors


def _test_plane(test_image: Any, channels: int) -> tuple[np.ndarray, str]:
    """The test input, ``(C, H, W)`` float32 raw intensities (the package's
    preprocessing normalises them), and a phrase saying where it came from."""
    from ..io import read_image
    from ..io.samples import SAMPLES, load_sample
    from ..rules.normalization import map_channels

    if test_image is None or str(test_image) == '':
        test_image = DEFAULT_SAMPLE
    path = Path(str(test_image)).expanduser()
    if not path.exists() and str(test_image) in SAMPLES:
        img, _ = load_sample(str(test_image))
        label = f'the napari-vmunet {test_image} sample ({SAMPLES[str(test_image)]})'
    else:
        if not path.is_file():
            raise ValueError(
                f'{path}: the test image does not exist; give an image file or '
                f'a bundled sample ({", ".join(SAMPLES)})'
            )
        img = read_image(path, allow_channels=True)
        label = f'{path.name}'
    data = np.asarray(img.data)
    axes = img.axes
    if 'Z' in axes:
        z = axes.index('Z')
        data = np.take(data, data.shape[z] // 2, axis=z)
        axes = axes.replace('Z', '')
        label += ', middle slice'
    if 'C' in axes:
        data = np.moveaxis(data, axes.index('C'), 0)
    else:
        data = data[None]
    if np.iscomplexobj(data) or data.dtype.kind not in 'uifb':
        raise ValueError(f'{label}: the test image must hold real numbers')
    data = map_channels(data, channels, rgb=img.rgb)
    h, w = data.shape[-2:]
    th = min(MAX_TEST_SIDE, h // SIZE_STEP * SIZE_STEP)
    tw = min(MAX_TEST_SIDE, w // SIZE_STEP * SIZE_STEP)
    if th == 0 or tw == 0:
        raise ValueError(
            f'{label} is {h}x{w} pixels; the test image needs at least '
            f'{SIZE_STEP}x{SIZE_STEP} (VM-UNet works on multiples of 32)'
        )
    y0, x0 = (h - th) // 2, (w - tw) // 2
    crop = np.ascontiguousarray(data[:, y0 : y0 + th, x0 : x0 + tw], np.float32)
    if not np.isfinite(crop).all():
        raise ValueError(f'{label}: the test crop holds NaN or infinite values')
    if (th, tw) != (h, w):
        label += f', centre crop {th}x{tw} of {h}x{w}'
    return crop, label


def _predict(ckpt, image: np.ndarray) -> np.ndarray:
    """``(1, K, H, W)`` float32 probabilities from our Predictor on the CPU,
    in one window (the package is run on the whole test image too)."""
    from ..inference import Predictor

    predictor = Predictor(ckpt, device='cpu', tile_size=0, batch_size=1, amp=False)
    predictor.probability_dtype = np.float32
    try:
        result = predictor.predict(image, channel_axis=0, return_probabilities=True)
    finally:
        ckpt.model.cpu()
    probs = np.asarray(result.probabilities, dtype=np.float32)
    if probs.ndim == 2:
        probs = probs[None]
    return probs[None]


# --------------------------------------------------------------------------
# files


def _write_files(
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
    from ..checkpoint._state import describe_architecture

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
    ]
    facts = [
        ('Initialised from', prov.initialized_from),
        ('Training data', prov.training_data),
        ('Epochs', prov.epochs),
        ('Checkpoint created', prov.created),
        ('Written by napari-vmunet', prov.package_version),
        ('Command', f'`{prov.command}`' if prov.command else None),
        ('Notes', prov.notes),
    ]
    lines += [
        f'- {label}: {value}' for label, value in facts if value not in (None, '')
    ]
    lines += ['', '## Validation', '']
    dice = prov.best_val_dice
    if dice is not None:
        lines.append(
            f'- Best validation Dice during training: {dice:.4f} (Dice on the '
            'validation split napari-vmunet held out of the training data; '
            'not a test on independent data).'
        )
    else:
        lines.append(
            '- No validation score was recorded for this checkpoint: measure '
            'Dice on labelled images of your own before relying on it.'
        )
    lines += [
        (
            f'- Test tensors: `test_input.npy` is {image_label} '
            f'({size[0]}x{size[1]} pixels, raw intensities); '
            "`test_output.npy` holds the probabilities napari-vmunet's "
            'Predictor computed for it on the CPU in one window; '
            '`bioimageio test` reproduces them.'
        ),
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


# --------------------------------------------------------------------------
# the description


def channel_ids(names: Sequence[str]) -> list[str]:
    """Class names as the spec's channel identifiers (``grey matter`` ->
    ``grey_matter``), unique."""
    import keyword

    out: list[str] = []
    for i, n in enumerate(names):
        ident = re.sub(r'\W+', '_', n.strip()).strip('_') or f'class{i}'
        if ident[0].isdigit() or keyword.iskeyword(ident):
            ident = f'c_{ident}'
        while ident in out:
            ident += f'_{i}'
        out.append(ident)
    return out


def _description_node(
    ckpt,
    files: dict[str, Path],
    *,
    name: str,
    description: str,
    authors: list[str],
    license_id: str,
    cites: list[tuple[str, str]],
    preprocessing: list[dict],
):
    from bioimageio.spec.model import v0_5 as spec
    from pydantic import ValidationError

    from ..checkpoint._metadata import architecture_of

    cfg = ckpt.config
    k = cfg['num_classes']
    names = ckpt.meta.classes.names
    out_names = channel_ids(names[1:] if k == 1 else names)
    in_names = [f'channel{i}' for i in range(cfg['input_channels'])]
    image_id = spec.TensorId('image')

    def space_in(axis: str):
        return spec.SpaceInputAxis(
            id=spec.AxisId(axis),
            size=spec.ParameterizedSize(min=SIZE_STEP, step=SIZE_STEP),
        )

    def space_out(axis: str):
        return spec.SpaceOutputAxis(
            id=spec.AxisId(axis),
            size=spec.SizeReference(tensor_id=image_id, axis_id=spec.AxisId(axis)),
        )

    post = (
        [{'id': 'sigmoid'}]
        if k == 1
        else [{'id': 'softmax', 'kwargs': {'axis': 'channel'}}]
    )
    try:
        inputs = spec.InputTensorDescr(
            id=image_id,
            description='raw intensities; normalised by the preprocessing',
            axes=[
                spec.BatchAxis(),
                spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in in_names]),
                space_in('y'),
                space_in('x'),
            ],
            test_tensor=_file(spec, files['input']),
            data=spec.IntervalOrRatioDataDescr(type='float32'),
            preprocessing=preprocessing,
        )
        outputs = spec.OutputTensorDescr(
            id=spec.TensorId('probabilities'),
            description=('foreground probability' if k == 1 else 'class probabilities'),
            axes=[
                spec.BatchAxis(),
                spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in out_names]),
                space_out('y'),
                space_out('x'),
            ],
            test_tensor=_file(spec, files['output']),
            data=spec.IntervalOrRatioDataDescr(type='float32', range=(0.0, 1.0)),
            postprocessing=post,
        )
        weights = spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=files['weights'],
                sha256=spec.Sha256(sha256_of(files['weights'])),
                architecture=spec.ArchitectureFromLibraryDescr(
                    import_from=IMPORT_FROM,
                    callable=spec.Identifier(CALLABLE),
                    kwargs=architecture_of(cfg),
                ),
                pytorch_version=spec.Version(torch.__version__.split('+')[0]),
                dependencies=_file(spec, files['environment']),
            )
        )
        return spec.ModelDescr(
            name=name,
            description=description,
            authors=[spec.Author(name=a) for a in authors],
            cite=[_cite_entry(spec, text, ref) for text, ref in cites],
            license=spec.LicenseId(license_id),
            documentation=_file(spec, files['readme']),
            covers=[_file(spec, files['cover'])],
            tags=_tags(k),
            inputs=[inputs],
            outputs=[outputs],
            weights=weights,
            config={
                CONFIG_KEY: {
                    'metadata': ckpt.metadata,
                    'source_checkpoint': Path(str(ckpt.path)).name,
                    'exported_with': __version__,
                }
            },
        )
    except ValidationError as err:
        problems = '; '.join(
            f'{".".join(map(str, e["loc"])) or "model"}: {e["msg"]}'
            for e in err.errors()[:5]
        )
        raise ValueError(
            f'bioimage.io does not accept this description: {problems}'
        ) from None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(2**20), b''):
            digest.update(block)
    return digest.hexdigest()


def _file(spec, path: Path):
    """A file entry with its sha256 computed here, so every file of the
    package is pinned whatever bioimageio.spec's I/O-check setting."""
    return spec.FileDescr(source=path, sha256=spec.Sha256(sha256_of(path)))


def _cite_entry(spec, text: str, ref: str):
    m = _DOI.match(ref)
    if m:
        return spec.CiteEntry(text=text, doi=spec.Doi(m.group(3)))
    return spec.CiteEntry(text=text, url=ref)


def _tags(num_classes: int) -> list[str]:
    tags = ['vm-unet', 'mamba', 'state-space-model', 'unet', 'segmentation']
    tags.append('binary-segmentation' if num_classes == 1 else 'semantic-segmentation')
    return [*tags, '2d', 'pytorch', 'napari-vmunet']


def _offline(cites: list[tuple[str, str]]):
    """A bioimageio validation context that sends no request.

    Citation URLs are the only remote references we write; bioimageio.spec
    checks URLs with a request while validating.  Without any, the usual
    checks run (they only read the local files, and hash them); with one,
    validation skips its I/O checks (the files still get their sha256 when
    they are packed)."""
    from bioimageio.spec._internal.validation_context import get_validation_context

    urls = [ref for _text, ref in cites if not _DOI.match(ref)]
    current = get_validation_context()
    return current.replace(perform_io_checks=False) if urls else current


def _save(descr, output: Path) -> None:
    """``save_bioimageio_package`` into a temporary sibling, then renamed."""
    from bioimageio.spec import save_bioimageio_package

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # bioimageio.spec re-reads its own serialised file list without a
            # root folder while packaging and warns about every local file
            warnings.filterwarnings('ignore', message="Found mapping with 'source'")
            save_bioimageio_package(descr, output_path=tmp)

    write_atomically_one(output, write)
