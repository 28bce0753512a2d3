"""The Predictor: layouts, tiling, normalisation, progress, cancel, OOM."""

from __future__ import annotations

import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import torch
from torch import nn

from napari_vmunet.inference import (
    Cancelled,
    ChannelMismatchError,
    Predictor,
    normalize,
    resolve_device,
)
from napari_vmunet.model import VMUNet
from napari_vmunet.rules.intensity import UnusableImageError
from napari_vmunet.rules.normalization import finite, map_channels
from tiny_models import TINY


def wrap(model, tile=64, **input_meta):
    """A checkpoint-like object around an in-memory model."""
    meta = {'input': {'tile_size': [tile, tile], **input_meta}}
    return types.SimpleNamespace(model=model, metadata=meta)


@pytest.fixture(scope='module')
def tiny3():
    torch.manual_seed(0)
    return VMUNet(num_classes=3, **TINY).eval()


@pytest.fixture(scope='module')
def tiny1():
    torch.manual_seed(1)
    return VMUNet(num_classes=1, **TINY).eval()


class PixelModel(nn.Module):
    """A 1x1-conv 'segmenter' with the VMUNet interface: its output at a
    pixel depends only on that pixel, so a tiled prediction must equal the
    whole-image prediction exactly -- a direct test of the blending."""

    num_classes = 2
    input_channels = 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 2, 1)
        self.calls = []

    def set_scan_backend(self, backend):
        pass

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.conv(x / 255.0)


def direct(model, image_chw):
    with torch.no_grad():
        out = model(torch.from_numpy(image_chw)[None].float())
    return out[0]


def test_single_tile_prediction_is_the_model_forward(tiny3):
    image = np.random.default_rng(0).normal(100, 20, (64, 64)).astype(np.float32)
    result = Predictor(wrap(tiny3), device='cpu').predict(
        image, return_probabilities=True
    )
    x = normalize(image[None])  # min-max to [0, 255], the original's input
    want = torch.softmax(direct(tiny3, x), 0).numpy()
    assert result.labels.shape == (64, 64)
    assert result.probabilities.shape == (3, 64, 64)
    assert result.probabilities.dtype == np.float16
    np.testing.assert_allclose(result.probabilities, want, atol=1e-3)
    np.testing.assert_array_equal(result.labels, want.argmax(0))


def test_one_class_model_thresholds_probabilities(tiny1):
    image = np.random.default_rng(1).random((64, 64))
    pred = Predictor(wrap(tiny1), device='cpu', threshold=0.5)
    result = pred.predict(image, return_probabilities=True)
    assert result.probabilities.shape == (64, 64)
    np.testing.assert_array_equal(result.labels, result.probabilities >= 0.5)
    assert result.class_names == ['background', 'class 1']


@pytest.mark.parametrize('shape', [(200, 300), (64, 129), (97, 64)])
def test_tiles_blend_without_seams(shape):
    model = PixelModel()
    rng = np.random.default_rng(3)
    image = rng.random((*shape, 3)).astype(np.float32) * 255
    image[0, 0] = (0, 0, 0)  # pin min/max so normalisation is the identity
    image[0, 1] = (255, 255, 255)
    pred = Predictor(
        wrap(model, tile=64), device='cpu', tile_size=64, overlap=0.5, batch_size=3
    )
    result = pred.predict(image, return_probabilities=True)
    want = torch.softmax(direct(model, image.transpose(2, 0, 1)), 0).numpy()
    np.testing.assert_allclose(result.probabilities, want, atol=2e-3)
    assert max(model.calls) <= 3  # the tile batch is respected


def test_volume_is_predicted_slice_by_slice_along_any_axis(tiny3):
    vol = np.random.default_rng(4).random((4, 40, 50)).astype(np.float32)
    pred = Predictor(wrap(tiny3), device='cpu')
    for axis in (0, 1, 2):
        result = pred.predict(vol, slice_axis=axis, return_probabilities=True)
        assert result.labels.shape == vol.shape
        assert result.probabilities.shape == (3, *vol.shape)
        plane = np.take(vol, 1, axis=axis)
        single = pred.predict(plane, return_probabilities=True)
        np.testing.assert_array_equal(
            np.take(result.labels, 1, axis=axis), single.labels
        )


