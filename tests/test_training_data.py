"""Training data: slice collection, targets, copies, split, tiles, losses, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_vmunet.io import load_sample
from napari_vmunet.rules.normalization import map_channels, normalize
from napari_vmunet.training import (
    AugmentConfig,
    BceDiceLoss,
    CeDiceLoss,
    DiceScore,
    TileDataset,
    TrainConfig,
    TrainingPair,
    extract_slices,
    prepare_samples,
    random_tile,
    split_validation,
)
from napari_vmunet.training.data import Sample, data_channels

ONE = dict(num_classes=1, input_channels=3, normalization=None)


def volume(shape=(6, 32, 40), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape).astype(np.uint16)


# --------------------------------------------------------------------------
# which slices


def test_annotated_and_background_slices_of_a_volume():
    image = volume()
    labels = np.zeros(image.shape, np.uint16)
    labels[1, 3:9, 4:10] = 7
    labels[4, 10:20, 10:12] = 3
    pair = TrainingPair(image, labels, background_slices=(2,), name='vol')
    slices = extract_slices([pair])
    assert [s.source for s in slices] == ['vol slice 1', 'vol slice 2', 'vol slice 4']
    assert [s.background for s in slices] == [False, True, False]
    np.testing.assert_array_equal(slices[0].image[0], image[1])
    np.testing.assert_array_equal(slices[2].labels, labels[4])
    assert slices[1].image.shape == (1, 32, 40)


def test_slice_axis_and_channels_of_a_volume():
    image = volume((2, 5, 32, 40))  # C, Z, Y, X
    labels = np.zeros((5, 32, 40), np.uint8)
    labels[:, 3, 7] = 1  # every z has a label at (y=3, x=7)
    labels_xz = np.zeros((5, 32, 40), np.uint8)
    labels_xz[:, 10, :] = 1  # only y == 10 is annotated
    pair = TrainingPair(image, labels_xz, channel_axis=0, slice_axis=2)
    (s,) = extract_slices([pair])
    assert s.source == 'image 1 slice 10'
    assert s.image.shape == (2, 5, 40)
    np.testing.assert_array_equal(s.image, image[:, :, 10, :])
    z_slices = extract_slices([TrainingPair(image, labels, channel_axis=0)])
    assert len(z_slices) == 5 and z_slices[0].image.shape == (2, 32, 40)


def test_2d_grey_rgb_and_multichannel_images():
    labels = np.zeros((32, 40), np.int32)
    labels[5:9, 5:9] = 1
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgba = np.zeros((32, 40, 4), np.uint8)
    multi = np.zeros((2, 32, 40), np.float32)
    (a,) = extract_slices([TrainingPair(rgb, labels)])
    (b,) = extract_slices([TrainingPair(rgba, labels)])
    (c,) = extract_slices([TrainingPair(multi, labels, channel_axis=0)])
    assert a.rgb and a.image.shape == (3, 32, 40)
    assert b.rgb and b.image.shape == (4, 32, 40)
    assert not c.rgb and c.image.shape == (2, 32, 40)
    assert data_channels([a, b]) == 3
    assert data_channels([c]) == 2
    ready = prepare_samples([b], **ONE)
    assert ready[0].image.shape == (3, 32, 40)  # alpha dropped, as inference


def test_data_errors_name_the_image_and_the_fix():
    image = volume((3, 16, 16))
    with pytest.raises(ValueError, match='no slice has a label'):
        extract_slices([TrainingPair(image, np.zeros(image.shape, int), name='v')])
    labels = np.zeros(image.shape, int)
    labels[0, 1, 1] = 1
    with pytest.raises(ValueError, match='marked as background only but have labels'):
        extract_slices([TrainingPair(image, labels, background_slices=(0,))])
    with pytest.raises(ValueError, match='does not exist'):
        extract_slices([TrainingPair(image, labels, background_slices=(3,))])
    with pytest.raises(ValueError, match=r'labels have shape \(3, 16, 15\)'):
        extract_slices([TrainingPair(image, labels[..., :15])])
    with pytest.raises(ValueError, match='negative'):
        extract_slices([TrainingPair(image, -labels)])
    with pytest.raises(ValueError, match='whole numbers'):
        extract_slices([TrainingPair(image, labels * 0.5)])
    with pytest.raises(TypeError, match='TrainingPair'):
        extract_slices([image])
    with pytest.raises(ValueError, match='no training data'):
        extract_slices([])
    # a 2-D image whose labels are empty can be declared background
    (s,) = extract_slices([TrainingPair(image[0], labels[1], background_slices=(0,))])
    assert s.background


# --------------------------------------------------------------------------
# targets and normalisation


def test_instance_labels_become_foreground_for_one_class():
    image, labels = load_sample('nuclei')
    assert len(np.unique(labels)) > 100  # real instance ids
    (sample,) = prepare_samples(
        extract_slices([TrainingPair(image.data, labels)]), **ONE
    )
    np.testing.assert_array_equal(sample.mask, labels > 0)
    assert sample.mask.dtype == np.uint8


def test_multiclass_labels_are_class_indices_and_too_large_values_fail():
    image = volume((32, 32))
    labels = np.zeros((32, 32), np.uint8)
    labels[:10] = 1
    labels[20:] = 2
    slices = extract_slices([TrainingPair(image, labels, name='tissue')])
    (sample,) = prepare_samples(
        slices, num_classes=3, input_channels=3, normalization=None
    )
    np.testing.assert_array_equal(sample.mask, labels)
    labels[0, 0] = 5
    slices = extract_slices([TrainingPair(image, labels, name='tissue')])
    with pytest.raises(
        ValueError, match=r'tissue: the labels contain the value 5.*num_classes=6'
    ):
        prepare_samples(slices, num_classes=3, input_channels=3, normalization=None)
    nuclei_image, nuclei = load_sample('nuclei')
    slices = extract_slices([TrainingPair(nuclei_image.data, nuclei)])
    with pytest.raises(ValueError, match='instance labels'):
        prepare_samples(slices, num_classes=2, input_channels=3, normalization=None)


@pytest.mark.parametrize(
    'spec', [None, {'mode': 'window', 'low': 100, 'high': 3000}, {'mode': 'percentile'}]
)
def test_slices_are_normalised_exactly_as_inference(spec):
    image = volume((4, 32, 40))
    labels = np.zeros(image.shape, np.uint8)
    labels[2, 4:8, 4:8] = 1
    (s,) = prepare_samples(
        extract_slices([TrainingPair(image, labels)]),
        num_classes=1,
        input_channels=3,
        normalization=spec,
    )
    want = map_channels(normalize(image[2][None], spec), 3)
    np.testing.assert_array_equal(s.image, want)
    assert s.image.dtype == np.float32


def test_extracted_slices_are_copies_and_inputs_stay_untouched():
    image = volume((4, 32, 40))
    labels = np.zeros(image.shape, np.uint16)
    labels[1, 2:6, 2:6] = 9
    before_image, before_labels = image.copy(), labels.copy()
    slices = extract_slices([TrainingPair(image, labels)])
    samples = prepare_samples(slices, **ONE)
    image[:] = 0  # the user keeps editing the layers
    labels[:] = 0
    assert slices[0].image.max() > 0 and slices[0].labels.max() == 9
    assert samples[0].mask.sum() == 16
    image[:], labels[:] = before_image, before_labels
    # and nothing downstream writes into the user's arrays
    image.flags.writeable = False
    labels.flags.writeable = False
    samples = prepare_samples(extract_slices([TrainingPair(image, labels)]), **ONE)
    TileDataset(samples, 32, 4, seed=0, augment=AugmentConfig())[0]
    np.testing.assert_array_equal(image, before_image)


# --------------------------------------------------------------------------
# validation split


def fake_samples(n_objects, n_background=0):
    out = []
    for i in range(n_objects + n_background):
        mask = np.zeros((4, 4), np.uint8)
        if i < n_objects:
            mask[0, 0] = 1
        out.append(
            Sample(np.zeros((3, 4, 4), np.float32), mask, f's{i}', i >= n_objects)
        )
    return out


@pytest.mark.parametrize('fraction', [0.01, 0.1, 0.2, 0.5])
@pytest.mark.parametrize('n', [2, 3, 5, 9, 12])
def test_validation_split_is_never_empty_from_two_slices(n, fraction):
    train, val = split_validation(fake_samples(n), fraction, seed=3)
    assert len(val) >= 1 and len(train) >= 1
    assert sorted(train + val) == list(range(n))
    assert (train, val) == split_validation(fake_samples(n), fraction, seed=3)


def test_validation_split_is_seeded_stratified_and_optional():
    samples = fake_samples(10, 10)
    train, val = split_validation(samples, 0.2, seed=0)
    assert sum(samples[i].background for i in val) == 2  # 20 % of each kind
    assert sum(not samples[i].background for i in val) == 2
    assert split_validation(samples, 0.2, seed=1) != (train, val)
    assert split_validation(fake_samples(1), 0.5, seed=0) == ([0], [])
    assert split_validation(fake_samples(5), 0.0, seed=0) == (list(range(5)), [])
    # one slice with objects + background: the object slice must train
    train, val = split_validation(fake_samples(1, 1), 0.2, seed=0)
    assert train == [0] and val == [1]


# --------------------------------------------------------------------------
# tiles and augmentation


def classes_image(seed=0, shape=(70, 90), k=4):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, k, (shape[0] // 5 + 1, shape[1] // 5 + 1))
    mask = np.kron(mask, np.ones((5, 5), int))[: shape[0], : shape[1]]
    return mask.astype(np.uint8)


def test_augmentation_keeps_image_and_mask_aligned_even_when_rotated():
    mask = classes_image()
    image = np.stack([mask, mask]).astype(np.float32)
    config = AugmentConfig(
        rotate_prob=1.0, max_angle=30, intensity_prob=0.0, image_interpolation='nearest'
    )
    for seed in range(25):
        x, m = random_tile(image, mask, 32, np.random.default_rng(seed), config)
        assert x.shape == (2, 32, 32) and m.shape == (32, 32)
        assert x.dtype == torch.float32 and m.dtype == torch.int64
        torch.testing.assert_close(x[0], m.float(), rtol=0, atol=0)
        torch.testing.assert_close(x[1], m.float(), rtol=0, atol=0)


def test_without_rotation_a_tile_is_a_flipped_or_turned_crop():
    mask = classes_image(1, (48, 64), k=200)  # nearly unique blocks
    image = (mask.astype(np.float32) * 3)[None]
    config = AugmentConfig(rotate_prob=0.0, intensity_prob=0.0)
    for seed in range(10):
        x, m = random_tile(image, mask, 32, np.random.default_rng(seed), config)
        torch.testing.assert_close(x[0], m.float() * 3)
        found = False
        for k in range(4):
            for flip in (False, True):
                t = torch.rot90(m, -k, (0, 1))
                t = t.flip(-1) if flip else t
                crops = np.lib.stride_tricks.sliding_window_view(mask, (32, 32))
                hits = (crops == t.numpy()).all(axis=(2, 3))
                found |= bool(hits.any())
        assert found


def test_bilinear_rotation_keeps_objects_under_their_mask():
    mask = classes_image(2, k=2)
    image = (mask.astype(np.float32) * 200)[None]
    config = AugmentConfig(rotate_prob=1.0, max_angle=15, intensity_prob=0.0)
    for seed in range(10):
        x, m = random_tile(image, mask, 32, np.random.default_rng(seed), config)
        agree = ((x[0] > 100) == (m > 0)).float().mean()
        assert agree > 0.97


def test_tiles_centre_on_sparse_objects_and_small_images_are_padded():
    mask = np.zeros((40, 50), np.uint8)
    mask[35, 3] = 1  # one labelled pixel in a corner
    image = np.random.default_rng(0).normal(size=(3, 40, 50)).astype(np.float32)
    sample = Sample(image, mask, 'tiny', False)
    ds = TileDataset(
        [sample], 64, 16, seed=0, augment=AugmentConfig(foreground_prob=1.0)
    )
    assert ds.samples[0].shape == (64, 64)  # mirror-padded like inference
    for i in range(16):
        x, m = ds[i]
        assert x.shape == (3, 64, 64) and m.any()


def test_tiles_are_a_function_of_seed_epoch_and_index():
    mask = classes_image(3, (96, 96), k=2)
    image = np.stack([mask] * 3).astype(np.float32) * 50
    sample = Sample(image, mask, 's', False)
    a = TileDataset([sample], 32, 8, seed=5, augment=AugmentConfig())
    b = TileDataset([sample], 32, 8, seed=5, augment=AugmentConfig())
    for i in range(8):
        torch.testing.assert_close(a[i], b[i])
    first = a[3][0].clone()
    a.set_epoch(2)
    assert not torch.equal(first, a[3][0])


def test_intensity_jitter_stays_in_a_sane_range():
    image = np.linspace(0, 255, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    mask = np.zeros((64, 64), np.uint8)
    config = AugmentConfig(intensity_prob=1.0, rotate_prob=0.0)
    for seed in range(10):
        x, _ = random_tile(
            image, mask, 32, np.random.default_rng(seed), config, value_range=(0, 255)
        )
        assert torch.isfinite(x).all()
        assert float(x.min()) > -40 and float(x.max()) < 300


# --------------------------------------------------------------------------
# losses and metrics


def test_bce_dice_is_the_original_formula():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 1, 16, 16, generator=g).clamp(0.01, 0.99)
    t = (torch.rand(3, 16, 16, generator=g) > 0.7).long()
    tf = t[:, None].float()
    bce = torch.nn.functional.binary_cross_entropy(p.view(3, -1), tf.view(3, -1))
    inter = (p * tf).view(3, -1).sum(1)
    dice = 1 - ((2 * inter + 1) / (p.view(3, -1).sum(1) + tf.view(3, -1).sum(1) + 1))
    torch.testing.assert_close(BceDiceLoss()(p, t), bce + dice.mean())


def test_ce_dice_is_the_original_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.randint(0, 4, (2, 8, 8), generator=g)
    ce = torch.nn.functional.cross_entropy(logits, t)
    p = torch.softmax(logits, 1)
    oh = torch.nn.functional.one_hot(t, 4).permute(0, 3, 1, 2).float()
    dice = [
        1
        - (2 * (p[:, c] * oh[:, c]).sum() + 1e-5)
        / ((p[:, c] ** 2).sum() + (oh[:, c] ** 2).sum() + 1e-5)
        for c in range(4)
    ]
    torch.testing.assert_close(CeDiceLoss()(logits, t), ce + sum(dice) / 4)


def test_dice_score_counts_foreground_classes_on_images_that_have_them():
    score = DiceScore(['background', 'a', 'b', 'c'], 4)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :4] = 1  # 32 px of class 1; class 2 and 3 absent
    probs = torch.zeros(1, 4, 8, 8)
    probs[0, 1, :2] = 1  # 16 px predicted as class 1
    probs[0, 0, 2:] = 1
    score.update(probs, target)
    result = score.result()
    assert result['a'] == pytest.approx(2 * 16 / (16 + 32))
    assert math.isnan(result['b']) and math.isnan(result['c'])
    one = DiceScore(['background', 'cell'], 1)
    one.update(torch.full((1, 1, 4, 4), 0.9), torch.ones(1, 4, 4))
    assert one.result() == {'cell': pytest.approx(1.0)}


# --------------------------------------------------------------------------
# config


def test_presets_and_overrides():
    full = TrainConfig(preset='full')
    assert (full.lr, full.weight_decay, full.eps) == (1e-3, 1e-2, 1e-8)
    assert full.betas == (0.9, 0.999)
    assert (full.t_max, full.eta_min, full.epochs) == (50, 1e-5, 300)
    assert full.batch_size == 32
    fine = TrainConfig(init='trained.safetensors', epochs=7, lr=3e-4)
    assert fine.preset == 'finetune' and fine.t_max == 7 and fine.lr == 3e-4
    assert fine.batch_size == 4 and fine.num_workers == 0


def test_a_new_model_gets_the_scratch_recipe_by_itself():
    """Issue #19: a new network at the fine-tune rate (1e-4) does not fit
    a few slices; naming no preset picks by the starting point."""
    new = TrainConfig()
    assert (new.preset, new.lr, new.epochs, new.eta_min) == ('scratch', 1e-3, 60, 1e-5)
    assert new.auto_preset and new.min_steps_per_epoch == 10 and new.t_max == 60
    assert new.drop_path_rate == 0.0  # a fine-tune keeps the model's own
    assert TrainConfig(init='vmamba:w.pth').preset == 'scratch'
    trained = TrainConfig(init='m.safetensors')
    assert (trained.preset, trained.lr, trained.epochs) == ('finetune', 1e-4, 20)
    assert trained.drop_path_rate is None
    # a preset or a value the caller names wins
    named = TrainConfig(preset='finetune')
    assert named.lr == 1e-4 and not named.auto_preset
    assert TrainConfig(lr=5e-4).lr == 5e-4
    # a copy from another starting point gets that point's recipe, and keeps
    # what the caller set
    moved = TrainConfig(epochs=5).replace(init='m.safetensors')
    assert (moved.preset, moved.lr, moved.epochs, moved.t_max) == (
        'finetune',
        1e-4,
        5,
        5,
    )
    back = moved.replace(init=None)
    assert (back.preset, back.lr, back.eta_min) == ('scratch', 1e-3, 1e-5)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(preset='fast'), 'unknown preset'),
        (dict(tile_size=100), 'multiple of 32'),
        (dict(output='m.pth'), 'safetensors'),
        (dict(dims=[8, 16, 24, 64]), 'double'),
        (dict(val_fraction=1.0), 'val_fraction'),
        (dict(epochs=0), 'epochs'),
        (dict(lr=-1.0), 'lr'),
        (dict(init='vmamba:'), 'needs a path'),
    ],
)
def test_bad_config_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)
