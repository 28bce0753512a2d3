"""Distributed data-parallel training under ``torchrun``.

    torchrun --nproc_per_node=N -m napari_vmunet train ...      # one machine
    torchrun --nnodes=M --node_rank=R --rdzv_endpoint=HOST:PORT \\
             --nproc_per_node=N -m napari_vmunet train ...      # M machines

:class:`DistributedTrainer` is the ordinary :class:`Trainer` with its hooks
overridden -- the loop, checkpoints, events and resume are the same code:

* the model is wrapped in ``DistributedDataParallel`` (gradients are
  averaged; checkpoints and validation use the bare model);
* each rank trains on its own share of every epoch's tiles: step ``s`` of
  rank ``r`` draws tiles ``(s * world + r) * batch ...`` -- tiles are a pure
  function of ``(seed, epoch, index)``, so ranks need no shared RNG and a
  resumed run continues with the same tiles; an epoch has
  ``ceil(steps / world)`` steps, so the global batch is ``world x batch``;
* losses are all-reduced, every rank validates (MONAI's metrics gather over
  the group), a stop request on any rank stops all of them at the same step,
  and only rank 0 writes checkpoints.

gloo is used on CPUs, NCCL on CUDA (each process on ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import gc
import math
import os
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .._generators import StopRequest, as_stop_callable
from .trainer import Trainer


def launched_by_torchrun() -> bool:
    """True in a process started by ``torchrun`` with more than one rank."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and 'RANK' in os.environ


def init_distributed(device: str = 'auto') -> tuple[int, int, str]:
    """Join the process group torchrun prepared; returns ``(rank, world,
    device)`` where ``device`` is this rank's (``cuda:LOCAL_RANK`` on GPUs)."""
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    use_cuda = torch.cuda.is_available() and device in ('auto', 'cuda')
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f'cuda:{local_rank}'
    elif device == 'auto':
        device = 'cpu'
    if not dist.is_initialized():
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    return dist.get_rank(), dist.get_world_size(), device


def weights_checksum(model: nn.Module) -> float:
    """A float64 sum over all parameters: equal on every rank iff in sync."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum().cpu() for p in model.parameters()))


class DistributedTrainer(Trainer):
    """:class:`Trainer` for one rank of a ``torchrun`` job (see module doc)."""

    def __init__(self, config, data, val_data=None):
        if not dist.is_initialized():
            raise RuntimeError(
                'DistributedTrainer needs a process group: launch with torchrun '
                '(or call init_distributed first)'
            )
        if config.time_limit:
            raise ValueError(
                'a time limit is not supported with torchrun (ranks would stop at '
                'different steps); give --epochs instead'
            )
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.is_main_process = self.rank == 0
        super().__init__(config, data, val_data)
        # every rank does ceil(steps / world) steps of its own tiles
        self.steps_per_epoch = max(1, math.ceil(self.steps_per_epoch / self.world))
        self.dataset.length = self.steps_per_epoch * self.batch_size * self.world

    def wrap_model(self, model: nn.Module) -> nn.Module:
        # SS2D's depthwise conv runs channels-last, so its weight gradient
        # has other strides than DDP's bucket; DDP copies it, correctly
        warnings.filterwarnings('ignore', message='Grad strides do not match')
        ids = [self.device.index] if self.device.type == 'cuda' else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def epoch_indices(self, epoch: int, start_step: int) -> Sequence[int]:
        b, w, r = self.batch_size, self.world, self.rank
        return [
            (s * w + r) * b + i
            for s in range(start_step, self.steps_per_epoch)
            for i in range(b)
        ]

    def reduce_mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def validate(self, should_stop: Callable[[], bool]):
        # Every rank validates the same slices: MONAI's metrics all-gather
        # over the process group by themselves, so all ranks must take part
        # (duplicates leave the mean unchanged), and a stop request waits for
        # the next step -- ranks stopping mid-validation would deadlock.
        return super().validate(lambda: False)

    def run(self, stop: StopRequest = None):
        local = as_stop_callable(stop)

        def any_rank_stops() -> bool:
            flag = torch.tensor([1.0 if local() else 0.0], device=self._comm_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())

        return super().run(any_rank_stops)

    def close(self) -> None:
        """Leave the process group cleanly, on every rank together.

        All ranks first meet at a barrier, so none tears down connections
        another is still using. The DDP wrapper holds the group, so it is
        dropped before the group is destroyed: a gloo group that is still
        referenced is freed only at interpreter exit, and freeing it there
        can abort the process ("terminate called without an active
        exception", seen on rank 1 of a resumed run in CI).
        """
        if not dist.is_initialized():
            return
        dist.barrier()
        self.net = self.model
        gc.collect()
        dist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        """NCCL needs CUDA tensors; gloo takes CPU ones."""
        return self.device if dist.get_backend() == 'nccl' else torch.device('cpu')
