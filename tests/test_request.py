"""Prediction requests (inference.request): the path the inference dock
takes, tested without Qt on the real brain sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vmunet._generators import drive
from napari_vmunet.checkpoint import load_checkpoint
from napari_vmunet.inference import Predictor
from napari_vmunet.inference.request import PredictionRequest, iter_request
from napari_vmunet.io import load_sample
from tiny_models import save_tiny


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp('m'), num_classes=3, tile_size=64)


@pytest.fixture(scope='module')
def stack():
    """Two 'time points' of a small brain volume: (T, Z, Y, X)."""
    brain, _ = load_sample('brain')
    vol = np.asarray(brain.data[90:93, 60:124, 50:114], dtype=np.float32)
    return np.stack([vol, np.flip(vol, axis=1).copy()])


def run(request, data, predictor=None):
    predictor = predictor or request.make_predictor(load_checkpoint(request.checkpoint))
    steps = []
    result = drive(iter_request(request, data, predictor), steps.append, None, None)
    return result, steps


def test_every_time_point_of_a_4d_stack_is_predicted_into_one_output(model, stack):
    """Issue #16, item 10: the 4-D message said "pick one time point" and
    the dock offered no way to."""
    request = PredictionRequest(str(model), device='cpu', time_axis=0)
    result, steps = run(request, stack)
    assert result.region == ()
    assert result.prediction.labels.shape == stack.shape
    predictor = Predictor(model, device='cpu')
    for t in range(2):
        np.testing.assert_array_equal(
            result.prediction.labels[t], predictor.predict(stack[t]).labels
        )
    # one progress count over both time points, never going back
    done = [s.done for s in steps]
    assert done == sorted(done) and steps[-1].done == steps[-1].total
    assert steps[-1].describe().startswith('time point 2/2, slice 3/3')


def test_the_current_time_point_and_plane_go_into_their_place(model, stack):
    request = PredictionRequest(
        str(model), device='cpu', time_axis=0, time_index=1, slice_axis=1
    )
    result, _ = run(request, stack)
    assert result.region == (1, slice(None), slice(None), slice(None))
    full = np.zeros(stack.shape, np.uint8)
    merged = result.merge_into(full)
    want = Predictor(model, device='cpu').predict(stack[1]).labels
    np.testing.assert_array_equal(merged[1], want)
    assert not merged[0].any()
    # one plane of that time point: only it changes
    plane = PredictionRequest(
        str(model),
        device='cpu',
        time_axis=0,
        time_index=1,
        slice_axis=1,
        slice_index=2,
    )
    result, _ = run(plane, stack)
    assert result.region == (1, 2, slice(None), slice(None))
    assert result.prediction.labels.shape == stack.shape[2:]


def test_a_time_point_out_of_range_is_refused(model, stack):
    request = PredictionRequest(str(model), time_axis=0, time_index=5)
    with pytest.raises(ValueError, match='time point 5 is out of range'):
        request.parts(stack.shape)


def test_channels_after_the_time_axis_are_found_again(model, stack):
    """A (T, C, Y, X) stack of 2-channel images: the channel axis moves
    when the time axis is indexed away."""
    two = np.stack([stack[:, 0], stack[:, 1]], axis=1)  # (T=2, C=2, Y, X)
    request = PredictionRequest(
        str(model), device='cpu', time_axis=0, channel_axis=1, channel_map=(0, 1, 1)
    )
    assert [p.channel_axis for p in request.parts(two.shape)] == [0, 0]
    result, _ = run(request, two)
    assert result.prediction.labels.shape == (2, *two.shape[2:])


def test_the_normalisation_override_keeps_the_models_output_range(tmp_path):
    """A model trained on [0, 1] inputs (the original Synapse models) must
    still get [0, 1] when the user asks for percentiles."""
    from napari_vmunet.checkpoint import default_metadata, save_checkpoint
    from tiny_models import tiny_model

    net = tiny_model()
    meta = default_metadata(net.config, normalization='window:-125,275:0,1')
    path = save_checkpoint(net, tmp_path / 'ct.safetensors', meta)
    predictor = PredictionRequest(
        str(path), device='cpu', normalization={'mode': 'percentile'}
    ).make_predictor(load_checkpoint(path))
    assert predictor.normalization == {
        'mode': 'percentile',
        'low': 1.0,
        'high': 99.8,
        'range': [0.0, 1.0],
    }


def test_missing_data_can_be_labelled_background(tmp_path):
    """Issue #16, item 3: NaN pixels were silently read as the darkest
    value; now the warning offers the fix, and the fix labels them 0."""
    path = save_tiny(tmp_path)
    image, _ = load_sample('nuclei')
    x = np.asarray(image.data[:128, :128], dtype=np.float32).copy()
    x[40:80, 40:80] = np.nan
    # a threshold this low makes nearly every pixel foreground
    plain = Predictor(path, device='cpu', threshold=0.01)
    with pytest.warns(UserWarning, match='NaN / Inf pixels are background'):
        before = plain.predict(x, return_probabilities=True)
    assert before.labels[40:80, 40:80].all()
    masked = Predictor(path, device='cpu', threshold=0.01, nonfinite_background=True)
    with pytest.warns(UserWarning, match='labelled background, as asked'):
        after = masked.predict(x, return_probabilities=True)
    assert not after.labels[40:80, 40:80].any()
    assert not after.probabilities[40:80, 40:80].any()
    # elsewhere nothing changes
    keep = np.ones(x.shape, bool)
    keep[40:80, 40:80] = False
    np.testing.assert_array_equal(after.labels[keep], before.labels[keep])
