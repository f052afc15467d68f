"""Inference speed of the deployment paths next to eager, on this machine's CPU.

    python benchmarks/deploy_speed.py [--variant torchvision|paper|cifar] [--threads 2]
                                      [--batches 1 32] [--rounds 7]

The model (eval mode, random weights) is exported once to ONNX
(``alexnet_kernels.export_onnx``) and compiled once with AOTInductor
(``alexnet_kernels.export.aoti_compile``), both with a dynamic batch; then eager
(``backend="auto"`` with autotuning off: the native kernels), ONNX Runtime (CPU
provider) and the AOTInductor package are timed round-robin on the same input,
``--threads`` threads each, and the medians are printed as a Markdown table with
ratios to eager (above 1: faster than eager).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("ALEXNET_KERNELS_AUTOTUNE", "0")

import torch

from alexnet_kernels import env_report, models
from alexnet_kernels._timing import median, rotated, time_ms
from alexnet_kernels.export import aoti_compile, export_onnx

VARIANTS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, int, int]]] = {
    "torchvision": (lambda: models.alexnet(1000), (3, 224, 224)),
    "paper": (lambda: models.alexnet_paper(1000), (3, 227, 227)),
    "cifar": (lambda: models.alexnet_cifar(10), (3, 32, 32)),
}
CPU = torch.device("cpu")


def runners(model: torch.nn.Module, image: tuple[int, int, int], folder: Path,
            threads: int) -> dict[str, Callable[[torch.Tensor], object]]:
    """name -> call(x) for eager, ONNX Runtime and AOTInductor."""
    import onnxruntime as ort

    example = torch.randn(2, *image)
    onnx_path = export_onnx(model, example, folder / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    package = torch._inductor.aoti_load_package(
        str(aoti_compile(model, example, folder / "model.pt2")))
    return {"eager": model, "onnxruntime": lambda x: session.run(None, {name: x.numpy()}),
            "aotinductor": package}


def measure(calls: dict[str, Callable[[torch.Tensor], object]], x: torch.Tensor,
            rounds: int) -> dict[str, float]:
    """Median milliseconds per call of each runner on x, timed round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():  # warm-up
            call(x)
        for index in range(rounds):
            for name in rotated(list(calls), index):
                samples[name].append(time_ms(lambda c=calls[name]: c(x), CPU))
    return {name: median(times) for name, times in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="torchvision")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    build, image = VARIANTS[args.variant]
    torch.manual_seed(0)
    model = build().eval()
    with tempfile.TemporaryDirectory(prefix="ak-deploy-speed-") as folder:
        calls = runners(model, image, Path(folder), args.threads)
        print(f"{args.variant} AlexNet, fp32, {args.threads} threads, "
              f"{env_report.cpu_name()}, torch {torch.__version__}\n")
        print("| batch | eager ms | ONNX Runtime ms (x eager) | AOTInductor ms (x eager) |")
        print("|---|---|---|---|")
        for batch in args.batches:
            ms = measure(calls, torch.randn(batch, *image), args.rounds)
            eager = ms["eager"]
            print(f"| {batch} | {eager:.1f} | {ms['onnxruntime']:.1f} "
                  f"({eager / ms['onnxruntime']:.2f}x) | {ms['aotinductor']:.1f} "
                  f"({eager / ms['aotinductor']:.2f}x) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
