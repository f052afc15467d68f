"""The training script under torchrun: 2 CPU processes on gloo (tests/train_worker.py is
each rank) train as one process with their global batch, draw different dropout masks
reproducibly, resume bit-identically after an interrupt, and fail fast when a rank dies.

Every run is the cifar network at 32x32 on the bundled digits, a few SGD steps of 4
images per process, one thread per process (CI has 2 cores)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import require_native_cpu
from train_worker import without_dropout

from alexnet_kernels import distributed
from alexnet_kernels import train as training
from alexnet_kernels.data import EpochBatchSampler, TrainingSetupError
from alexnet_kernels.reference import TOLERANCES

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed with gloo")

WORKER = Path(__file__).with_name("train_worker.py")
PROCESSES = 2
BATCH = 4  # per process
# A torchrun that has not finished by then hangs (each run takes ~10-20 s).
RUN_TIMEOUT_S = 120


def script_options(out: Path, epochs: int, train_limit: int, progress: bool = False,
                   **extra: object) -> list[str]:
    """Training script options: cifar on the digits, SGD, 4 images per process, 5 validation
    images (an incomplete last global batch: 3 for rank 0, 2 for rank 1)."""
    options = ["--model", "cifar", "--optimizer", "sgd", "--lr", "0.01", "--epochs", str(epochs),
               "--batch-size", str(BATCH), "--train-limit", str(train_limit), "--val-limit", "5",
               "--workers", "0", "--dist-timeout", "30", "--out", str(out)]
    if not progress:
        options.append("--no-progress")
    for name, value in extra.items():
        options += [f"--{name.replace('_', '-')}", str(value)]
    return options


def torchrun(worker_options: list[str], options: list[str]) -> tuple[int, str, float]:
    """Runs 2 ranks of the worker under torchrun; (exit status, output, seconds)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={PROCESSES}", "--monitor-interval=0.1", str(WORKER),
               *worker_options, "--", *options]
    start = time.perf_counter()
    # Its own session, so that a hanging run can be killed with all its ranks.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {RUN_TIMEOUT_S} s:\n{output[-4000:]}")
    return process.returncode, output, time.perf_counter() - start


def checkpoint(out: Path) -> dict:
    return torch.load(out / training.CHECKPOINT_NAME, weights_only=True)


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "epoch_s")}
            for row in history]


