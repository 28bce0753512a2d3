"""Checkpoint metadata read by name (``Metadata``): the typed view of the
document reads every file as the dict reader does and writes back the very
same keys and values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors

from napari_vmunet.checkpoint import (
    Metadata,
    Normalization,
    default_metadata,
    load_checkpoint,
    save_checkpoint,
    summary,
    validate_metadata,
)
from napari_vmunet.cli.info import format_info
from napari_vmunet.rules.input_stats import InputStats, summarize_inputs
from napari_vmunet.zoo import builtin_checkpoints
from tiny_models import tiny_model

V0_1 = Path(__file__).parent / 'data' / 'v0.1' / 'v0.1-run.safetensors'

VARIANTS = {
    'defaults': {},
    'window with a range': {
        'normalization': 'window:-125,275:0,1',
        'tile_size': 224,
        'class_names': ['background', 'organ'],
        'class_colors': [None, '#00FF00'],
    },
    'percentile': {'normalization': 'percentile:2,98', 'epochs': 4},
    'none': {'normalization': 'none', 'notes': 'raw values', 'best_val_dice': 0.5},
    'provenance': {
        'initialized_from': 'checkpoint:a.safetensors',
        'training_data': '3 training and 1 validation slice(s) from x',
        'command': 'napari-vmunet train ...',
    },
}


def stored_document(path: Path) -> dict:
    """The JSON exactly as it is in the file."""
    with safetensors.safe_open(str(path), 'pt') as f:
        return json.loads(f.metadata()['napari_vmunet'])


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_a_file_of_this_version_round_trips_to_the_same_dict(tmp_path, variant):
    model = tiny_model(1)
    meta = default_metadata(model.config, **VARIANTS[variant])
    path = save_checkpoint(model, tmp_path / 'm.safetensors', meta)
    ckpt = load_checkpoint(path)
    stored = stored_document(path)
    typed = Metadata.from_dict(stored)
    assert typed.to_dict() == stored == ckpt.metadata
    assert ckpt.meta == typed
    # attribute reads give what the nested reads gave
    assert typed.input.tile == stored['input']['tile_size'][0]
    assert typed.input.normalization.to_dict() == stored['input']['normalization']
    assert typed.classes.names == ckpt.class_names
    assert typed.provenance.notes == stored['provenance']['notes']
    assert typed.architecture.to_dict() == ckpt.config


def test_the_built_in_models_and_a_v0_1_file_round_trip():
    models = builtin_checkpoints()
    assert models, 'the package ships demo models'
    for path in [*models.values(), V0_1]:
        ckpt = load_checkpoint(path)
        stored = stored_document(path)
        assert Metadata.from_dict(stored).to_dict() == stored == ckpt.metadata, path


def test_normalisation_keeps_its_minimal_stored_form():
    window = Normalization.from_dict({'mode': 'window', 'low': -125.0, 'high': 275.0})
    assert window.range is None
    assert window.to_dict() == {'mode': 'window', 'low': -125.0, 'high': 275.0}
    assert Normalization.from_dict({'mode': 'minmax'}).to_dict() == {'mode': 'minmax'}
    ranged = {'mode': 'minmax', 'range': [0.0, 1.0]}
    assert Normalization.from_dict(ranged).to_dict() == ranged


def test_a_bad_document_is_refused_by_field_name():
    meta = default_metadata(tiny_model(1).config)
    meta['input']['tile_size'] = [100, 100]
    with pytest.raises(ValueError, match='input.tile_size'):
        Metadata.from_dict(meta)
    with pytest.raises(ValueError, match='metadata must be a JSON object'):
        Metadata.from_dict(['not', 'a', 'dict'])
    assert validate_metadata(
        Metadata.from_dict(default_metadata(tiny_model(2).config)).to_dict()
    )


def test_info_reads_the_typed_metadata(tmp_path):
    model = tiny_model(1)
    meta = default_metadata(model.config, **VARIANTS['window with a range'])
    path = save_checkpoint(model, tmp_path / 'm.safetensors', meta)
    text = format_info(summary(load_checkpoint(path)))
    assert 'window [-125, 275]' in text and 'Tile size:' in text and '224 x 224' in text
    assert '1 organ (#00ff00)' in text
    none = default_metadata(model.config, normalization='none')
    path = save_checkpoint(model, tmp_path / 'n.safetensors', none)
    text = format_info(summary(load_checkpoint(path)))
    assert 'none (the values as they are)' in text


def test_training_input_statistics_round_trip():
    """The built-in models' summaries (written by training) and a fresh one
    read by name and write back the same dict; a damaged one reads as None."""
    rng = np.random.default_rng(0)
    fresh = summarize_inputs(
        [rng.uniform(0, 255, (1, 32, 32))], kind='2d', channels=1, value_range=(0, 255)
    )
    stored = [load_checkpoint(p).training_stats for p in builtin_checkpoints().values()]
    assert all(stats is not None for stats in stored)
    for raw in [fresh, *stored]:
        typed = InputStats.from_dict(raw)
        assert typed.to_dict() == raw
        assert typed.kind == raw['kind'] and typed.range == tuple(raw['range'])
    demo = load_checkpoint(builtin_checkpoints()['demo-nuclei'])
    assert demo.input_stats == InputStats.from_dict(demo.training_stats)
    assert InputStats.from_dict({'version': 1, 'histogram': 'nan'}) is None
    assert InputStats.from_dict(None) is None