def test_volume_with_channels(tiny3):
    vol = np.random.default_rng(5).random((3, 2, 32, 40))  # (Z, C, Y, X)
    pred = Predictor(wrap(tiny3), device='cpu')
    result = pred.predict(vol, channel_axis=1, channel_map=[0, 1, 1])
    assert result.labels.shape == (3, 32, 40)
    with pytest.raises(ChannelMismatchError, match='channel map'):
        pred.predict(vol, channel_axis=1)


def test_rgb_rgba_grey_and_dtypes(tiny3):
    pred = Predictor(wrap(tiny3), device='cpu')
    rng = np.random.default_rng(6)
    rgb = (rng.random((50, 60, 3)) * 255).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((50, 60, 1), 255, np.uint8)], axis=-1)
    a = pred.predict(rgb).labels
    b = pred.predict(rgba).labels  # alpha is dropped
    np.testing.assert_array_equal(a, b)
    assert pred.predict(rgb[..., 0].astype(np.uint16)).labels.shape == (50, 60)
    assert pred.predict(rgb[..., 0] > 128).labels.shape == (50, 60)
    assert pred.predict(rgb[..., 0].astype(np.int32) - 1000).labels.shape == (50, 60)


def noise(shape):
    """A real-valued test image (a constant one is refused as unusable)."""
    return np.random.default_rng(0).random(shape)


def test_nan_inf_constant_tiny_and_empty_images(tiny3):
    pred = Predictor(wrap(tiny3), device='cpu')
    image = np.random.default_rng(7).random((40, 40)).astype(np.float32)
    image[5:9] = np.nan
    image[0, 0] = np.inf
    image[0, 1] = -np.inf
    with pytest.warns(UserWarning, match='NaN or infinite'):
        result = pred.predict(image, return_probabilities=True)
    assert np.isfinite(result.probabilities.astype(np.float32)).all()
    assert any('NaN or infinite' in w for w in result.warnings)  # in the result
    tiny = np.random.default_rng(1).random((3, 5))
    assert pred.predict(tiny).labels.shape == tiny.shape
    # plainly unusable images are refused before the run, saying why
    with pytest.raises(UnusableImageError, match='constant .every pixel is 7'):
        pred.predict(np.full((40, 40), 7.0))
    with pytest.raises(UnusableImageError, match='no finite value'):
        pred.predict(np.full((40, 40), np.nan))
    with pytest.raises(ValueError, match='empty'):
        pred.predict(np.zeros((0, 10)))
    with pytest.raises(ValueError, match='2-D image or a 3-D volume'):
        pred.predict(np.zeros(10))


def test_normalization_modes():
    x = np.array([[0.0, 50.0], [100.0, 200.0]])[None]
    np.testing.assert_allclose(normalize(x), [[[0, 63.75], [127.5, 255]]])
    window = normalize(x, {'mode': 'window', 'low': 0, 'high': 100, 'range': [0, 1]})
    np.testing.assert_allclose(window, [[[0, 0.5], [1, 1]]])
    assert normalize(x, {'mode': 'none'}).tolist() == x.tolist()
    pct = normalize(np.arange(1000.0)[None, None], {'mode': 'percentile'})
    assert pct.min() == 0 and pct.max() == 255
    with pytest.raises(ValueError, match='unknown normalization'):
        normalize(x, {'mode': 'zscore'})
    assert np.isfinite(finite(np.array([np.nan, np.inf, 1.0]))).all()


def test_channel_mapping_errors_say_what_to_do():
    img = noise((2, 4, 4))
    with pytest.raises(ChannelMismatchError, match='takes 3 input channel.*has 2'):
        map_channels(img, 3)
    with pytest.raises(ChannelMismatchError, match='does not have'):
        map_channels(img, 3, channel_map=[0, 1, 2])
    assert map_channels(img, 3, channel_map=[1]).shape == (3, 4, 4)


