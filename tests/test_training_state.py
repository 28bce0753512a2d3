"""The resume state and provenance a run writes: typed in memory, the same
dicts on disk as before (files written by this and earlier versions)."""

from __future__ import annotations

import numpy as np
import torch

from napari_vmunet.checkpoint import load_checkpoint, save_checkpoint
from napari_vmunet.training import TrainConfig, Trainer, TrainingPair, last_path
from napari_vmunet.training.state import BestModel, TrainingState
from napari_vmunet.training.validation import Validation
from tiny_models import TINY_SHALLOW

FAST = dict(tile_size=32, batch_size=2, steps_per_epoch=2, device='cpu', **TINY_SHALLOW)


def pairs(n=2, size=64):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = rng.normal(20, 5, (size, size)).astype(np.float32)
        labels = np.zeros((size, size), np.uint8)
        labels[10:24, 20:34] = 1
        image[10:24, 20:34] += 60
        out.append(TrainingPair(image, labels, name=f'blob{i}'))
    return out


def same(a, b) -> bool:
    """Deep equality that compares tensors by value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_a_written_state_reads_and_writes_back_to_the_same_dict(tmp_path):
    out = tmp_path / 'm.safetensors'
    finished = Trainer(TrainConfig(output=out, epochs=2, seed=3, **FAST), pairs()).fit()
    assert finished.reason == 'completed'
    raw = load_checkpoint(last_path(out)).training_state
    state = TrainingState.from_dict(raw)
    assert (state.epoch, state.total_epochs, state.seed) == (2, 2, 3)
    assert [h['epoch'] for h in state.history] == [1, 2]
    assert state.best.epoch == finished.best_epoch
    assert state.recipe == TrainConfig(output=out, epochs=2, seed=3, **FAST).recipe()
    assert same(state.to_dict(), raw)  # same keys, same order, same values


def test_a_state_of_an_older_version_resumes_with_the_defaults(tmp_path):
    """A state with only the keys every version wrote: no recipe, seed,
    total, history or best (the config's values are used, as before)."""
    out = tmp_path / 'm.safetensors'
    config = TrainConfig(output=out, epochs=1, seed=5, **FAST)
    Trainer(config, pairs()).fit()
    last = load_checkpoint(last_path(out))
    full = last.training_state
    old = {k: full[k] for k in ('epoch', 'optimizer', 'scheduler', 'torch_rng')}
    save_checkpoint(last, last_path(out), training_state=old)
    state = TrainingState.from_dict(load_checkpoint(last_path(out)).training_state)
    assert (state.step, state.loss_n, state.history, state.recipe) == (0, 0, [], None)
    assert state.best == BestModel() and state.seed is None and not state.freeze_encoder
    trainer = Trainer(config.replace(resume=True, epochs=2), pairs())
    assert (trainer.epoch, trainer.seed, trainer.best_epoch) == (1, 5, None)
    assert trainer.fit().epochs_done == 2


def test_the_best_epoch_is_the_highest_dice_then_lowest_loss():
    best = BestModel()
    dice = Validation(loss=0.5, dice={'a': 0.6}, mean_dice=0.6, complete=True)
    assert best.consider(1, 0.9, dice, may_improve=True)
    worse = Validation(loss=0.1, dice={'a': 0.5}, mean_dice=0.5, complete=True)
    assert not best.consider(2, 0.1, worse, may_improve=True)
    assert (best.epoch, best.mean_dice, best.val_dice) == (1, 0.6, {'a': 0.6})
    better = Validation(loss=0.4, dice={'a': 0.7}, mean_dice=0.7, complete=True)
    assert not best.consider(3, 0.1, better, may_improve=False)  # cut short
    assert best.consider(4, 0.1, better, may_improve=True) and best.epoch == 4
    # without validation, the training loss decides
    plain = BestModel()
    assert plain.consider(1, 0.5, None, True) and not plain.consider(2, 0.6, None, True)
    assert plain.consider(3, 0.4, None, True) and plain.mean_dice is None
    assert BestModel.from_dict(best.to_dict()) == best
