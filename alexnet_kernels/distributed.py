"""Data-parallel training under ``torchrun``: the process group, devices, per-rank seeds and
the few collectives the training script needs.

A process started by ``torchrun`` (or any launcher that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables) is one of
``WORLD_SIZE`` ranks: it joins a process group (``nccl`` on CUDA, ``gloo`` on
the CPU), uses the GPU of its local rank, and its model is wrapped in
``DistributedDataParallel``. A process started otherwise is a world of one
(:data:`SINGLE`) and every function here does nothing or returns its input, so
a plain ``python -m alexnet_kernels.train`` runs as it did before.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexnet_kernels.data import TrainingSetupError

# The variables torchrun sets in every process it starts.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
# Last word of the seed sequence of a rank's stream: keeps it apart from the
# (seed, epoch, index) sequences of data.sample_seed.
_RANK_STREAM_TAG = 0x52414E4B


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run.

    ``parallel`` is True when a launcher started it (even a world of one, which
    then still joins a process group and trains through DDP).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    parallel: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, logs and writes the checkpoint."""
        return self.rank == 0


SINGLE = World()


def from_environment(environ: Mapping[str, str] = os.environ) -> World:
    """The world torchrun describes in `environ`, else :data:`SINGLE`."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        rank, size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
        local_size = int(environ.get("LOCAL_WORLD_SIZE", size))
    except ValueError as error:
        raise TrainingSetupError(f"a launcher variable is not an integer: {error}; "
                                 f"expected integers in {', '.join(LAUNCHER_VARIABLES)}") from error
    if not (0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise TrainingSetupError(
            f"inconsistent launcher variables RANK={rank} WORLD_SIZE={size} "
            f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_size}")
    return World(rank, size, local_rank, local_size, parallel=True)


def device_for(world: World, name: str | None) -> torch.device:
    """The device of this rank for ``--device name``.

    Alone: `name`, default cuda when available, else cpu. Under a launcher:
    ``cuda`` means the GPU of the local rank (an explicit index is refused: the
    local rank chooses it), and there must be a GPU for every local process.
    """
    if not world.parallel:
        if name is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(name)
    requested = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if requested.type != "cuda":
        return requested
    if requested.index is not None:
        raise TrainingSetupError(
            f"--device {name}: under torchrun each process uses the GPU of its local rank; "
            "pass --device cuda (or leave it out)")
    visible = torch.cuda.device_count()
    if world.local_size > visible:
        raise TrainingSetupError(
            f"{world.local_size} processes on this machine (--nproc_per_node) but "
            f"{visible} GPU{'s' if visible != 1 else ''} visible; start at most {visible} "
            "per machine, or train on the CPU with --device cpu")
    return torch.device("cuda", world.local_rank)


def start(world: World, device: torch.device, timeout_s: float) -> None:
    """Joins the process group (nccl on CUDA, gloo otherwise) with collectives that fail
    after `timeout_s` seconds instead of waiting forever for a rank that died."""
    if not world.parallel:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)


def stop(world: World) -> None:
    """Leaves the process group `start` joined."""
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random stream (dropout masks): a function of (seed, rank),
    `seed` itself for rank 0, 32 bits (what ``np.random.seed`` takes) for the others."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, 0, rank, _RANK_STREAM_TAG]).generate_state(
        1, np.uint32)[0])


def sum_over_ranks(world: World, values: Sequence[float], device: torch.device
                   ) -> list[float]:
    """Element-wise sums of `values` over every rank (float64; exact for counts < 2**53)."""
    if not world.parallel:
        return list(values)
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """Whether `flag` is set on at least one rank (the same answer on every rank)."""
    return sum_over_ranks(world, [float(flag)], device)[0] > 0


def gather(world: World, value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not world.parallel:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (which broadcasts rank 0's weights and buffers);
    `model` itself alone."""
    if not world.parallel:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def check_sync_bn(world: World, device: torch.device) -> None:
    """PyTorch's SyncBatchNorm runs on GPUs only (its CPU forward raises)."""
    if world.parallel and world.size > 1 and device.type != "cuda":
        raise TrainingSetupError(
            f"--sync-bn: SyncBatchNorm needs GPUs, this run trains on {device.type}; "
            "leave --sync-bn out (each process then normalises over its own batch)")


def backend_name() -> str:
    """The process group's backend (``nccl``, ``gloo``)."""
    return str(dist.get_backend())
