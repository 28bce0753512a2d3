"""Which model suits which image: training records its inputs, inference
compares (issue #16, item 1: never a wrong preselection, warn when far)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import safetensors.torch

from napari_vmunet.checkpoint import load_checkpoint, save_checkpoint
from napari_vmunet.inference import Predictor
from napari_vmunet.inference.fit import FAR_FROM_TRAINING, assess_fit, best_fit
from napari_vmunet.io import load_sample
from napari_vmunet.model import VMUNet
from napari_vmunet.rules.input_stats import histogram_distance
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair
from napari_vmunet.zoo import builtin_checkpoints
from tiny_models import TINY_SHALLOW


@pytest.fixture(scope='module')
def demos():
    return {name: load_checkpoint(p) for name, p in builtin_checkpoints().items()}


@pytest.fixture(scope='module')
def samples():
    return {name: np.asarray(load_sample(name)[0].data) for name in ('nuclei', 'brain')}


def test_each_sample_suits_its_own_demo_model_only(demos, samples):
    names = list(demos)
    for sample, own in (('nuclei', 'demo-nuclei'), ('brain', 'demo-brain')):
        fits = [assess_fit(demos[n], samples[sample]) for n in names]
        assert names[best_fit(fits)] == own
        for name, fit in zip(names, fits, strict=True):
            assert fit.usable and fit.known
            if name == own:
                assert fit.suits and fit.distance < FAR_FROM_TRAINING / 1.5
            else:
                assert not fit.suits and fit.distance > 1.5 * FAR_FROM_TRAINING
                assert len(fit.reasons) == 2  # kind of data and intensities
                assert 'may not suit this image' in fit.warning(name)


def test_an_inverted_image_suits_no_model_and_nothing_is_preselected(demos, samples):
    inverted = samples['nuclei'].max() - samples['nuclei']
    fits = [assess_fit(c, inverted) for c in demos.values()]
    assert best_fit(fits) is None
    fit = assess_fit(demos['demo-nuclei'], inverted)
    far = (
        f"the intensities are far from its training data's (distance "
        f'{fit.distance:.2f}, over {FAR_FROM_TRAINING:g} counts as far)'
    )
    assert fit.reasons == (far,)


def test_one_outlier_pixel_moves_the_image_away_from_the_training_data(demos, samples):
    """One pixel at 10x the maximum ruins min-max normalisation: the fit
    sees what the network would see."""
    spoiled = samples['nuclei'].astype(np.float32)
    spoiled[0, 0] = 10 * spoiled.max()
    clean = assess_fit(demos['demo-nuclei'], samples['nuclei']).distance
    assert assess_fit(demos['demo-nuclei'], spoiled).distance > 10 * clean
    # ... and percentile normalisation, the offered fix, brings it back
    fixed = assess_fit(
        demos['demo-nuclei'],
        spoiled,
        normalization={'mode': 'percentile', 'low': 1, 'high': 99.8},
    )
    assert fixed.distance < FAR_FROM_TRAINING


def test_channels_that_do_not_fit_make_a_model_unusable(demos):
    two = np.zeros((2, 40, 40), np.float32)  # read as a 2-slice volume
    assert assess_fit(demos['demo-nuclei'], two).usable
    fit = assess_fit(demos['demo-nuclei'], np.zeros((40, 40, 2)), channel_axis=2)
    assert not fit.usable and 'input channel' in fit.reasons[0]
    assert best_fit([fit]) is None


def test_a_model_without_recorded_inputs_is_never_preselected_nor_warned(
    tmp_path, samples
):
    model = VMUNet(num_classes=1, **TINY_SHALLOW)
    old = save_checkpoint(model, tmp_path / 'old.safetensors')
    fit = assess_fit(load_checkpoint(old), samples['nuclei'])
    assert fit.usable and not fit.known and not fit.suits
    assert fit.warning('old') is None and best_fit([fit]) is None


def test_training_records_its_inputs_and_checkpoints_keep_them(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 10, (4, 48, 48)).astype(np.float32)
    labels = np.zeros(volume.shape, np.uint8)
    labels[1, 10:30, 10:30] = labels[3, 5:20, 20:40] = 1
    volume[labels > 0] += 80
    out = tmp_path / 'm.safetensors'
    config = TrainConfig(
        output=out, epochs=1, tile_size=32, batch_size=2, steps_per_epoch=1,
        val_fraction=0, device='cpu', **TINY_SHALLOW,
    )  # fmt: skip
    for _ in Trainer(config, [TrainingPair(volume, labels, name='vol')]).run():
        pass
    stats = load_checkpoint(out).training_stats
    assert (stats['kind'], stats['channels'], stats['images']) == ('volume', 1, 2)
    assert stats['range'] == [0.0, 255.0] and sum(stats['histogram']) == pytest.approx(
        1
    )
    # a re-save of the loaded checkpoint keeps them
    again = save_checkpoint(load_checkpoint(out), tmp_path / 'copy.safetensors')
    assert load_checkpoint(again).training_stats == stats
    # the trained model suits another volume like its data, not a 2-D image
    like = rng.normal(100, 10, (3, 48, 48)).astype(np.float32)
    like[:, 10:30, 10:30] += 80
    ckpt = load_checkpoint(out)
    assert assess_fit(ckpt, like).suits
    assert 'this is a 2-D image' in assess_fit(ckpt, like[0]).reasons[0]


def test_a_damaged_stats_entry_is_ignored_not_fatal(tmp_path):
    path = save_checkpoint(
        VMUNet(num_classes=1, **TINY_SHALLOW), tmp_path / 'm.safetensors'
    )
    tensors = safetensors.torch.load_file(str(path))
    with open(path, 'rb') as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), 'little')))
    meta = header['__metadata__']
    meta['napari_vmunet_training_stats'] = '{"version": 1, "histogram": "nan"'
    safetensors.torch.save_file(tensors, str(path), metadata=meta)
    assert load_checkpoint(path).training_stats is None
    with pytest.raises(ValueError, match='summarize_inputs'):
        save_checkpoint(
            VMUNet(num_classes=1, **TINY_SHALLOW), tmp_path / 'x.safetensors',
            training_stats={'kind': 'volume'},
        )  # fmt: skip


def test_the_predictor_warns_before_and_after_a_run_on_a_far_image(demos, samples):
    image = samples['nuclei'][:96, :96]
    predictor = Predictor(demos['demo-brain'], device='cpu')
    with pytest.warns(UserWarning, match='demo-brain may not suit this image'):
        steps = predictor.iter_predict(image)
        first = next(steps)
        assert any('may not suit' in w for w in first.warnings)
        try:
            while True:
                next(steps)
        except StopIteration as stop:
            result = stop.value
    assert any('trained on slices of volumes' in w for w in result.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        own = Predictor(demos['demo-nuclei'], device='cpu').predict(image)
    assert not own.warnings


def test_histogram_distance_is_a_share_of_the_range():
    a, b = [1.0] + [0.0] * 15, [0.0] * 15 + [1.0]
    assert histogram_distance(a, a) == 0.0
    assert histogram_distance(a, b) == pytest.approx(1.0)
    assert histogram_distance(a, [0.5, 0.5] + [0.0] * 14) == pytest.approx(0.5 / 15)


def test_a_lazy_image_is_judged_on_the_planes_the_run_reads(demos, samples):
    da = pytest.importorskip('dask.array')
    volume = da.from_array(samples['brain'][60:120:6], chunks=(1, -1, -1))
    with pytest.warns(UserWarning, match='demo-nuclei may not suit'):
        result = Predictor(demos['demo-nuclei'], device='cpu').predict(volume)
    assert any('trained on 2-D images, this is a volume' in w for w in result.warnings)
