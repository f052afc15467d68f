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
from conftest import require_native_cpu
from train_worker import without_dropout

from alexnet_kernels import train as training
from alexnet_kernels.data import TrainingSetupError
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


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native_cpu()


def test_two_processes_train_as_one_with_the_global_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) 2 processes x batch 4 reach, after 2 SGD steps without dropout, the weights,
    momentum and metrics of 1 process x batch 8: DDP averages the ranks' gradients, and
    rank r's shard of each global batch is every 2nd of its images from the r-th on."""
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
    status, output, seconds = torchrun(
        ["--send", "SIGKILL", "--after-step", "1"], script_options(tmp_path / "run", 1, 16))
    assert status != 0, output
    assert "exitcode  : -9" in output, output
    assert seconds < 60, seconds
    assert not (tmp_path / "run" / training.CHECKPOINT_NAME).exists()
