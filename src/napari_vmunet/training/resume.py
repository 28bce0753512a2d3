"""Resuming a run: the same recipe, or a clear refusal -- never a silent mix.

A run's recipe (:meth:`TrainConfig.recipe`) is saved in its resumable
checkpoint.  On resume:

* settings the caller did not give come from the saved recipe, so a run
  started with ``--preset full`` resumes as ``full`` even when ``--resume``
  is all that is typed;
* settings the caller gave that differ from the saved recipe are refused,
  naming each one: a resume that silently used another learning rate,
  normalisation or starting model would train a different model than the
  one the user thinks is resuming;
* the number of epochs may change.  With the cosine schedule tied to the
  run's length (the default), the learning rate then goes on from where it
  is down to ``eta_min`` over the new remaining epochs, instead of climbing
  back up (the closed-form cosine rises again past ``T_max``); a note says so.

Checkpoints written before recipes were saved resume with the caller's
settings, as they always did.

:func:`open_resume` reads the run's ``last`` checkpoint and its
:class:`~.state.TrainingState` (or refuses with a clear error) before the
trainer builds anything from them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..checkpoint import Checkpoint, load_checkpoint
from .config import RECIPE_FIELDS, TrainConfig, last_path
from .initialize import InitialModel, set_drop_path
from .state import REQUIRED, TrainingState

#: recipe fields a resume may change deliberately
CHANGEABLE = ('epochs',)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ':'.join(
            [str(value.get('mode'))]
            + [
                ','.join(f'{v:g}' for v in vals)
                for vals in (
                    [value[k] for k in ('low', 'high') if k in value],
                    value.get('range', []),
                )
                if vals
            ]
        )
    return repr(value)


def resumed_config(
    config: TrainConfig, recipe: dict | None
) -> tuple[TrainConfig, dict[str, Any]]:
    """``config`` made to continue the run whose saved recipe is ``recipe``,
    and the settings taken over from it (those that differed from
    ``config``'s defaults).

    Raises ``ValueError`` naming every setting that differs from the run
    being resumed.  ``recipe`` None (an older checkpoint): ``config`` as is.
    """
    if not recipe:
        return config, {}
    wanted = config.recipe()
    changed = [
        key
        for key in RECIPE_FIELDS
        if key in recipe
        and key in config.explicit
        and key not in CHANGEABLE
        and not _same(wanted[key], recipe[key])
    ]
    if changed:
        listed = '; '.join(
            f'{key} {_shown(wanted[key])} (the run has {_shown(recipe[key])})'
            for key in changed
        )
        raise ValueError(
            f'this resume changes the recipe of the run it continues: {listed}. '
            'Resume with the same settings (or leave them out), or start a new '
            'run (another output, or --overwrite)'
        )
    adopted = {
        key: (tuple(value) if key == 'betas' else value)
        for key, value in recipe.items()
        if key in RECIPE_FIELDS
        and key not in config.explicit
        and key not in ('t_max',)
        and not _same(getattr(config, key), value)
    }
    if recipe.get('t_max') is not None and not _same(config.t_max, recipe['t_max']):
        adopted['t_max'] = recipe['t_max']
    if not adopted:
        return config, {}
    explicit = config.explicit | ({'t_max'} if 't_max' in adopted else set())
    resumed = dataclasses.replace(config, **adopted, explicit=frozenset(explicit))
    return resumed, adopted


def schedule_follows_epochs(recipe: dict | None, config: TrainConfig) -> bool:
    """Whether the cosine's ``T_max`` is the run's length (not a fixed
    period such as the original recipe's 50)."""
    if recipe and 't_max' in recipe:
        return recipe['t_max'] is None
    return 't_max' not in config.explicit


@dataclass(frozen=True)
class ResumePoint:
    """The ``last`` checkpoint of the run being resumed, and its state."""

    checkpoint: Checkpoint
    state: TrainingState

    def initial_model(self, config: TrainConfig) -> InitialModel:
        """The model to go on training: the checkpoint's, as the run had it."""
        ckpt = self.checkpoint
        if config.drop_path_rate is not None:
            # not stored with the weights: a resume sets it as the run did
            set_drop_path(ckpt.model, config.drop_path_rate)
        return InitialModel(
            ckpt.model.train(),
            ckpt.meta.provenance.initialized_from or f'checkpoint:{ckpt.path}',
            ckpt.metadata,
            [f'resumed from {ckpt.path.name}'],
        )

    def check(self, config: TrainConfig) -> None:
        """Refuse a resume that changes what cannot change mid-run."""
        if self.state.freeze_encoder != config.freeze_encoder:
            was = 'with' if self.state.freeze_encoder else 'without'
            raise ValueError(
                f'the run being resumed was trained {was} freeze_encoder; '
                'resume it with the same setting'
            )


def open_resume(config: TrainConfig) -> ResumePoint:
    """Load ``last`` for ``config.resume``, or say why it cannot resume."""
    if config.output is None:
        raise ValueError('resume needs the output checkpoint of the earlier run')
    path = last_path(config.output)
    if not path.exists():
        raise ValueError(
            f'nothing to resume: {path} does not exist; train without resume '
            'first (it writes that file after every epoch)'
        )
    ckpt = load_checkpoint(path)
    raw = ckpt.training_state
    if not raw or any(key not in raw for key in REQUIRED):
        raise ValueError(
            f'{path} has no training state to resume from (its '
            f'{path.stem}.train_state.pt is missing); fine-tune from it '
            'with init instead'
        )
    want = config.num_classes
    if want and want != ckpt.config['num_classes']:
        raise ValueError(
            f'the run being resumed has {ckpt.config["num_classes"]} '
            f'class(es), not {want}'
        )
    return ResumePoint(ckpt, TrainingState.from_dict(raw))