def test_two_processes_train_as_one_with_the_global_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) 2 processes x batch 4 reach, after 2 SGD steps without dropout, the weights,
    momentum and metrics of 1 process x batch 8: DDP averages the ranks' gradients, and
    rank r's shard of each global batch is every 2nd of its images from the r-th on."""
    require_native_cpu()
    out = tmp_path / "ddp"
    status, output, _ = torchrun(["--no-dropout"], script_options(out, 1, 16, progress=True))
    assert status == 0, output
    parallel = checkpoint(out)
    assert parallel["world_size"] == PROCESSES and parallel["step"] == 2

    monkeypatch.setitem(training.VARIANTS, "cifar", without_dropout(training.VARIANTS["cifar"]))
    config = training.parse_args(script_options(tmp_path / "one", 1, 16))
    # 8 images per step: the 2 x 4 of the parallel run.
    training.train(dataclasses.replace(config, batch_size=PROCESSES * BATCH))
    single = checkpoint(tmp_path / "one")
    assert single["world_size"] == 1 and "rank_rng" not in single
    rtol, atol = TOLERANCES[torch.float32]
    for name, tensor in single["model"].items():
        torch.testing.assert_close(parallel["model"][name], tensor, rtol=rtol, atol=atol,
                                   msg=name)
    for index, state in single["optimizer"]["state"].items():
        torch.testing.assert_close(parallel["optimizer"]["state"][index]["momentum_buffer"],
                                   state["momentum_buffer"], rtol=rtol, atol=atol)
    (row,) = parallel["history"]
    (expected_row,) = single["history"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert row[key] == pytest.approx(expected_row[key], rel=rtol, abs=atol), key
    assert "global batch 8" in output and "data parallel: 2 processes (gloo)" in output


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 epochs of 3 steps on 2 processes with dropout, masks recorded, checkpointed."""
    require_native_cpu()
    out = tmp_path_factory.mktemp("uninterrupted")
    status, output, _ = torchrun(["--record-masks"], script_options(out, 2, 24))
    assert status == 0, output
    return out


def masks(out: Path, rank: int) -> list[torch.Tensor]:
    return torch.load(out / f"masks-rank{rank}.pt", weights_only=True)


def test_interrupt_then_resume_is_bit_identical(tmp_path: Path, uninterrupted: Path) -> None:
    """(b, c) SIGTERM to torchrun after step 1 (rank 1 sends it, then waits until torchrun
    has forwarded it to rank 1): every rank stops after step 2, in the middle of epoch 1 (3
    steps; the ranks' flags are summed in step 2's all-reduce), rank 0 saves once; --resume
    under torchrun then ends with the uninterrupted
    run's weights, optimizer state and log bit for bit, and both parts together draw its
    dropout masks, which differ between the ranks."""
    out = tmp_path / "run"
    worker = ["--record-masks", "--send", "SIGTERM", "--to", "launcher", "--after-step", "1"]
    status, output, _ = torchrun(worker, script_options(out, 2, 24))
    assert status != 0, output  # torchrun itself exits with the signal's failure
    stopped = checkpoint(out)
    assert (stopped["step"], stopped["epoch"], stopped["batch_in_epoch"]) == (2, 0, 2), output
    assert stopped["world_size"] == PROCESSES and len(stopped["rank_rng"]) == PROCESSES
    first = [masks(out, rank) for rank in range(PROCESSES)]

    status, output, _ = torchrun(["--record-masks"], script_options(
        out, 2, 24, resume=out / training.CHECKPOINT_NAME))
    assert status == 0, output
    resumed, expected = checkpoint(out), checkpoint(uninterrupted)
    assert resumed["step"] == 6
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for index, state in expected["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][index]["momentum_buffer"],
                           state["momentum_buffer"]), index
    assert untimed(resumed["history"]) == untimed(expected["history"])

    # 2 Dropout layers per training step: 4 calls before the stop, 8 after it, 12 in all.
    for rank in range(PROCESSES):
        reference = masks(uninterrupted, rank)
        assert len(reference) == 12 and len(first[rank]) == 4
        again = first[rank] + masks(out, rank)
        assert all(torch.equal(a, b) for a, b in zip(again, reference, strict=True)), rank
    for mask0, mask1 in zip(masks(uninterrupted, 0), masks(uninterrupted, 1), strict=True):
        assert not torch.equal(mask0, mask1)
        assert 0.4 < mask0.float().mean() < 0.6  # p = 0.5


def test_ctrl_c_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    """SIGINT to rank 1 alone (torchrun does not see it) after step 1: rank 1's flag reaches
    rank 0 in step 2's all-reduce, both stop after step 2 and exit 0; rank 0 has saved
    both ranks' RNG states, which differ (rank 1 draws from its own stream)."""
    require_native_cpu()
    out = tmp_path / "run"
    status, output, _ = torchrun(["--send", "SIGINT", "--to", "self", "--after-step", "1"],
                                 script_options(out, 2, 24))
    assert status == 0, output
    stopped = checkpoint(out)
    assert (stopped["step"], stopped["epoch"], stopped["batch_in_epoch"]) == (2, 0, 2), output
    rank0, rank1 = stopped["rank_rng"]
    assert torch.equal(stopped["rng"]["torch"], rank0["torch"])
    assert not torch.equal(rank0["torch"], rank1["torch"])


def test_resume_with_another_number_of_processes_is_refused(uninterrupted: Path) -> None:
    """A 2-process checkpoint resumed by a plain (1-process) run: refused, naming both."""
    config = training.parse_args(script_options(
        uninterrupted / "again", 3, 24, resume=uninterrupted / training.CHECKPOINT_NAME))
    with pytest.raises(TrainingSetupError,
                       match="trained by 2 processes, this run has 1; resume with 2"):
        training.train(config)


def test_a_killed_rank_fails_the_run_fast(tmp_path: Path) -> None:
    """(d) Rank 1 killed (SIGKILL) after step 1: torchrun exits non-zero within seconds (the
    other rank's collective fails, torchrun stops it), well before --dist-timeout 30."""
    require_native_cpu()
    status, output, seconds = torchrun(
        ["--send", "SIGKILL", "--after-step", "1"], script_options(tmp_path / "run", 1, 16))
    assert status != 0, output
    assert "exitcode  : -9" in output, output
    assert seconds < 60, seconds
    assert not (tmp_path / "run" / training.CHECKPOINT_NAME).exists()


# --- without processes: shards, the launcher's environment, devices -----------------------


@pytest.mark.parametrize(("size", "batch", "drop_last"), [(11, 2, True), (5, 2, False)])
def test_ranks_shard_every_global_batch(size: int, batch: int, drop_last: bool) -> None:
    """Rank r's batch k is every 2nd key of one process's batch k of 2 x batch, from the
    r-th on: together the ranks see each of its keys once. 5 keys, batches of 2 x 2
    without drop_last: [0..3] and [4]; rank 1 has no key in the second, so no batch."""
    single = EpochBatchSampler(size, PROCESSES * batch, seed=3, shuffle=True,
                               drop_last=drop_last)
    ranks = [EpochBatchSampler(size, batch, seed=3, shuffle=True, drop_last=drop_last,
                               rank=rank, world_size=PROCESSES) for rank in range(PROCESSES)]
    for sampler in (single, *ranks):
        sampler.set_epoch(2)
    expected = list(single)
    shards = [list(sampler) for sampler in ranks]
    assert [len(shard) for shard in shards] == [len(sampler) for sampler in ranks]
    assert ranks[0].batches_per_epoch() == ranks[1].batches_per_epoch() == len(expected)
    for k, keys in enumerate(expected):
        for rank in range(PROCESSES):
            assert (shards[rank][k] if k < len(shards[rank]) else []) == keys[rank::PROCESSES]
    if not drop_last:
        assert [len(shard) for shard in shards] == [2, 1]
    for sampler in ranks:  # a resumed epoch skips the batches already trained
        sampler.set_epoch(2, start_batch=1)
    assert [list(sampler) for sampler in ranks] == [shard[1:] for shard in shards]


def test_world_from_the_launcher_environment() -> None:
    assert distributed.from_environment({}) is distributed.SINGLE
    world = distributed.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                          "LOCAL_WORLD_SIZE": "2"})
    assert world == distributed.World(rank=3, size=4, local_rank=1, local_size=2,
                                      parallel=True)
    assert not world.is_main
    with pytest.raises(TrainingSetupError, match="inconsistent launcher variables RANK=4"):
        distributed.from_environment({"RANK": "4", "WORLD_SIZE": "4"})


