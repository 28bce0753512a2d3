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

This module runs the export; each step has a module of its own:
:mod:`._export_checks` (what the user gave), :mod:`._export_tensors` (the
test tensors), :mod:`._export_files` (weights, README, cover, environment),
:mod:`._export_descr` (the description) and :mod:`._package` (what every
package shares with the reader).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._files import write_atomically_one
from ._export_checks import (
    check_authors,
    check_citation,
    check_license,
    checkpoint_of,
    cover_file,
    package_description,
    package_name,
)
from ._export_descr import description_node, offline_context
from ._export_files import write_files
from ._export_tensors import make_test_input, make_test_output
from ._package import DEFAULT_LICENSE, VMUNET_CITATION
from ._processing import preprocessing_for

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
    ckpt = checkpoint_of(model)
    meta = ckpt.meta
    # everything the user typed is checked before any work
    name = package_name(name, ckpt)
    description = package_description(description, meta)
    authors = check_authors(authors)
    license_id = check_license(license_id)
    cites = [VMUNET_CITATION, *(check_citation(c) for c in cite)]
    cover_path = cover_file(cover)
    preprocessing = preprocessing_for(meta.input.normalization.to_dict())

    say('reading the test image')
    image, image_label = make_test_input(test_image, ckpt.config['input_channels'])
    say('predicting the test output')
    probs = make_test_output(ckpt, image)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='napari-vmunet-bioimageio-') as tmp:
        folder = Path(tmp)
        files = write_files(
            folder, ckpt, image, probs, image_label, name, description, cover_path
        )
        say('writing the package')
        with offline_context(cites):
            descr = description_node(
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
