"""Training in a child process: events, graceful stop, kill -9, errors."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from napari_vmunet.checkpoint import load_checkpoint
from napari_vmunet.training import (
    Finished,
    Started,
    Step,
    TrainConfig,
    TrainingPair,
    TrainingProcess,
    last_path,
)
from napari_vmunet.training.process import available_cpus
from tiny_models import TINY_SHALLOW

#: a run far longer than any test: it only ends when told to
ENDLESS = dict(
    tile_size=32,
    batch_size=2,
    steps_per_epoch=50,
    epochs=1000,
    device='cpu',
    **TINY_SHALLOW,
)


def pair(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(20, 5, (64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 20:40] = 3
    image[labels > 0] += 60
    return TrainingPair(image, labels, name='blob')


def wait_for(proc, kind, timeout=60.0):
    """Poll until an event of ``kind`` arrives; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in proc.poll(0.2):
            if isinstance(event, kind):
                return event
            assert not isinstance(event, Finished), event
    raise AssertionError(f'no {kind.__name__} within {timeout} s')


def test_events_arrive_and_stop_takes_effect_within_two_seconds(tmp_path):
    out = tmp_path / 'm.safetensors'
    with TrainingProcess(TrainConfig(output=out, **ENDLESS), [pair()]) as proc:
        t0 = time.monotonic()
        proc.start()
        assert time.monotonic() - t0 < 1.0  # start() does not wait for the child
        assert proc.poll(0) == [] or isinstance(proc.events()[0], Started)
        started = wait_for(proc, Started)
        assert started.n_train == 1 and started.device == 'cpu'
        wait_for(proc, Step)
        t1 = time.monotonic()
        proc.stop()
        finished = proc.wait(timeout=10)
        elapsed = time.monotonic() - t1
        assert finished is not None and finished.reason == 'stopped', finished
        assert elapsed < 2.0, f'stop took {elapsed:.2f} s'
        assert proc.join(10) == 0 and not proc.is_alive()
    events = proc.events()
    assert isinstance(events[0], Started) and events[-1] is finished
    assert sum(isinstance(e, Finished) for e in events) == 1
    state = load_checkpoint(last_path(out)).training_state  # resumable
    assert state['step'] >= 1
    assert proc.poll(0.1) == []  # nothing after the end


def test_a_child_killed_with_sigkill_is_reported_and_the_parent_lives_on():
    with TrainingProcess(TrainConfig(**ENDLESS), [pair()]) as proc:
        proc.start()
        wait_for(proc, Step)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        finished = proc.wait(timeout=10)
        assert time.monotonic() - t0 < 5.0
        assert finished.reason == 'error'
        assert 'killed by SIGKILL' in finished.message
        assert 'out of memory' in finished.message
        assert proc.exitcode == -signal.SIGKILL
        assert not proc.is_alive()
        assert proc.events()[-1] is finished


def test_kill_on_request_is_a_stop_not_an_error():
    with TrainingProcess(TrainConfig(**ENDLESS), [pair()]) as proc:
        proc.start()
        wait_for(proc, Step)
        proc.kill()
        finished = proc.wait(timeout=10)
        assert finished.reason == 'stopped' and 'killed on request' in finished.message


def test_errors_in_the_child_come_back_as_an_error_event():
    # the labels hold the value 3, which a two-class model cannot learn
    config = TrainConfig(num_classes=2, **ENDLESS)
    with TrainingProcess(config, [pair()]) as proc:
        proc.start()
        finished = proc.wait(timeout=60)
    assert finished.reason == 'error'
    assert 'the labels contain the value 3' in finished.message
    assert 'ValueError' in finished.traceback
    assert proc.exitcode == 0


def test_bad_data_fails_in_the_parent_at_start():
    empty = TrainingPair(np.zeros((32, 32)), np.zeros((32, 32), np.uint8))
    proc = TrainingProcess(TrainConfig(**ENDLESS), [empty])
    with pytest.raises(ValueError, match='the image has no labels'):
        proc.start()
    assert not proc.is_alive() and proc.poll(0) == []
    assert TrainingProcess(TrainConfig(**ENDLESS), [pair()]).num_threads == max(
        1, available_cpus() - 1
    )
