"""The napari front end: docks over the core library (Qt lives only here).

libgomp's default spin-waiting makes torch's OpenMP regions ~20x slower when
they are entered from napari's main thread once a viewer exists (measured:
0.9 s -> 20 s for one prediction; worker threads are unaffected).  Passive
waiting removes that and costs nothing measurable in our worker threads, so
the docks ask for it unless the user chose otherwise.  It only takes effect
if torch is first imported after this point, which is the case when our docks
are the first to use torch.
"""

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
