"""A tiny in-process event bus between the docks.

The fine-tune dock publishes a checkpoint when training produced a better
model; the inference dock listens and offers it at once (the hot swap),
without either dock holding a reference to the other.
"""

from psygnal import Signal, SignalGroup


class _Bus(SignalGroup):
    #: (path: str, reason: str) -- a checkpoint is ready for inference
    model_published = Signal(str, str)


bus = _Bus()
