"""Draw a napari viewer, then let the scan import triton: the process must live.

Launched by ``tests/test_scan_triton.py`` (under Xvfb).  ``import triton``
after Mesa's OpenGL context exists segfaults unless it is made the way
``napari_vmunet.model.scan`` makes it (``RTLD_DEEPBIND``).  With
``TRITON_INTERPRET=1`` the scan's own import path runs on CPU tensors, so
this needs no GPU.  Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import sys

os.environ['TRITON_INTERPRET'] = '1'

import napari  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from napari_vmunet.model import scan as S  # noqa: E402


def main() -> int:
    assert 'triton' not in sys.modules, 'triton was imported before the viewer'
    viewer = napari.Viewer(show=False)
    viewer.add_image(np.random.default_rng(0).random((64, 64)))
    viewer.screenshot(canvas_only=True)  # the GL context exists and has drawn
    mesa_llvm = S._mesa_llvm_loaded()
    g = torch.Generator().manual_seed(0)
    x = dict(
        u=torch.randn(1, 4, 10, generator=g),
        delta=torch.randn(1, 4, 10, generator=g),
        A=-torch.rand(4, 16, generator=g),
        B=torch.randn(1, 1, 16, 10, generator=g),
        C=torch.randn(1, 1, 16, 10, generator=g),
    )
    y = S.selective_scan(**x, delta_softplus=True, backend='triton')
    ref = S.selective_scan_reference(**x, delta_softplus=True)
    err = ((y - ref).abs().max() / ref.abs().max()).item()
    viewer.close()
    print(
        json.dumps(
            {'mesa_llvm': mesa_llvm, 'triton': 'triton' in sys.modules, 'err': err}
        )
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
