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


def listen(widget, callback) -> None:
    """Connect ``callback`` to :data:`bus.model_published` for the lifetime
    of ``widget``: a dock closed with its viewer must stop listening, or the
    next publication would reach a deleted Qt object."""
    bus.model_published.connect(callback)
    widget.destroyed.connect(lambda *_: bus.model_published.disconnect(callback))
