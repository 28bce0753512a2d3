"""What every exported bioimage.io package is made of: where its network is
imported from, where our metadata goes, what it always cites, the test-image
limits, and the SHA-256 every file is pinned with.  Shared by the export's
modules and the package reader."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ._network import VMUNetLogits

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
#: a DOI, bare or as a doi.org URL (group 3: the DOI itself)
DOI = re.compile(r'^(doi:|https?://(dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$', re.I)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(2**20), b''):
            digest.update(block)
    return digest.hexdigest()
