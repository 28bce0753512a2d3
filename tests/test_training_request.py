"""The fine-tune dock's request without Qt or a training run: what its
widgets say (FineTuneChoices) becomes the run's TrainConfig (issue #15)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from napari_vmunet._widgets._training_request import (
    SCRATCH_SMALL,
    FineTuneChoices,
    default_output,
    init_kind,
    train_config,
)
from napari_vmunet.training import PRESETS, default_preset


def choices(tmp_path, **changes) -> FineTuneChoices:
    base = FineTuneChoices(
        output=str(tmp_path / 'cells'),
        preset='finetune',
        start=str(tmp_path / 'start.safetensors'),
        epochs=7,
        lr=2e-4,
        batch_size=3,
        val_fraction=0.25,
        training_data='cells + cells labels',
    )
    return dataclasses.replace(base, **changes)


def test_the_dock_settings_become_the_config(tmp_path):
    config = train_config(choices(tmp_path, class_names=' bg, nucleus ,'))
    assert config.output == tmp_path / 'cells.safetensors'  # the suffix added
    assert config.init == str(tmp_path / 'start.safetensors')
    assert (config.epochs, config.lr, config.batch_size) == (7, 2e-4, 3)
    assert config.val_fraction == 0.25
    assert config.class_names == ['bg', 'nucleus']
    assert config.num_classes is None and config.tile_size is None  # 0: auto
    assert config.training_data == 'cells + cells labels'
    assert config.command == 'napari dock'
    assert not config.resume and train_config(choices(tmp_path), resume=True).resume
    # every setting the dock shows counts as the user's (a resume with other
    # values is refused); the automatic ones do not
    assert {'preset', 'epochs', 'lr', 'batch_size', 'class_names'} <= config.explicit
    assert not {'num_classes', 'tile_size'} & config.explicit
    sized = train_config(choices(tmp_path, num_classes=2, tile_size=128))
    assert (sized.num_classes, sized.tile_size) == (2, 128)
    assert {'num_classes', 'tile_size'} <= sized.explicit


def test_the_starting_points(tmp_path):
    small = train_config(choices(tmp_path, start='scratch-small', preset='scratch'))
    assert small.init is None and small.dims == list(SCRATCH_SMALL)
    assert 'dims' in small.explicit
    assert train_config(choices(tmp_path, start='scratch')).dims is None
    mine = str(tmp_path / 'dock.safetensors')
    assert (
        train_config(
            choices(tmp_path, start='inference', inference_checkpoint=mine)
        ).init
        == mine
    )
    # the preset each starting point asks for
    assert default_preset(init_kind('scratch-small')) == 'scratch'
    assert default_preset(init_kind('vmamba?')) == default_preset('vmamba:')
    assert default_preset(init_kind(mine)) == 'finetune'
    assert set(PRESETS) >= {'scratch', 'finetune', 'full'}


@pytest.mark.parametrize(
    ('changes', 'words'),
    [
        ({'start': 'vmamba?'}, 'VMamba-S weights file'),
        ({'start': 'inference'}, 'inference dock has no model'),
        ({'output': '  '}, 'Save to'),
        ({'tile_size': 100}, '32'),
        ({'annotation': 'dots'}, 'annotation'),
    ],
)
def test_bad_choices_say_what_to_fix(tmp_path, changes, words):
    with pytest.raises(ValueError, match=words):
        train_config(choices(tmp_path, **changes))


def test_default_output_is_a_new_file_named_after_the_image():
    path = default_output('my cells: 1/2')
    assert path.suffix == '.safetensors' and path.parent.name == 'models'
    assert path.name.startswith('my_cells_1_2-')
    assert default_output('///').name.startswith('model-')


def test_the_translation_needs_no_qt(tmp_path):
    """The dock's request is built without Qt (a notebook or a test can)."""
    code = (
        'import sys\n'
        'from napari_vmunet._widgets._training_request import '
        'FineTuneChoices, train_config\n'
        f'config = train_config(FineTuneChoices(output={str(tmp_path / "m")!r}, '
        "preset='scratch', start='scratch-small'))\n"
        'print(config.dims, [m for m in ("qtpy", "napari") if m in sys.modules])\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.split('\n')[0] == f'{list(SCRATCH_SMALL)} []', out.stderr
