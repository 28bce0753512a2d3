"""The package's description (``bioimageio.yaml``, spec 0.5) as
bioimageio.spec objects: tensors, pre- and postprocessing, the weights and
their architecture import, citations, tags and our metadata under
``config.napari_vmunet``; and the validation context that sends no request.
bioimageio.spec is imported only inside these functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from .._version import __version__
from ._package import CALLABLE, CONFIG_KEY, DOI, IMPORT_FROM, SIZE_STEP, sha256_of


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


def description_node(
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
    """The package's ``ModelDescr``; ``ValueError`` with bioimageio.spec's
    first complaints when it refuses the description."""
    from bioimageio.spec.model import v0_5 as spec
    from pydantic import ValidationError

    k = ckpt.config['num_classes']
    try:
        inputs, outputs = _tensors(spec, ckpt, files, preprocessing)
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
            weights=_weights(spec, ckpt.config, files),
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


def _tensors(spec, ckpt, files: dict[str, Path], preprocessing: list[dict]):
    """The input (raw image, any multiple of 32) and output (probabilities
    of the input's size) tensor descriptions."""
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
    return inputs, outputs


def _weights(spec, cfg: dict, files: dict[str, Path]):
    """The state-dict weights, pinned, with the architecture imported from
    napari-vmunet (``environment.yaml`` installs it)."""
    from ..checkpoint import architecture_of

    return spec.WeightsDescr(
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


def _file(spec, path: Path):
    """A file entry with its sha256 computed here, so every file of the
    package is pinned whatever bioimageio.spec's I/O-check setting."""
    return spec.FileDescr(source=path, sha256=spec.Sha256(sha256_of(path)))


def _cite_entry(spec, text: str, ref: str):
    m = DOI.match(ref)
    if m:
        return spec.CiteEntry(text=text, doi=spec.Doi(m.group(3)))
    return spec.CiteEntry(text=text, url=ref)


def _tags(num_classes: int) -> list[str]:
    tags = ['vm-unet', 'mamba', 'state-space-model', 'unet', 'segmentation']
    tags.append('binary-segmentation' if num_classes == 1 else 'semantic-segmentation')
    return [*tags, '2d', 'pytorch', 'napari-vmunet']


def offline_context(cites: list[tuple[str, str]]):
    """A bioimageio validation context that sends no request.

    Citation URLs are the only remote references we write; bioimageio.spec
    checks URLs with a request while validating.  Without any, the usual
    checks run (they only read the local files, and hash them); with one,
    validation skips its I/O checks (the files still get their sha256 when
    they are packed)."""
    from bioimageio.spec._internal.validation_context import get_validation_context

    urls = [ref for _text, ref in cites if not DOI.match(ref)]
    current = get_validation_context()
    return current.replace(perform_io_checks=False) if urls else current