def test_devices_per_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun, cuda is the local rank's GPU; more local processes than GPUs, an
    explicit GPU index and --sync-bn on the CPU are refused with what to do instead."""
    world = distributed.World(rank=1, size=2, local_rank=1, local_size=2, parallel=True)
    assert distributed.device_for(world, "cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainingSetupError, match=r"2 processes on this machine "
                       r"\(--nproc_per_node\) but 1 GPU visible; start at most 1"):
        distributed.device_for(world, None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.device_for(world, None) == torch.device("cuda", 1)
    with pytest.raises(TrainingSetupError, match="--device cuda:0: under torchrun each"):
        distributed.device_for(world, "cuda:0")
    with pytest.raises(TrainingSetupError, match="--sync-bn: SyncBatchNorm needs GPUs"):
        distributed.check_sync_bn(world, torch.device("cpu"))


def test_rank_streams() -> None:
    """Rank 0 keeps the seed (its stream is a plain run's); the others get distinct seeds
    that are a function of (seed, rank) and fit np.random.seed's 32 bits."""
    seeds = [distributed.rank_seed(7, rank) for rank in range(8)]
    assert seeds[0] == 7 and len(set(seeds)) == 8
    assert seeds == [distributed.rank_seed(7, rank) for rank in range(8)]
    assert all(0 <= seed < 2**32 for seed in seeds)
    assert distributed.rank_seed(8, 1) != seeds[1]
