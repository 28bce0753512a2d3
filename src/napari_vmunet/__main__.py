"""``python -m napari_vmunet`` (also what ``torchrun -m napari_vmunet`` runs)."""

import sys

from .cli import main

sys.exit(main())
