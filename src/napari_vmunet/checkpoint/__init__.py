"""VM-UNet checkpoints: load, save, convert and initialise from VMamba.

Formats read by :func:`load_checkpoint` (recognised by content, not by name):

* ``napari-vmunet`` -- ``*.safetensors`` written by :func:`save_checkpoint`:
  the weights (keys ``vmunet.*``) plus a JSON document under the safetensors
  metadata key ``"napari_vmunet"`` (schema: :mod:`._metadata`, format
  version 1; read it by name through :class:`Metadata`).  Training state
  for resuming lives next to it in ``<stem>.train_state.pt``
  (``model.safetensors`` -> ``model.train_state.pt``), written with
  ``torch.save`` and read with ``weights_only=True``.
* ``original-best`` -- the original ``best.pth``: ``torch.save`` of a flat
  state dict.
* ``original-latest`` -- the original ``latest.pth``: a dict with
  ``model_state_dict``, ``optimizer_state_dict``, ``scheduler_state_dict``,
  ``epoch``, ``min_loss``, ``min_epoch``, ``loss``.

Either original layout may carry a ``module.`` prefix (DataParallel / DDP)
and thop's ``total_ops``/``total_params`` buffers; both are handled.  The
architecture of original files is read from tensor shapes
(:func:`infer_config`).  PyTorch files are only opened with
``weights_only=True``: nothing in a checkpoint is ever executed.  Every
problem raises :class:`CheckpointError`.  This package imports neither napari
nor Qt.
"""

from ._checkpoint import SOURCE_FORMATS, Checkpoint
from ._core import (
    check_checkpoint_file,
    convert,
    load_checkpoint,
    save_checkpoint,
    summary,
)
from ._errors import CheckpointError, CheckpointWarning
from ._metadata import (
    FORMAT_VERSION,
    METADATA_KEY,
    architecture_of,
    default_class_names,
    default_metadata,
    parse_normalization,
    validate_metadata,
)
from ._original import export_original
from ._pretrained import load_vmamba_pretrained
from ._schema import (
    Architecture,
    Classes,
    InputSpec,
    Metadata,
    Normalization,
    Provenance,
)
from ._sidecar import training_state_path
from ._state import describe_architecture, infer_config

__all__ = [
    'FORMAT_VERSION',
    'METADATA_KEY',
    'SOURCE_FORMATS',
    'Architecture',
    'Checkpoint',
    'CheckpointError',
    'CheckpointWarning',
    'Classes',
    'InputSpec',
    'Metadata',
    'Normalization',
    'Provenance',
    'check_checkpoint_file',
    'architecture_of',
    'convert',
    'default_class_names',
    'default_metadata',
    'describe_architecture',
    'export_original',
    'infer_config',
    'load_checkpoint',
    'load_vmamba_pretrained',
    'parse_normalization',
    'save_checkpoint',
    'summary',
    'training_state_path',
    'validate_metadata',
]
