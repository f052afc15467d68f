"""One rank of a data-parallel test run of the training script, started by torchrun:

    torchrun ... tests/train_worker.py [worker options] -- [training script options]

It runs ``alexnet_kernels.train`` as ``python -m alexnet_kernels.train`` would, with
what the tests need to see inside it:

--no-dropout      the variant is built with every Dropout at p = 0
--record-masks    <out>/masks-rank<r>.pt: the mask of every training-mode dropout call
--send NAME --sender R --after-step S --to self|launcher
                  rank R sends signal NAME to itself or to torchrun after step S
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from alexnet_kernels import nn as ak_nn
from alexnet_kernels import train as training
from alexnet_kernels.ops.dropout import dropout
from alexnet_kernels.train import TrainState


def without_dropout(variant: training.Variant) -> training.Variant:
    """`variant` with every Dropout of the built network at p = 0 (the identity)."""
    def build(num_classes: int, backend: str, image_size: int) -> nn.Module:
        model = variant.build(num_classes, backend, image_size)
        for module in model.modules():
            if isinstance(module, ak_nn.Dropout):
                module.p = 0.0
        return model
    return dataclasses.replace(variant, build=build)


class MaskRecorder:
    """Records the mask of every training-mode call of the network's Dropout modules: the
    op applied to ones, drawn from the CPU generator state the call itself started from."""

    def __init__(self) -> None:
        self.masks: list[torch.Tensor] = []
        self._states: dict[int, torch.Tensor] = {}

    def attach(self, model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, ak_nn.Dropout):
                module.register_forward_pre_hook(self._before)
                module.register_forward_hook(self._after)

    def _before(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._states[id(module)] = torch.get_rng_state()

    def _after(self, module: ak_nn.Dropout, inputs: tuple[torch.Tensor, ...],
               output: torch.Tensor) -> None:
        if not module.training or module.p == 0:
            return
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._states[id(module)])
            ones = torch.ones_like(inputs[0])
            self.masks.append(dropout(ones, module.p, backend=module.backend) != 0)

    def recording(self, variant: training.Variant) -> training.Variant:
        """`variant` whose built network is recorded."""
        def build(num_classes: int, backend: str, image_size: int) -> nn.Module:
            model = variant.build(num_classes, backend, image_size)
            self.attach(model)
            return model
        return dataclasses.replace(variant, build=build)


def wait_for_forwarded(signum: signal.Signals, timeout_s: float = 30.0) -> None:
    """Waits until the training script's handler of `signum` (an InterruptRequest) has seen
    the signal."""
    request = getattr(signal.getsignal(signum), "__self__", None)
    deadline = time.monotonic() + timeout_s
    while not getattr(request, "requested", True) and time.monotonic() < deadline:
        time.sleep(0.01)


def signal_after(name: str, rank: int, step: int, target: str
                 ) -> Callable[[TrainState], None]:
    """An on_step callback: rank `rank` sends signal `name` to itself or to torchrun (its
    parent) after optimizer step `step`. A signal to torchrun reaches every rank when
    torchrun forwards it; the sender waits until it has before its next step."""
    signum = signal.Signals[name]

    def on_step(state: TrainState) -> None:
        if state.step != step or int(os.environ["RANK"]) != rank:
            return
        os.kill(os.getpid() if target == "self" else os.getppid(), signum)
        if target == "launcher":
            wait_for_forwarded(signum)
    return on_step


def main(argv: list[str]) -> int:
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-dropout", action="store_true")
    parser.add_argument("--record-masks", action="store_true")
    parser.add_argument("--send")
    parser.add_argument("--sender", type=int, default=1)
    parser.add_argument("--after-step", type=int, default=1)
    parser.add_argument("--to", choices=["self", "launcher"], default="self")
    options = parser.parse_args(argv[:split])
    config = training.parse_args(argv[split + 1:])
    variant = training.VARIANTS[config.model]
    if options.no_dropout:
        variant = without_dropout(variant)
    recorder = MaskRecorder()
    if options.record_masks:
        variant = recorder.recording(variant)
    training.VARIANTS[config.model] = variant
    on_step = (signal_after(options.send, options.sender, options.after_step, options.to)
               if options.send else None)
    training.train(config, on_step=on_step)
    if options.record_masks:
        torch.save(recorder.masks, Path(config.out) / f"masks-rank{os.environ['RANK']}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
