"""The cyclic collector is off while heavy work computes and on between
its steps: a full collection of a napari session's heap holds the GIL for
~0.3 s, and froze the viewer when it landed inside a prediction."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from napari_vmunet.inference import Predictor
from napari_vmunet.model.gc_pause import GC_PAUSE, gc_paused_steps
from tiny_models import save_tiny


@pytest.fixture
def collector_on():
    enabled = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if enabled else gc.disable)()


def test_steps_compute_paused_and_the_consumer_sees_it_on(collector_on):
    inside = []

    def work():
        inside.append(gc.isenabled())
        yield 1
        inside.append(gc.isenabled())
        yield 2
        inside.append(gc.isenabled())
        return 'done'

    seen = []
    gen = gc_paused_steps(work())
    while True:
        try:
            seen.append((next(gen), gc.isenabled()))
        except StopIteration as stop:
            assert stop.value == 'done'
            break
    assert inside == [False, False, False]
    assert seen == [(1, True), (2, True)]


def test_an_abandoned_or_failing_generator_leaves_the_collector_on(collector_on):
    closed = []

    def work():
        try:
            yield 1
            yield 2
        finally:
            closed.append(gc.isenabled())

    gen = gc_paused_steps(work())
    next(gen)
    gen.close()  # Cancel: the inner generator is closed too
    assert closed == [True] and gc.isenabled()

    def broken():
        yield 1
        raise RuntimeError('out of memory')

    gen = gc_paused_steps(broken())
    next(gen)
    with pytest.raises(RuntimeError, match='out of memory'):
        next(gen)
    assert gc.isenabled()


def test_a_pause_nested_in_another_restores_only_at_the_outer_end(collector_on):
    with GC_PAUSE:
        with GC_PAUSE:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # a caller who had it off keeps it off
    with GC_PAUSE:
        pass
    assert not gc.isenabled()


def test_a_prediction_runs_paused_between_its_yields_on(tmp_path, collector_on):
    pred = Predictor(save_tiny(tmp_path, 'm'), device='cpu')
    during = []
    forward = pred.model.forward

    def spy(x):
        during.append(gc.isenabled())
        return forward(x)

    pred.model.forward = spy
    volume = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    between = []
    gen = pred.iter_predict(volume)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        between.append(gc.isenabled())
    assert result.labels.shape == (3, 64, 64)
    assert during and not any(during)
    assert between and all(between)
    assert gc.isenabled()
