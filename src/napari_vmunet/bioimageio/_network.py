"""The network a bioimage.io package names: VM-UNet that returns logits.

:class:`napari_vmunet.model.VMUNet` follows the original VM-UNet and applies
the sigmoid itself when it has one class (logits for several).  A
bioimage.io package states that step as postprocessing instead (``sigmoid``
for one class, ``softmax`` for several), so every consumer (bioimageio.core,
ilastik, deepImageJ) sees how the probabilities are made.  This subclass is
that network: the same parameters under the same names (``vmunet.*``), only
``forward`` stops before the sigmoid.  It runs on the pure-PyTorch selective
scan, so neither mamba-ssm nor triton is needed.
"""

from __future__ import annotations

import torch

from ..model import VMUNet


class VMUNetLogits(VMUNet):
    """:class:`~napari_vmunet.model.VMUNet` whose output is always logits.

    Same keyword arguments and state dict as ``VMUNet``; input
    ``(B, C, H, W)`` with ``H`` and ``W`` multiples of 32, output
    ``(B, num_classes, H, W)`` logits.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)