def test_progress_and_generator_protocol(tiny3):
    pred = Predictor(wrap(tiny3), device='cpu', batch_size=2, overlap=0.5, tile_size=64)
    gen = pred.iter_predict(np.random.default_rng(8).random((2, 100, 100)))
    steps = []
    with pytest.raises(StopIteration) as stop:
        while True:
            steps.append(next(gen))
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    assert steps[-1].done == steps[-1].total == 2 * 9  # 2 slices x 3x3 tiles
    assert steps[-1].slices_done == 2
    assert stop.value.value.labels.shape == (2, 100, 100)


def test_cancel_takes_effect_within_one_batch():
    model = PixelModel()
    pred = Predictor(wrap(model, tile=64), device='cpu', tile_size=64, batch_size=1)
    event = threading.Event()
    seen = []

    def on_progress(step):
        seen.append(step)
        if step.done == 3:
            event.set()

    with pytest.raises(Cancelled):
        pred.predict(noise((400, 400, 3)), progress=on_progress, should_cancel=event)
    assert len(model.calls) == 3  # no forward pass after the request


class FlakyOOM(PixelModel):
    """Raises CUDA-style out-of-memory for batches larger than 1."""

    def forward(self, x):
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory (simulated)')
        return super().forward(x)


def test_out_of_memory_halves_the_tile_batch_and_still_finishes():
    model = FlakyOOM()
    image = np.random.default_rng(9).random((150, 150, 3)) * 255
    pred = Predictor(wrap(model, tile=64), device='cpu', tile_size=64, batch_size=4)
    with pytest.warns(RuntimeWarning, match='out of memory'):
        result = pred.predict(image, return_probabilities=True)
    assert any('4 -> 2' in w for w in result.warnings)
    assert any('2 -> 1' in w for w in result.warnings)
    reference = Predictor(
        wrap(PixelModel(), tile=64), device='cpu', tile_size=64, batch_size=1
    )
    want = reference.predict(image, return_probabilities=True)
    np.testing.assert_array_equal(result.probabilities, want.probabilities)


def test_out_of_memory_at_batch_one_on_cpu_explains():
    class AlwaysOOM(PixelModel):
        def forward(self, x):
            raise RuntimeError('DefaultCPUAllocator: not enough memory: out of memory')

    pred = Predictor(
        wrap(AlwaysOOM(), tile=64), device='cpu', tile_size=64, batch_size=1
    )
    with pytest.raises(MemoryError, match='smaller tile size'):
        pred.predict(noise((64, 64)))


def test_dask_volume_is_read_one_slice_at_a_time(tiny3):
    da = pytest.importorskip('dask.array')
    rng = np.random.default_rng(10)
    vol = rng.random((6, 48, 48)).astype(np.float32)
    reads = []

    def load(block_id):
        if isinstance(block_id, tuple):  # dask also calls once to infer meta
            reads.append(block_id)
            return vol[block_id[0] : block_id[0] + 1]
        return vol[:1]

    lazy = da.map_blocks(
        lambda block_id=None: load(block_id),
        chunks=((1,) * 6, (48,), (48,)),
        dtype=np.float32,
    )
    pred = Predictor(wrap(tiny3), device='cpu')
    result = pred.predict(lazy)
    np.testing.assert_array_equal(result.labels, pred.predict(vol).labels)
    assert len(reads) == 6  # each slice read once, never the whole volume at once


