"""Sparse annotation (issue #12): scribbles 0 = not annotated, 1 = background,
k + 1 = class k.  The conversion, the masked losses (asserted through their
gradients), tiles whose mask moves with the image, the errors, and short
real trainings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vmunet.cli import main
from napari_vmunet.inference import Predictor
from napari_vmunet.io import load_sample, write_image, write_labels
from napari_vmunet.rules.annotation import (
    IGNORE,
    paint_values,
    sparse_targets,
    with_ignore,
)
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair
from napari_vmunet.training.augment import AugmentConfig
from napari_vmunet.training.data import (
    Sample,
    TileDataset,
    extract_slices,
    prepare_samples,
)
from napari_vmunet.training.losses import (
    BceDiceLoss,
    CeDiceLoss,
    DiceScore,
    MaskedBceDiceLoss,
    MaskedCeDiceLoss,
    make_loss,
)
from napari_vmunet.training.split import hold_out_strip

TINY = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1])
FAST = dict(tile_size=32, batch_size=2, steps_per_epoch=2, device='cpu', **TINY)


# --------------------------------------------------------------------------
# the value convention


def test_sparse_values_become_targets_and_an_annotated_mask():
    labels = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    target, annotated = sparse_targets(labels, 3)
    np.testing.assert_array_equal(annotated, labels > 0)
    np.testing.assert_array_equal(target, [[0, 0, 1], [2, 0, 0]])
    np.testing.assert_array_equal(
        with_ignore(target, annotated), [[-1, 0, 1], [2, -1, 0]]
    )
    assert paint_values(1) == [(1, 'background'), (2, 'foreground')]
    assert paint_values(3, ['bg', 'grey']) == [(1, 'bg'), (2, 'grey'), (3, 'class 2')]


def test_one_class_sparse_values():
    target, annotated = sparse_targets(np.array([0, 1, 2, 2]), 1)
    np.testing.assert_array_equal(target, [0, 0, 1, 1])
    np.testing.assert_array_equal(annotated, [False, True, True, True])


def test_values_above_the_class_count_are_refused_by_name():
    labels = np.array([[0, 1, 2, 5], [7, 7, 2, 1]], np.uint16)
    with pytest.raises(ValueError) as err:
        sparse_targets(labels, 1, source='cells')
    text = str(err.value)
    assert text.startswith('cells: the scribbles contain the value(s) 5, 7,')
    assert '1 = background, 2 = foreground' in text
    assert 'num_classes=6' in text and 'dense mode' in text
    with pytest.raises(ValueError, match=r'value\(s\) 4\b.*1 = bg, 2 = a, 3 = b'):
        sparse_targets(np.array([4, 3, 0]), 3, class_names=['bg', 'a', 'b'])


# --------------------------------------------------------------------------
# masked losses


def _loss_inputs(classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (2, max(classes, 1), 24, 24)
    out = torch.randn(shape, generator=g)
    if classes == 1:
        out = torch.sigmoid(out)
    target = torch.randint(0, max(classes, 2), (2, 24, 24), generator=g)
    annotated = torch.rand((2, 24, 24), generator=g) < 0.1
    return out, target, annotated


@pytest.mark.parametrize('classes', [1, 3])
def test_unannotated_pixels_get_no_gradient_and_change_nothing(classes):
    out, target, annotated = _loss_inputs(classes)
    loss_fn = make_loss(classes, 'sparse')
    sparse = torch.where(annotated, target, IGNORE)
    out.requires_grad_(True)
    loss = loss_fn(out, sparse)
    loss.backward()
    grad = out.grad.abs().sum(1)  # over channels
    assert float(grad[~annotated].max()) == 0.0
    assert float(grad[annotated].min()) > 0.0
    # any other output or target at unannotated pixels: the same loss
    g = torch.Generator().manual_seed(7)
    other = out.detach().clone()
    noise = torch.rand(other.shape, generator=g)
    if classes > 1:
        noise = noise * 10 - 5
    other = torch.where(annotated[:, None], other, noise)
    assert torch.isclose(loss_fn(other, sparse), loss.detach())
    # the dense loss on the same targets does see them (they are background)
    dense = make_loss(classes)(out.detach(), torch.where(annotated, target, 0))
    assert not torch.isclose(dense, loss.detach())


@pytest.mark.parametrize(
    ('masked', 'dense', 'classes'),
    [(MaskedBceDiceLoss, BceDiceLoss, 1), (MaskedCeDiceLoss, CeDiceLoss, 3)],
)
def test_masked_losses_equal_the_dense_ones_when_everything_is_painted(
    masked, dense, classes
):
    out, target, _ = _loss_inputs(classes, seed=3)
    assert torch.isclose(masked()(out, target), dense()(out, target), rtol=1e-5)


def test_a_tile_with_no_stroke_costs_nothing():
    probs = torch.rand(1, 1, 16, 16, requires_grad=True)
    loss = MaskedBceDiceLoss()(probs, torch.full((1, 16, 16), IGNORE))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(probs.grad.abs().max()) == 0.0


def test_the_validation_dice_counts_painted_pixels_only():
    truth = np.zeros((1, 20, 20), np.int64)
    truth[0, 5:15, 5:15] = 1
    probs = torch.zeros(1, 1, 20, 20)
    probs[0, 0, 5:15, 5:10] = 1  # half the object found
    target = torch.from_numpy(truth)
    annotated = torch.zeros_like(target, dtype=torch.bool)
    annotated[0, 5:15, 6:8] = True  # a stroke inside the found half
    annotated[0, 0, :] = True  # background stroke
    score = DiceScore(['background', 'fg'], 1)
    score.update(probs, torch.where(annotated, target, IGNORE))
    assert score.result() == {'fg': pytest.approx(1.0)}
    dense = DiceScore(['background', 'fg'], 1)
    dense.update(probs, target)
    assert dense.result()['fg'] == pytest.approx(2 * 50 / 150)


# --------------------------------------------------------------------------
# data


def scribbled_blobs(n=2, size=64, seed=0, background=True):
    """Bright squares on noise, with a stroke across each square (2) and,
    optionally, a background stroke (1) along a row away from it."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        image = rng.normal(20, 5, (size, size)).astype(np.float32)
        scribbles = np.zeros((size, size), np.uint8)
        y, x = rng.integers(8, size - 24, 2)
        image[y : y + 14, x : x + 14] += 60
        scribbles[y + 7, x + 2 : x + 12] = 2
        if background:
            row = 2 if y > size // 2 else size - 3
            scribbles[row, 4 : size - 4] = 1
        pairs.append(TrainingPair(image, scribbles, name=f'blob{i}'))
    return pairs


