"""bioimage.io model packages: export a checkpoint, import a package.

The bioimage.io model description (spec 0.5; ``bioimageio.yaml`` /
``rdf.yaml`` in a .zip or folder) is what bioimageio.core, ilastik,
deepImageJ, QuPath and the bioimage.io zoo read.

* :func:`export_bioimageio` writes a checkpoint as such a package (needs the
  optional ``bioimageio.spec``: ``pip install 'napari-vmunet[bioimageio]'``).
* :func:`load_package` reads a package whose weights are a VM-UNet into a
  :class:`~napari_vmunet.checkpoint.Checkpoint`;
  :func:`napari_vmunet.checkpoint.load_checkpoint` calls it for anything
  :func:`is_package` recognises.  Importing needs no bioimageio library and
  never runs code from the package.
* :class:`VMUNetLogits` is the network exported packages name.

Nothing here imports Qt; bioimageio.spec is imported only when exporting.
"""

from ._export import BioimageioMissingError, export_bioimageio
from ._network import VMUNetLogits
from ._package import DEFAULT_LICENSE
from ._processing import NotExpressible, preprocessing_for

__all__ = [
    'DEFAULT_LICENSE',
    'BioimageioMissingError',
    'NotExpressible',
    'VMUNetLogits',
    'export_bioimageio',
    'preprocessing_for',
]
