"""Per-layer summaries of a model: ``torchinfo`` when asked for, else a table of our own.

``python -m alexnet_kernels.summary --variant alexnet|paper|paper-grouped|cifar|bn
[--torchinfo]`` prints the table for one of :mod:`alexnet_kernels.models`'
networks (torchinfo is the optional extra ``alexnet-kernels[summary]``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from alexnet_kernels import models

# variant -> (constructor, square input side)
VARIANTS = {
    "alexnet": (lambda: models.alexnet(), 224),
    "paper": (lambda: models.alexnet_paper(groups=1), 227),
    "paper-grouped": (lambda: models.alexnet_paper(groups=2), 227),
    "cifar": (lambda: models.alexnet_cifar(), 32),
    "bn": (lambda: models.alexnet_bn(3), 224),
}


@dataclass
class LayerRow:
    """One leaf module's line: its output shape, own parameters and multiply-adds."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    mult_adds: int


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of a convolution ((N, Cout, H, W) output) or Linear layer, 0 for
    other layers; a bias add counts as one, as torchinfo counts it."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] \
            * module.kernel_size[1]
    elif isinstance(module, nn.Linear):
        per_output = module.in_features
    else:
        return 0
    return output.numel() * (per_output + (module.bias is not None))


def layer_rows(model: nn.Module, input_size: tuple[int, ...]) -> list[LayerRow]:
    """Runs `model` once (eval mode) on zeros of `input_size` (N, C, H, W); one row per leaf."""
    rows: list[LayerRow] = []
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(mod: nn.Module, _inputs, output, name: str = name) -> None:
            out = output[0] if isinstance(output, tuple) else output
            rows.append(LayerRow(name, type(mod).__name__, tuple(out.shape),
                                 sum(p.numel() for p in mod.parameters(recurse=False)),
                                 _mult_adds(mod, out)))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        with torch.no_grad():
            model(torch.zeros(input_size, dtype=parameter.dtype if parameter is not None
                              else torch.float32, device=parameter.device
                              if parameter is not None else "cpu"))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def summary(model: nn.Module, input_size: tuple[int, ...], *, use_torchinfo: bool = False):
    """Prints a per-layer table for an `input_size` (N, C, H, W) input and returns its rows.

    With ``use_torchinfo`` the table is torchinfo's (an ImportError says how to
    install it when it is missing) and its result is returned.
    """
    if use_torchinfo:
        try:
            import torchinfo
        except ImportError as error:
            raise ImportError("summary(use_torchinfo=True) needs torchinfo: "
                              "pip install torchinfo") from error
        return torchinfo.summary(model, input_size=input_size)

    from rich.console import Console
    from rich.table import Table

    rows = layer_rows(model, input_size)
    table = Table(title=f"{type(model).__name__}, input {list(input_size)}")
    for column in ("layer", "type", "output shape", "params", "mult-adds"):
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for row in rows:
        table.add_row(row.name, row.kind, str(list(row.output_shape)), f"{row.params:,}",
                      f"{row.mult_adds:,}" if row.mult_adds else "")
    total_params = sum(p.numel() for p in model.parameters())
    table.add_section()
    table.add_row("total", "", "", f"{total_params:,}", f"{sum(r.mult_adds for r in rows):,}")
    Console().print(table)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(VARIANTS), default="alexnet")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--torchinfo", action="store_true", help="torchinfo's table")
    args = parser.parse_args(argv)
    build, side = VARIANTS[args.variant]
    result = summary(build(), (args.batch, 3, side, side), use_torchinfo=args.torchinfo)
    if args.torchinfo:
        print(result)


if __name__ == "__main__":
    main()