def test_augmented_tiles_keep_the_mask_on_the_image():
    """A test image whose pixels say whether they are painted: after crops,
    flips, rot90 and rotations (image resampled nearest, as the mask), the
    IGNORE pixels of every tile are exactly the unpainted ones -- and every
    tile holds a stroke."""
    rng = np.random.default_rng(0)
    scribbles = np.zeros((96, 80), np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, 90), rng.integers(0, 60)
        scribbles[y, x : x + 20] = rng.integers(1, 3)
    target, annotated = sparse_targets(scribbles, 1)
    image = np.where(annotated, 100.0 + 50 * target, 0.0)[None].astype(np.float32)
    sample = Sample(image, target, 'test', False, annotated)
    config = AugmentConfig(
        rotate_prob=0.5, intensity_prob=0.0, image_interpolation='nearest'
    )
    data = TileDataset([sample], 32, 40, seed=1, augment=config)
    for i in range(len(data)):
        x, y = data[i]
        painted = x[0] > 0
        assert torch.equal(y != IGNORE, painted)
        assert torch.equal(y[painted], ((x[0][painted] - 100) / 50).long())
        assert painted.any()


def test_a_slice_with_any_stroke_counts_and_one_valued_slices_are_valid():
    volume = np.random.default_rng(0).random((5, 40, 40)).astype(np.float32)
    scribbles = np.zeros(volume.shape, np.uint8)
    scribbles[1, 3, 3:9] = 1  # background only
    scribbles[3, 20, 10:30] = 2  # object only
    slices = extract_slices([TrainingPair(volume, scribbles, name='v')], 'sparse')
    assert [s.source for s in slices] == ['v slice 1', 'v slice 3']
    samples = prepare_samples(
        slices, num_classes=1, input_channels=3, normalization=None, annotation='sparse'
    )
    assert [int(s.annotated.sum()) for s in samples] == [6, 20]
    assert [int(s.mask.sum()) for s in samples] == [0, 20]
    trainer = Trainer(
        TrainConfig(annotation='sparse', epochs=1, val_fraction=0, **FAST),
        [TrainingPair(volume, scribbles, name='v')],
    )
    assert trainer.fit().reason == 'completed'


