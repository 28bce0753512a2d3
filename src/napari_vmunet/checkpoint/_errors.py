"""The one exception (and one warning) the checkpoint code raises for bad files."""

from __future__ import annotations

import os
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: which file, what is wrong, what to do.

    ``str(err)`` is a single readable sentence for a user (the CLI prints it as
    is); ``err.path`` and ``err.problem`` hold its two parts for GUIs that lay
    them out separately.  It is a ``ValueError`` so callers that only know
    "bad input" still catch it.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.problem = problem
        self.path = Path(path) if path is not None else None
        # problems are phrased to follow a subject: "<file>: is truncated ..."
        subject = f'{self.path}:' if self.path else 'the checkpoint'
        super().__init__(f'{subject} {problem}')

    def __reduce__(self):
        # keep both parts when the error crosses a process boundary (training
        # runs in a subprocess and reports its errors back)
        return (type(self), (self.problem, self.path))

    def with_path(self, path: str | os.PathLike) -> CheckpointError:
        """The same problem, attributed to ``path`` unless a file is named already."""
        return self if self.path is not None else CheckpointError(self.problem, path)


class CheckpointWarning(UserWarning):
    """Something about a checkpoint a user should know, that still lets it load."""