def test_devices():
    assert resolve_device('auto').type in ('cpu', 'cuda', 'mps')
    assert resolve_device('cpu') == torch.device('cpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='no CUDA GPU'):
            resolve_device('cuda')
    with pytest.raises(ValueError, match='unknown device|unsupported device'):
        resolve_device('tpu')


def test_bad_parameters_are_refused(tiny3):
    with pytest.raises(ValueError, match='multiple of 32'):
        Predictor(wrap(tiny3), device='cpu', tile_size=100)
    with pytest.raises(ValueError, match='multiple of 32'):
        Predictor(wrap(tiny3), device='cpu', tile_size=-32)
    with pytest.raises(ValueError, match='overlap'):
        Predictor(wrap(tiny3), device='cpu', overlap=1.0)
    pred = Predictor(wrap(tiny3), device='cpu')
    with pytest.raises(ValueError, match='no slice axis'):
        pred.predict(noise((10, 10)), slice_axis=0)


def test_whole_image_mode_is_one_forward_on_the_padded_image(tiny3):
    image = np.random.default_rng(11).random((100, 150)).astype(np.float32)
    pred = Predictor(wrap(tiny3), device='cpu', tile_size=0)
    steps = []
    result = pred.predict(image, return_probabilities=True, progress=steps.append)
    assert steps[-1].total == 1
    x = normalize(image[None])
    padded = np.pad(x, ((0, 0), (0, 28), (0, 10)), mode='symmetric')  # 128 x 160
    want = torch.softmax(direct(tiny3, padded), 0).numpy()[:, :100, :150]
    np.testing.assert_allclose(result.probabilities, want, atol=1e-3)


def test_cpu_threads_leave_a_core_free_and_are_restored(tiny3):
    from napari_vmunet import _threads

    cpus = _threads.available_cpus()
    assert _threads.default_threads() == max(1, cpus - 1)
    with _threads.reserve(cpus):  # a training keeps every core busy
        assert _threads.default_threads() == 1
    assert _threads.reserved() == 0
    before = torch.get_num_threads()
    seen = []
    pred = Predictor(wrap(tiny3), device='cpu', threads=1)
    pred.predict(
        noise((64, 64)), progress=lambda s: seen.append(torch.get_num_threads())
    )
    assert set(seen) == {1}
    assert torch.get_num_threads() == before
    with pytest.raises(Cancelled):
        pred.predict(noise((200, 200)), should_cancel=lambda: bool(seen))
    assert torch.get_num_threads() == before


def test_the_window_is_chosen_per_image_and_device_not_by_the_training_tile(tiny3):
    """Issue #16, item 6: a model trained on 64² crops predicts a slice that
    fits in one window in one window, and large images in device-sized
    tiles; the result equals an explicit whole-image run."""
    from napari_vmunet.rules.tiling import AUTO_TILE, auto_tile

    assert auto_tile(233, 197, 'cpu') == 0 and auto_tile(512, 512, 'cpu') == 256
    assert auto_tile(600, 600, 'cpu') == AUTO_TILE['cpu'] == 256
    assert auto_tile(2000, 2000, 'cuda') == 0
    assert auto_tile(3000, 3000, 'cuda') == 1024
    pred = Predictor(wrap(tiny3, tile=64), device='cpu')
    image = np.random.default_rng(3).random((2, 120, 100)).astype(np.float32)
    steps = list_steps(pred, image)
    assert steps[-1].total == 2  # one window per slice, not 2 x 6 tiles of 64²
    whole = Predictor(wrap(tiny3, tile=64), device='cpu', tile_size=0).predict(image)
    np.testing.assert_array_equal(pred.predict(image).labels, whole.labels)
    big = np.random.default_rng(4).random((600, 600)).astype(np.float32)
    assert list_steps(pred, big)[-1].total == 9  # 3 x 3 tiles of 256²


def test_a_slice_in_one_window_is_the_models_output_and_needs_no_monai():
    """One window covers the slice: nothing to blend, so the output passes
    through unchanged (weights of one), and MONAI's window helpers (2 s of
    imports at the start of every CLI run) are not imported.  Two windows
    are blended with MONAI's Gaussian, strictly below one at the border."""
    from napari_vmunet.rules.tiled_prediction import SliceWindows

    one = SliceWindows.of(233, 197, None, 'cpu')
    assert one.windows == [(slice(0, 256), slice(0, 224))]
    assert bool((one.weights() == 1).all())
    two = SliceWindows.of(300, 200, 256, 'cpu')
    assert len(two.windows) == 2 and float(two.weights().min()) < 1
    code = (
        'import sys, numpy as np\n'
        'from napari_vmunet.inference import Predictor\n'
        "p = Predictor('demo-nuclei', device='cpu')\n"
        'p.predict(np.random.default_rng(0).random((100, 120)))\n'
        "print('monai' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == 'False', out.stderr


class CountingModel(nn.Module):
    """A model wrapper that counts the windows it is given."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.windows = 0
        self.num_classes = model.num_classes
        self.input_channels = model.input_channels

    def set_scan_backend(self, backend):
        pass

    def forward(self, x):
        self.windows += x.shape[0]
        return self.model(x)


def test_blank_windows_are_computed_once_and_reused_exactly(tiny3, monkeypatch):
    """Constant windows (the air around the brain sample's head: 34 of its
    189 slices are blank) give one output, computed once per run; the run
    without that cache gives the same probabilities window by window."""
    from napari_vmunet.io import load_sample
    from napari_vmunet.rules.tiled_prediction import ConstantWindows

    brain = np.asarray(load_sample('brain')[0].data)
    blank = [z for z in range(brain.shape[0]) if np.ptp(brain[z]) == 0]
    volume = brain[[blank[0], 90, blank[1], blank[-1], 100]].astype(np.float32)
    counting = CountingModel(tiny3)
    pred = Predictor(wrap(counting, tile=64), device='cpu', tile_size=0, batch_size=2)
    cached = pred.predict(volume, return_probabilities=True)
    assert counting.windows == 3  # two images, one blank
    counting.windows = 0
    monkeypatch.setattr(ConstantWindows, 'key', staticmethod(lambda window: None))
    plain = pred.predict(volume, return_probabilities=True)
    assert counting.windows == 5
    np.testing.assert_allclose(cached.probabilities, plain.probabilities, atol=1e-3)
    np.testing.assert_array_equal(cached.labels, plain.labels)
    for z in (2, 3):
        np.testing.assert_array_equal(
            cached.probabilities[:, 0], cached.probabilities[:, z]
        )


def test_constant_windows_never_mistakes_an_image_for_a_blank():
    """Only windows with one value per channel are blanks; NaN never is."""
    from napari_vmunet.rules.tiled_prediction import ConstantWindows

    key = ConstantWindows.key
    assert key(torch.zeros(2, 8, 8)) == ((2, 8, 8), (0.0, 0.0))
    two_values = torch.zeros(2, 8, 8)
    two_values[1] = 3.0
    assert key(two_values) == ((2, 8, 8), (0.0, 3.0))
    almost = torch.zeros(1, 8, 8)
    almost[0, 7, 7] = 1e-6
    assert key(almost) is None
    assert key(torch.full((1, 8, 8), float('nan'))) is None


def list_steps(pred, image):
    gen = pred.iter_predict(image)
    steps = []
    with pytest.raises(StopIteration):
        while True:
            steps.append(next(gen))
    return steps


def test_progress_says_how_long_is_left(tiny3):
    """Issue #16, item 7: a time estimate from the pace so far."""
    from napari_vmunet._text import format_duration

    pred = Predictor(wrap(tiny3), device='cpu', tile_size=64, batch_size=1)
    steps = list_steps(pred, np.random.default_rng(5).random((3, 64, 64)))
    assert steps[1].seconds_left is None  # no pace yet after the first batch
    middle = steps[2]
    assert middle.seconds_left is not None and middle.seconds_left > 0
    assert middle.describe().startswith('slice 2/3, tile 2/3, about ')
    assert steps[-1].describe() == 'slice 3/3, tile 3/3'
    assert [format_duration(s) for s in (4, 200, 3900)] == [
        '4 s',
        '3 min',
        '1 h 05 min',
    ]