def test_a_declared_background_slice_is_background_everywhere():
    volume = np.random.default_rng(0).random((4, 40, 40)).astype(np.float32)
    scribbles = np.zeros(volume.shape, np.uint8)
    scribbles[0, 10, 5:25] = 2
    pair = TrainingPair(volume, scribbles, background_slices=[2], name='v')
    (obj, empty) = prepare_samples(
        extract_slices([pair], 'sparse'),
        num_classes=1,
        input_channels=3,
        normalization=None,
        annotation='sparse',
    )
    assert empty.background and empty.annotated is None and not empty.mask.any()
    assert obj.annotated.sum() == 20


def test_a_single_sparse_image_is_validated_on_a_strip_with_its_strokes():
    image, labels = load_sample('nuclei')
    scribbles = np.zeros(labels.shape, np.uint8)
    scribbles[::16, ::4][labels[::16, ::4] > 0] = 2
    scribbles[::16, ::4][labels[::16, ::4] == 0] = 1
    pair = TrainingPair(image.data, scribbles, name='nuclei')
    config = TrainConfig(
        annotation='sparse', epochs=1, steps_per_epoch=1, tile_size=128, **TINY
    )
    trainer = Trainer(config, [pair])
    (train,), (val,) = trainer.train_samples, trainer.val_samples
    assert val.source == 'nuclei rows 410-511'
    np.testing.assert_array_equal(val.annotated, scribbles[410:] > 0)
    np.testing.assert_array_equal(train.annotated, scribbles[:410] > 0)
    np.testing.assert_array_equal(val.mask, scribbles[410:] == 2)
    # the strip is the one hold_out_strip gives
    whole = prepare_samples(
        extract_slices([pair]),
        num_classes=1,
        input_channels=3,
        normalization=None,
        annotation='sparse',
    )[0]
    assert hold_out_strip(whole, 0.2, 128)[1].source == val.source


# --------------------------------------------------------------------------
# errors


def test_a_sparse_layer_without_strokes_is_refused():
    image = np.zeros((40, 40), np.float32)
    empty = TrainingPair(image, np.zeros((40, 40), np.uint8), name='cells')
    with pytest.raises(ValueError, match='cells: the image has no scribble') as err:
        Trainer(TrainConfig(annotation='sparse', **FAST), [empty])
    assert 'paint a few strokes of background with 1' in str(err.value)
    volume = TrainingPair(np.zeros((3, 40, 40)), np.zeros((3, 40, 40), int), name='v')
    with pytest.raises(ValueError, match='v: no slice has a scribble'):
        Trainer(TrainConfig(annotation='sparse', **FAST), [volume])


def test_values_above_the_class_count_stop_the_trainer_with_advice():
    pairs = scribbled_blobs(1)
    pairs[0].labels[0, 0] = 4
    with pytest.raises(
        ValueError, match=r'blob0: the scribbles contain the value\(s\) 4'
    ):
        Trainer(TrainConfig(annotation='sparse', **FAST), pairs)


def test_no_background_strokes_gets_a_note_and_no_object_strokes_an_error():
    trainer = Trainer(
        TrainConfig(annotation='sparse', epochs=1, **FAST),
        scribbled_blobs(2, background=False),
    )
    assert any('without background strokes' in n for n in trainer.notes)
    pairs = scribbled_blobs(2)
    for p in pairs:
        p.labels[p.labels == 2] = 1
    with pytest.raises(ValueError, match='no stroke of an object'):
        Trainer(TrainConfig(annotation='sparse', val_fraction=0, **FAST), pairs)


def test_the_annotation_mode_is_checked():
    with pytest.raises(ValueError, match='annotation must be one of dense, sparse'):
        TrainConfig(annotation='scribbles')


# --------------------------------------------------------------------------
# real trainings


def test_sparse_training_writes_an_ordinary_checkpoint(tmp_path):
    out = tmp_path / 'scribbles.safetensors'
    config = TrainConfig(output=out, annotation='sparse', epochs=2, **FAST)
    trainer = Trainer(config, scribbled_blobs(3))
    finished = trainer.fit()
    assert finished.reason == 'completed' and finished.best_path == str(out)
    assert 0 <= finished.best_mean_dice <= 1
    labels = Predictor(str(out), device='cpu').predict(
        scribbled_blobs(1, seed=5)[0].image
    )
    assert labels.labels.shape == (64, 64)
    assert 'annotation=sparse' in load_checkpoint_command(out)


def load_checkpoint_command(path):
    from napari_vmunet.checkpoint import load_checkpoint

    return load_checkpoint(path).metadata['provenance']['command']


