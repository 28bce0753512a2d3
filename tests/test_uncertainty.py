"""Where to annotate next: the uncertainty map and the slice ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vmunet.inference import Predictor
from napari_vmunet.inference.uncertainty import (
    annotated_slices,
    pixel_uncertainty,
    rank_slices,
)
from napari_vmunet.io import load_sample
from napari_vmunet.zoo import builtin_checkpoints

pytestmark = pytest.mark.filterwarnings('ignore:demo-brain may not suit')

#: axial slices of the brain: outside the head, the edge of the brain,
#: and through the middle
SLICES = [2, 30, 60, 90, 120, 150]


@pytest.fixture(scope='module')
def brain_prediction():
    image, labels = load_sample('brain')
    volume = np.asarray(image.data)[SLICES]
    truth = np.asarray(labels)[SLICES]
    predictor = Predictor(builtin_checkpoints()['demo-brain'], device='cpu')
    result = predictor.predict(
        volume, return_probabilities=True, return_uncertainty=True
    )
    return volume, truth, result


def test_ranking_of_a_real_prediction_follows_the_margin_and_skips_annotations(
    brain_prediction,
):
    _, truth, result = brain_prediction
    probs = result.probabilities.astype(np.float64)
    # the measure, written out here independently of the module: one minus
    # the gap between the two likeliest classes
    ordered = np.sort(probs, axis=0)
    margin = 1 - (ordered[-1] - ordered[-2])
    assert result.uncertainty.shape == result.labels.shape
    assert result.uncertainty.dtype == np.float16
    np.testing.assert_allclose(result.uncertainty, margin, atol=2e-3)
    np.testing.assert_allclose(
        result.slice_uncertainty, margin.reshape(len(SLICES), -1).mean(1), atol=1e-3
    )
    assert result.slice_axis == 0

    # the user annotated two slices (any label in them counts)
    annotations = np.zeros_like(truth)
    annotations[3] = truth[3]
    annotations[1, 50, 60] = 1
    ranking = result.ranking(annotations)
    assert ranking.excluded == (1, 3)
    assert sorted(ranking.order.tolist()) == [0, 2, 4, 5]
    scores = result.slice_uncertainty[ranking.order]
    assert np.all(np.diff(scores) <= 0)  # most uncertain first
    # a real property of the measure: the slice outside the head, which
    # the model gets right, is suggested last; the first suggestion is a
    # slice the model gets wrong more often
    error = (result.labels != truth).reshape(len(SLICES), -1).mean(1)
    assert ranking.order[-1] == 0 and error[0] < 0.01
    assert error[ranking.order[0]] > error[ranking.order[-1]]
    top = ranking.top(2)
    assert [z for z, _ in top] == ranking.order[:2].tolist()
    text = ranking.describe(1)
    assert text == (f'Next to correct: slice {top[0][0]} (uncertainty {top[0][1]:.2f})')
    rows = ranking.rows()
    assert [r['rank'] for r in rows] == [1, 2, 3, 4, None, None]
    assert [r['slice'] for r in rows if r['annotated']] == [1, 3]


def test_uncertainty_is_normalised_for_any_class_count():
    p = np.array([0.0, 0.5, 1.0, 0.9])
    one = pixel_uncertainty(p, one_class=True)
    np.testing.assert_allclose(one, [0, 1, 0, 0.2], atol=1e-4)
    bits = pixel_uncertainty(p, one_class=True, measure='entropy')
    np.testing.assert_allclose(bits[:3], [0, 1, 0], atol=1e-4)
    assert 0.46 < bits[3] < 0.48  # H(0.9) = 0.469 bits
    for measure in ('margin', 'entropy'):
        for k in (2, 3, 7):
            uniform = np.full((k, 2, 2), 1 / k, dtype=np.float32)
            got = pixel_uncertainty(uniform, False, measure)
            np.testing.assert_allclose(got, 1, atol=1e-4)
            sure = np.zeros((k, 2, 2), dtype=np.float32)
            sure[k - 1] = 1
            got = pixel_uncertainty(sure, False, measure)
            np.testing.assert_allclose(got, 0, atol=1e-4)
        # two classes are one class and its complement, torch in torch out
        t = torch.tensor([[0.2, 0.5], [0.8, 0.5]])
        two = pixel_uncertainty(t, False, measure)
        assert torch.allclose(two, pixel_uncertainty(t[1], True, measure))
    # the margin ignores how the rest is spread, entropy does not
    a = np.array([[0.5], [0.3], [0.2]])
    b = np.array([[0.5], [0.5 - 1e-6], [1e-6]])
    assert pixel_uncertainty(a, False) < pixel_uncertainty(b, False)
    with pytest.raises(ValueError, match='one_class=True'):
        pixel_uncertainty(np.ones((1, 3, 3)), one_class=False)
    with pytest.raises(ValueError, match='unknown uncertainty measure'):
        pixel_uncertainty(p, True, measure='variance')


def test_rank_slices_ties_missing_scores_and_bad_annotations():
    ranking = rank_slices([0.2, 0.5, np.nan, 0.5, 0.1], annotated=[4])
    assert ranking.order.tolist() == [1, 3, 0]  # ties in slice order, no NaN
    assert rank_slices([0.3, 0.1], annotated=[0, 1]).describe() == (
        'Every slice carries annotations: nothing left to suggest.'
    )
    with pytest.raises(ValueError, match=r'\[5\] outside the 3 slice'):
        rank_slices([0.1, 0.2, 0.3], annotated=[5])


def test_annotated_slices_along_any_axis_and_2d():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[:, 2, 3] = 2  # a stroke through every slice along axis 0
    labels[1, 4, :] = 1
    assert annotated_slices(labels, 0).tolist() == [0, 1, 2, 3]
    assert annotated_slices(labels, 1).tolist() == [2, 4]
    assert annotated_slices(labels, 2).tolist() == [0, 1, 2, 3, 4, 5]
    assert annotated_slices(labels[0], None).tolist() == [0]
    assert annotated_slices(np.zeros((3, 3)), None).tolist() == []
    with pytest.raises(ValueError, match='slice axis 3'):
        annotated_slices(labels, 3)


def test_other_slice_axes_2d_images_and_a_missing_uncertainty(brain_prediction):
    volume = brain_prediction[0][:, 60:124, 40:104]
    predictor = Predictor(builtin_checkpoints()['demo-brain'], device='cpu')
    along_x = predictor.predict(volume[:3], slice_axis=2, return_uncertainty=True)
    assert along_x.slice_axis == 2 and along_x.slice_uncertainty.shape == (64,)
    np.testing.assert_allclose(
        along_x.slice_uncertainty,
        along_x.uncertainty.astype(np.float64).mean(axis=(0, 1)),
        atol=1e-3,
    )
    flat = predictor.predict(volume[3], return_uncertainty=True)
    assert flat.slice_axis is None and flat.slice_uncertainty.shape == (1,)
    assert flat.ranking().order.tolist() == [0]
    plain = predictor.predict(volume[3])
    assert plain.uncertainty is None
    with pytest.raises(ValueError, match='return_uncertainty=True'):
        plain.ranking()
    with pytest.raises(ValueError, match=r'annotations of shape \(2, 64\)'):
        flat.ranking(np.zeros((2, 64), np.uint8))


def test_suggestions_keep_apart_from_each_other_and_from_annotations():
    """Neighbouring slices look alike: the picks keep a gap (the slices
    shared among picks and annotations, halved), and fall back to the
    next most uncertain when too few are far enough apart."""
    scores = np.zeros(40)
    scores[[20, 21, 22, 9, 30, 2]] = [0.9, 0.85, 0.8, 0.5, 0.4, 0.3]
    ranking = rank_slices(scores, annotated=[8])
    assert ranking.gap(3) == 5  # 40 slices / (3 picks + 1 annotated) / 2
    assert [z for z, _ in ranking.top(3)] == [20, 30, 2]  # 21, 22 too close; 9 by 8
    assert [z for z, _ in ranking.top(3, spread=False)] == [20, 21, 22]
    assert ranking.rows()[1]['slice'] == 21  # the full table keeps the order
    few = rank_slices([0.9, 0.8, 0.7, 0.1])
    assert [z for z, _ in few.top(3)] == [0, 1, 2]  # gap 1: nothing to skip
    even = rank_slices(np.linspace(1, 0, 20))
    assert [z for z, _ in even.top(4)] == [0, 2, 4, 6]  # gap 20 / 4 / 2
    clustered = np.full(30, np.nan)  # only three candidates, side by side
    clustered[:3] = [0.3, 0.2, 0.1]
    assert [z for z, _ in rank_slices(clustered).top(3)] == [0, 1, 2]  # relaxed


def test_blank_slices_are_never_suggested(brain_prediction):
    """The air above the head (34 of the brain's 189 slices hold one value)
    has nothing to annotate: once the slices with content are annotated,
    the panel says so instead of suggesting blank ones."""
    image, _ = load_sample('brain')
    brain = np.asarray(image.data)
    blank = [z for z in range(brain.shape[0]) if np.ptp(brain[z]) == 0]
    assert len(blank) >= 2
    volume = brain[[90, blank[0], 120, blank[-1]]]
    predictor = Predictor(builtin_checkpoints()['demo-brain'], device='cpu')
    result = predictor.predict(volume, return_uncertainty=True)
    assert np.isfinite(result.slice_uncertainty[[0, 2]]).all()
    assert np.isnan(result.slice_uncertainty[[1, 3]]).all()
    ranking = result.ranking()
    assert sorted(ranking.order.tolist()) == [0, 2]
    assert ranking.unscored == (1, 3)
    assert [z for z, _ in ranking.top(3)] == sorted(
        ranking.order.tolist(), key=lambda z: -result.slice_uncertainty[z]
    )
    done = result.ranking([0, 2])
    assert done.top(3) == []
    assert done.describe() == (
        'Every slice with content carries annotations (the others are blank): '
        'nothing left to suggest.'
    )
