"""Objects, then their table: the whole job of the docks' *Measure*, headless.

:func:`iter_objects_and_table` is what the napari dock runs; it is here, in
the core, so that it can run in a child process too.  SciPy's and
scikit-image's C and Cython code keeps Python's GIL for the length of a
call (a distance transform, an h-maxima reconstruction, a labelling of one
big component), and a GUI thread in the same process waits for it: 170 ms
stalls of the viewer on a 200x512x512 volume of 3,900 touching objects
(``benchmarks/responsiveness.py``).  A child process has a GIL of its own,
so :func:`iter_in_child` runs large jobs there.  The arrays travel through
shared memory, one copy each way, and the child reports the same
:class:`~._progress.Progress` as the in-process generator.  Cancel ends the
child, which writes nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from collections.abc import Generator
from dataclasses import replace
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ._geometry import Geometry, size_in_pixels
from ._progress import Progress
from .measurements import iter_measure
from .objects import Objects, iter_objects
from .table import Table

#: Label maps of at least this many pixels are measured in a child process
#: (starting one costs ~1-2 s of imports; below this the job is short).
CHILD_PIXELS = 8_000_000
#: How much lower than the viewer the child runs (``os.nice``, POSIX)
CHILD_NICENESS = 5
#: Seconds between two yields while the child is busy without reporting,
#: so that Cancel in a GUI acts within this time.
HEARTBEAT_S = 0.2


def iter_objects_and_table(
    labels: np.ndarray,
    settings: dict | None,
    geometry: Geometry,
    *,
    image: Any = None,
    channel_axis: int | None = None,
    class_names: list[str] | None = None,
    instances: bool = False,
    classes: Any = None,
) -> Generator[Progress, None, tuple[Objects | None, Table]]:
    """Objects when ``settings`` ask for them (``split_touching``,
    ``fill_holes``, ``min_size`` as ``(value, unit)`` or None), then the
    table; returns ``(objects or None, table)``.  ``labels`` is copied
    first: a user may paint into the layer meanwhile."""
    labels = np.array(labels)
    objects = None
    source: Any = labels
    if settings is not None:
        min_size = settings.get('min_size')
        pixels = size_in_pixels(*min_size, geometry) if min_size else 0.0
        objects = yield from iter_objects(
            labels,
            instances=instances,
            classes=classes,
            class_names=class_names,
            geometry=geometry,
            split_touching=settings['split_touching'],
            min_size=pixels,
            fill_holes=settings['fill_holes'],
        )
        source = objects
    if image is not None:
        image = np.asarray(image)
    table = yield from iter_measure(
        source,
        image,
        geometry=geometry,
        classes=classes if objects is None and instances else None,
        class_names=class_names,
        channel_axis=channel_axis,
    )
    return objects, table


def iter_measure_job(
    labels: np.ndarray, settings: dict | None, geometry: Geometry, **kwargs: Any
) -> Generator[Progress, None, tuple[Objects | None, Table]]:
    """:func:`iter_objects_and_table` in a child process for label maps of
    at least :data:`CHILD_PIXELS` pixels, in this one below."""
    if np.size(labels) >= CHILD_PIXELS:
        return (yield from iter_in_child(labels, settings, geometry, **kwargs))
    return (yield from iter_objects_and_table(labels, settings, geometry, **kwargs))


class MeasureProcessError(RuntimeError):
    """The child process failed or died; the message says how."""


def iter_in_child(
    labels: np.ndarray,
    settings: dict | None,
    geometry: Geometry,
    *,
    image: Any = None,
    **kwargs: Any,
) -> Generator[Progress, None, tuple[Objects | None, Table]]:
    """:func:`iter_objects_and_table` in a ``spawn`` child process.

    Yields the child's :class:`Progress` (the last one again every
    :data:`HEARTBEAT_S` while it is busy, so a caller can cancel); closing
    the generator ends the child.  The child's errors are raised here with
    their message.
    """
    ctx = mp.get_context('spawn')
    blocks: list[shared_memory.SharedMemory] = []
    process = None
    receiver = None
    try:
        # copies made now, so later edits of the user's layers never reach it
        arrays = {'labels': _share(np.asarray(labels), blocks)}
        if image is not None:
            arrays['image'] = _share(np.asarray(image), blocks)
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_child_main,
            args=(sender, arrays, settings, geometry, kwargs),
            name='napari-vmunet measure',
            daemon=True,
        )
        process.start()
        sender.close()
        last = Progress('objects', 0, 0, 'starting the measuring process')
        yield last
        while True:
            if not receiver.poll(HEARTBEAT_S):
                yield last
                continue
            try:
                kind, payload = receiver.recv()
            except EOFError:
                process.join(5)
                raise MeasureProcessError(
                    'the measuring process ended without a result (exit code '
                    f'{process.exitcode}): it may have run out of memory; try '
                    'a smaller region or close other programs'
                ) from None
            if kind == 'progress':
                last = payload
                yield payload
            elif kind == 'error':
                raise MeasureProcessError(payload)
            else:
                return _collect(*payload)
    finally:
        if receiver is not None:
            receiver.close()
        if process is not None and process.is_alive():
            process.terminate()  # cancelled: the child writes nothing
            process.join(5)
        for block in blocks:
            block.close()
            block.unlink()


def _share(array: np.ndarray, blocks: list) -> tuple[str, tuple, str]:
    """A shared-memory copy of ``array``: its ``(name, shape, dtype)``."""
    block = shared_memory.SharedMemory(create=True, size=max(array.nbytes, 1))
    blocks.append(block)
    copy_in_slabs(np.ndarray(array.shape, array.dtype, buffer=block.buf), array)
    return block.name, array.shape, array.dtype.str


#: bytes copied per slab by :func:`copy_in_slabs`
SLAB_BYTES = 8 << 20


def copy_in_slabs(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src``, a few MB at a time along the first axis.  One copy
    of a 52 MB map into fresh shared memory stalled a GUI thread for 125 ms
    (its page faults, with the GIL held); slabs let the GUI run between."""
    if src.ndim == 0 or src.nbytes <= SLAB_BYTES:
        dst[...] = src
        return
    step = max(1, SLAB_BYTES // max(1, src[0].nbytes))
    for i in range(0, len(src), step):
        dst[i : i + step] = src[i : i + step]


def _attach(spec: tuple[str, tuple, str]):
    """``(block, view)`` of a block another process created.  A ``spawn``
    child shares its parent's resource tracker, so the block stays
    registered once, and its creator's (or, for the child's result, the
    parent's) ``unlink`` is what frees it."""
    name, shape, dtype = spec
    block = shared_memory.SharedMemory(name=name)
    return block, np.ndarray(shape, np.dtype(dtype), buffer=block.buf)


def _child_main(sender, arrays: dict, settings, geometry, kwargs) -> None:
    """The child: attach the arrays, run the job, send its steps and result.
    The objects' label map goes back through a shared block the parent
    copies and frees."""
    blocks = []
    with contextlib.suppress(AttributeError, OSError):
        # background work: on a busy machine the viewer gets the CPU first
        os.nice(CHILD_NICENESS)
    try:
        views = {}
        for key, spec in arrays.items():
            block, views[key] = _attach(spec)
            blocks.append(block)
        gen = iter_objects_and_table(
            views['labels'], settings, geometry, image=views.get('image'), **kwargs
        )
        try:
            while True:
                sender.send(('progress', next(gen)))
        except StopIteration as stop:
            objects, table = stop.value
        spec = None
        if objects is not None:
            out = shared_memory.SharedMemory(create=True, size=objects.labels.nbytes)
            view = np.ndarray(
                objects.labels.shape, objects.labels.dtype, buffer=out.buf
            )
            np.copyto(view, objects.labels)
            spec = (out.name, view.shape, view.dtype.str)
            objects = replace(objects, labels=None)
            out.close()  # the parent copies it and unlinks it
        sender.send(('done', (objects, table, spec)))
    except Exception as err:  # noqa: BLE001 - the parent raises it
        traceback.print_exc()  # for a bug report; the user reads the message
        sender.send(('error', str(err) or type(err).__name__))
    finally:
        for block in blocks:
            block.close()
        sender.close()


def _collect(
    objects: Objects | None, table: Table, spec
) -> tuple[Objects | None, Table]:
    """The child's result, its objects' labels copied out of shared memory."""
    if spec is not None:
        block, view = _attach(spec)
        try:
            labels = np.empty(view.shape, view.dtype)
            copy_in_slabs(labels, view)
        finally:
            block.close()
            block.unlink()
        objects = replace(objects, labels=labels)
    return objects, table