def test_cli_trains_from_scribbles(tmp_path, capsys):
    pair = scribbled_blobs(1, seed=2)[0]
    img = write_image(tmp_path / 'img.tif', pair.image.astype(np.uint16))
    lab = write_labels(tmp_path / 'scribbles.tif', pair.labels)
    out = tmp_path / 'm.safetensors'
    code = main(
        [
            'train',
            '--images',
            str(img),
            '--labels',
            str(lab),
            '--output',
            str(out),
            '--annotation',
            'sparse',
            '--dims',
            '8,16,32,64',
            '--size',
            '32',
            '--batch-size',
            '2',
            '--steps-per-epoch',
            '2',
            '--epochs',
            '1',
            '--device',
            'cpu',
            '--quiet',
        ]  # fmt: skip
    )
    assert code == 0 and out.exists()
    assert '--annotation sparse' in load_checkpoint_command(out)
    lab2 = write_labels(tmp_path / 'ids.tif', (pair.labels > 0) * 9)
    code = main(
        [
            'train',
            '--images',
            str(img),
            '--labels',
            str(lab2),
            '--output',
            str(tmp_path / 'n.safetensors'),
            '--annotation',
            'sparse',
            '--quiet',
            '--dims',
            '8,16,32,64',
            '--size',
            '32',
            '--device',
            'cpu',
        ]  # fmt: skip
    )
    assert code != 0
    assert 'the scribbles contain the value(s) 9' in capsys.readouterr().err


# --------------------------------------------------------------------------
# the fine-tune dock


@pytest.mark.gui
def test_the_dock_makes_a_scribble_layer_with_legend_and_warnings(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_vmunet._widgets._labels import BACKGROUND_STROKE, class_color
    from napari_vmunet._widgets.training import TrainingWidget
    from napari_vmunet.checkpoint import default_metadata, save_checkpoint
    from napari_vmunet.model import VMUNet

    viewer = make_napari_viewer()
    image = viewer.add_image(
        np.random.default_rng(0).random((3, 48, 64)).astype(np.float32),
        name='cells',
        scale=(2.0, 0.5, 0.5),
        translate=(1.0, 0.0, 4.0),
    )
    model = VMUNet(num_classes=3, dims=(8, 16, 32, 64))
    meta = default_metadata(
        model.config, class_names=['background', 'nucleus', 'membrane'], tile_size=32
    )
    start = save_checkpoint(model, tmp_path / 'start.safetensors', meta)
    dock = TrainingWidget(viewer)
    viewer.window.add_dock_widget(dock)
    dock.image_layer.set_value(image)
    dock.set_start_checkpoint(start)
    assert not dock.sparse and dock.legend.isHidden()

    layer = dock.new_scribble_layer()
    assert layer.data.shape == (3, 48, 64) and not layer.data.any()
    np.testing.assert_array_equal(layer.scale, image.scale)
    np.testing.assert_array_equal(layer.translate, image.translate)
    assert viewer.layers.selection.active is layer
    assert layer.mode == 'paint' and layer.selected_label == 2
    assert dock.labels_layer.value() is layer and dock.sparse
    # a colour and a name per paint value, from the starting model
    colors = meta['classes']['colors']
    for value, color in [(1, BACKGROUND_STROKE), (2, class_color(1, colors))]:
        np.testing.assert_allclose(
            layer.colormap.map(np.array([value]))[0],
            np.asarray(_rgba(color)),
            atol=1e-6,
        )
    assert list(layer.features['class']) == [
        'not annotated',
        'background',
        'nucleus',
        'membrane',
    ]
    legend = dock.legend.text()
    assert not dock.legend.isHidden()
    for text in ('1 = background', '2 = nucleus', '3 = membrane', '0 = not annotated'):
        assert text in legend
    assert dock.check_scribbles() == '"cells scribbles" has no strokes yet.'

    # painting an object only: the warning asks for background strokes
    layer.brush_size = 3
    layer.paint((1, 20, 20), 2)
    qtbot.waitUntil(lambda: 'no background strokes' in dock.scribble_warning.text())
    assert not dock.scribble_warning.isHidden()
    layer.paint((1, 40, 50), 1)
    qtbot.waitUntil(lambda: dock.scribble_warning.isHidden())

    config = dock.config()
    assert config.annotation == 'sparse'
    (pair,) = dock.training_pairs()
    assert pair.labels is layer.data
    slices = extract_slices([pair], 'sparse')
    assert [s.source for s in slices] == ['cells slice 1']
    dock.shutdown()


def _rgba(hex_color):
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(hex_color)[0]
