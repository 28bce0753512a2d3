"""Training in a separate process, for the napari dock.

The GUI must stay responsive and survive whatever happens to training: a
crash, an out-of-memory kill, a ``kill -9``.  So :class:`TrainingProcess`
runs :class:`~napari_vmunet.training.Trainer` in a child started with the
``spawn`` method (no forked Qt or CUDA state), and listens to it on a pipe:

* The annotated slices are extracted -- i.e. **copied** -- in the parent at
  :meth:`~TrainingProcess.start` (bad data fails right there, with the
  trainer's message) and pickled to the child; later edits of the user's
  layers never reach the run.
* The child sends every event over a one-way pipe whose write end only the
  child holds.  A reader thread in the parent queues them; when the child
  dies the pipe reports end-of-file at once, so the parent always gets a
  :class:`~napari_vmunet.training.events.Finished` -- the child's own, or
  one made here from the exit code -- and never hangs.
* :meth:`~TrainingProcess.stop` sets a ``multiprocessing.Event`` the
  trainer checks before every step (graceful: it saves a resumable
  checkpoint); :meth:`~TrainingProcess.kill` is SIGKILL.
* The child leaves one core for the GUI (``torch.set_num_threads(cpus -
  1)``) and ignores Ctrl-C in the terminal: the parent decides.

As with any ``spawn`` child, a *script* that starts one must guard its top
level with ``if __name__ == '__main__':`` (the child imports the script's
main module); napari, notebooks and the CLI need nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import queue
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Sequence

from .._threads import available_cpus, reserve
from .config import TrainConfig, last_path
from .data import AnnotatedSlice, TrainingPair, extract_slices
from .events import Event, Finished, describe_error

_EOF = object()  # queued by the reader thread when the pipe closes


class TrainingProcess:
    """Run a training in a child process and follow it without blocking.

    ``poll(timeout)`` returns the events that arrived since the last call
    (waiting at most ``timeout`` seconds for the first); ``events()`` all
    events so far.  The last event is always a ``Finished``: the child's,
    or -- if the child died -- ``Finished(reason='error')`` saying how.
    """

    def __init__(
        self,
        config: TrainConfig,
        pairs: Sequence[TrainingPair | AnnotatedSlice],
        val_pairs: Sequence[TrainingPair | AnnotatedSlice] | None = None,
        *,
        num_threads: int | None = None,
    ):
        self.config = config
        self._pairs = pairs
        self._val_pairs = val_pairs
        self.num_threads = (
            num_threads or config.num_threads or max(1, available_cpus() - 1)
        )
        self._ctx = mp.get_context('spawn')
        self._process = None
        self._stop_event = None
        self._stop_requested = False  # stop() before the child existed
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._history: list[Event] = []
        self._closed = False
        self._killed = False
        self._reservation = None  # the cores this run keeps busy
        self.finished: Finished | None = None

    # -- control --------------------------------------------------------
    def start(self) -> None:
        """Copy the data, start the child and return at once."""
        if self._process is not None:
            raise RuntimeError('this training process was already started')
        mode = self.config.annotation
        slices = extract_slices(self._pairs, mode)
        val = None if self._val_pairs is None else extract_slices(self._val_pairs, mode)
        self._pairs = self._val_pairs = None  # the copies are what runs
        reader, writer = self._ctx.Pipe(duplex=False)
        self._stop_event = self._ctx.Event()
        if self._stop_requested:  # e.g. napari closed while data was copied
            self._stop_event.set()
        self._process = self._ctx.Process(
            target=_child_main,
            args=(self.config, slices, val, writer, self._stop_event, self.num_threads),
            name='napari-vmunet-training',
        )
        self._process.start()
        self._reservation = reserve(self.num_threads)
        self._reservation.__enter__()
        writer.close()  # the child's copy is now the only write end
        threading.Thread(
            target=_read_events,
            args=(reader, self._inbox, self._process),
            daemon=True,
        ).start()
        atexit.register(_shutdown, weakref.ref(self))

    def stop(self) -> None:
        """Ask the run to stop after the current step (it saves ``last``);
        asked before the child runs, it stops before its first step."""
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()

    def kill(self) -> None:
        """End the child immediately (SIGKILL); nothing more is saved."""
        if self._process is not None and self._process.is_alive():
            self._killed = True
            self._process.kill()

    def join(self, timeout: float | None = None) -> int | None:
        """Wait for the child to exit; returns its exit code (None if still
        running)."""
        if self._process is None:
            return None
        self._process.join(timeout)
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> Finished | None:
        """Collect events until the run finished (or ``timeout`` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.finished is None:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                break
            self.poll(left)
        return self.finished

    # -- state ----------------------------------------------------------
    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """New events since the last call; waits up to ``timeout`` seconds
        for the first one (0: never blocks)."""
        out: list[Event] = []
        if self._process is None:
            return out
        try:
            item = (
                self._inbox.get(timeout=timeout)
                if timeout > 0
                else self._inbox.get_nowait()
            )
            while True:
                self._take(item, out)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        if self._closed and self.finished is None:
            self._process.join(timeout=5)  # the pipe closed: it is exiting
            self.finished = self._death_notice()
            out.append(self.finished)
        if self.finished is not None and self._reservation is not None:
            self._reservation.__exit__(None, None, None)  # the cores are free
            self._reservation = None
        self._history.extend(out)
        return out

    def events(self) -> list[Event]:
        """Every event received so far (collects pending ones first)."""
        self.poll(0)
        return list(self._history)

    def _take(self, item, out: list[Event]) -> None:
        if item is _EOF:
            self._closed = True
            return
        if self.finished is not None:
            return  # nothing may follow the end
        if isinstance(item, Finished):
            self.finished = item
        out.append(item)

    def _death_notice(self) -> Finished:
        """A Finished for a child that ended without sending one."""
        code = self._process.exitcode
        if code is None:
            what = 'stopped answering (its channel closed) but is still running'
        elif code < 0:
            name = _signal_name(-code)
            what = f'was killed by {name}'
            if -code == signal.SIGKILL and not self._killed:
                what += (
                    ' -- usually the system ran out of memory; try a smaller '
                    'tile size or batch size'
                )
        else:
            what = f'exited unexpectedly with code {code}'
        last = None
        if self.config.output is not None and last_path(self.config.output).exists():
            last = str(last_path(self.config.output))
        best = self.config.output
        best = str(best) if best is not None and best.exists() else None
        if self._killed:
            reason, message = 'stopped', 'training was killed on request'
        else:
            reason, message = 'error', f'the training process {what}'
        if last:
            message += f'; resume from {last}'
        return Finished(reason, best_path=best, message=message, last_path=last)

    # -- context manager: never leave a child behind -----------------------
    def __enter__(self) -> TrainingProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop gracefully, waiting up to ``grace`` seconds, then kill."""
        if not self.is_alive():
            return
        self.stop()
        self._process.join(grace)
        if self._process.is_alive():
            self.kill()
            self._process.join(5)


#: Seconds the interpreter waits at exit for a training asked to stop: it
#: ends after its current step and saves the resumable checkpoint (a
#: full-size VM-UNet step takes ~13 s on a 2-core CPU); only then is it killed.
EXIT_GRACE_S = 30.0


def _shutdown(ref: weakref.ref) -> None:
    proc = ref()
    if proc is not None:
        proc.shutdown(grace=EXIT_GRACE_S)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f'signal {number}'


def _read_events(reader, inbox: queue.SimpleQueue, process=None) -> None:
    """Parent side: move events from the pipe to the inbox until EOF, then
    reap the child: a parent that stopped polling (its window closed, a
    script that moved on) must not keep a zombie process."""
    try:
        while True:
            inbox.put(reader.recv())
    except (EOFError, OSError):
        pass
    except Exception:  # noqa: BLE001 - a garbled message ends the channel
        pass
    finally:
        if process is not None:
            # the pipe closes when the child exits: this wait is short
            with contextlib.suppress(Exception):
                process.join(timeout=30)
        inbox.put(_EOF)
        with contextlib.suppress(OSError):
            reader.close()


def _child_main(config, slices, val, conn, stop_event, num_threads) -> None:
    """Child side: train, sending every event; keep going quietly (and stop
    gracefully) if the parent has gone."""
    import torch

    from .trainer import Trainer

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(num_threads)
    parent_alive = [True]

    def send(event: Event) -> None:
        if not parent_alive[0]:
            return
        try:
            conn.send(event)
        except (BrokenPipeError, OSError):
            parent_alive[0] = False

    try:
        trainer = Trainer(config, slices, val)
    except Exception as err:  # noqa: BLE001 - set-up errors go to the parent
        send(
            Finished(
                'error',
                message=describe_error(err),
                traceback=traceback.format_exc(),
            )
        )
        conn.close()
        return
    for event in trainer.run(lambda: stop_event.is_set() or not parent_alive[0]):
        send(event)
    conn.close()
