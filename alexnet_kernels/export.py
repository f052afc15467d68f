"""Deploying a model built on the library's ops: torch.export, AOTInductor and ONNX.

The rule for every path: the exported graph holds the library's opaque ops
(``alexnet_kernels::conv2d_relu``, ``::lrn``, ``::max_pool2d_values`` /
``::max_pool2d``), never a decomposition into PyTorch's. Whatever backend the
model's modules were built with, they are traced with ``backend="native"``
(:func:`native_ops`): ``"torch"`` would trace PyTorch's own ops, and the Triton
ops (``torch.library.triton_op``) are traced through by the exporters. The
exported program then runs the compiled kernels of the device it runs on.

Programs are traced for inference: the model must be in eval mode (dropout is
then no op at all in the graph) and tracing runs without autograd, so on the CPU
max-pooling is the values-only op.

* :func:`export`: ``torch.export.export`` with a dynamic batch dimension;
* :func:`aoti_compile`: that program compiled by AOTInductor into a ``.pt2``
  package, loaded with ``torch._inductor.aoti_load_package`` in a process that
  has loaded the library (``import alexnet_kernels``);
* :func:`export_onnx`: an ONNX model of standard operators only (``Conv`` +
  ``Relu``, ``LRN``, ``MaxPool``), see ``alexnet_kernels.onnx_translations``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.utils._pytree as pytree

from alexnet_kernels import _extension, backends
from alexnet_kernels.nn import Conv2dReLU, Dropout, LocalResponseNorm, MaxPool2d

# Modules whose ``backend`` attribute chooses the implementation of one of our ops.
_OP_MODULES = (Conv2dReLU, Dropout, LocalResponseNorm, MaxPool2d)
# Largest batch an exported program accepts unless told otherwise.
DEFAULT_MAX_BATCH = 4096


@contextlib.contextmanager
def native_ops(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block every op module of ``model`` (and ``backend="auto"`` calls of the
    functional ops) runs the compiled kernels, so a trace records our opaque ops; the
    modules' backends are restored on exit. RuntimeError when the library is not built."""
    _extension.assert_loaded()
    modules = [m for m in model.modules() if isinstance(m, _OP_MODULES)]
    previous = [m.backend for m in modules]
    try:
        for module in modules:
            module.backend = "native"
        with backends.use_backend("native"):
            yield model
    finally:
        for module, backend in zip(modules, previous, strict=True):
            module.backend = backend


def _check_eval(model: torch.nn.Module) -> None:
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"export: the model must be in eval mode (call model.eval() first); in training "
            f"mode: {', '.join(training[:3])}{', ...' if len(training) > 3 else ''}")


def batch_dynamic_shapes(example_inputs: tuple, max_batch: int = DEFAULT_MAX_BATCH) -> tuple:
    """``dynamic_shapes`` for ``example_inputs`` (the forward's positional arguments:
    tensors, or lists / tuples of them) making dimension 0 of every tensor one shared
    dynamic "batch" dimension in [1, max_batch]; other dimensions stay the examples'."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return tuple(pytree.tree_map(lambda _: {0: batch}, list(example_inputs)))


def _as_tuple(example_inputs: torch.Tensor | Sequence) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def export(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence, *,
           dynamic_batch: bool = True,
           max_batch: int = DEFAULT_MAX_BATCH) -> torch.export.ExportedProgram:
    """``torch.export.export`` of an eval-mode ``model`` with our opaque ops in the graph.

    Args:
        model: in eval mode; its op modules may have any backend (traced as "native").
        example_inputs: the forward's positional arguments (a tensor stands for a
            1-tuple), e.g. one (N, 3, H, W) image batch; N must be at least 2 with
            ``dynamic_batch`` (torch.export treats a size-1 example dimension as the
            constant 1).
        dynamic_batch: the program accepts any batch size in [1, max_batch] (dimension 0
            of every input); else exactly the examples' shapes.

    Returns:
        The ExportedProgram; ``.module()`` runs it like the model.
    """
    _check_eval(model)
    inputs = _as_tuple(example_inputs)
    if dynamic_batch and any(x.shape[0] < 2 for x in pytree.tree_leaves(inputs)):
        raise ValueError("export: with dynamic_batch=True the example batch must be at least 2 "
                         "(torch.export specialises a size-1 dimension to the constant 1)")
    dynamic_shapes = batch_dynamic_shapes(inputs, max_batch) if dynamic_batch else None
    with native_ops(model), torch.no_grad():
        return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes)


def aoti_compile(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence,
                 package_path: str | os.PathLike, *, dynamic_batch: bool = True,
                 max_batch: int = DEFAULT_MAX_BATCH) -> Path:
    """Compiles :func:`export`'s program with AOTInductor into the ``.pt2`` file
    ``package_path`` (weights included) for the device of the example inputs.

    Load it with ``torch._inductor.aoti_load_package(path)`` after ``import
    alexnet_kernels`` (which registers our ops the package calls); in C++ with
    ``torch::inductor::AOTIModelPackageLoader`` after loading ``alexnet_kernels/_C*.so``.
    """
    program = export(model, example_inputs, dynamic_batch=dynamic_batch, max_batch=max_batch)
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(package_path))
    return Path(path)


def _on_cpu(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]
            ) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The model and inputs on the CPU (a copy of the model when it is elsewhere)."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        model = copy.deepcopy(model).cpu()
    return model, pytree.tree_map(lambda x: x.cpu(), inputs)


def export_onnx(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence,
                path: str | os.PathLike, *, dynamic_batch: bool = True,
                max_batch: int = DEFAULT_MAX_BATCH, external_data: bool = False) -> Path:
    """Writes an ONNX model (opset ``onnx_translations.OPSET``) of ``model`` to ``path``.

    Our ops become standard ONNX operators (``Conv`` + ``Relu``, ``LRN``, ``MaxPool``;
    dropout disappears in eval mode), through ``torch.onnx.export(dynamo=True)`` with
    :func:`~alexnet_kernels.onnx_translations.translation_table`. The model is traced
    on the CPU (a copy when it lives elsewhere); the file is device-independent. With
    ``dynamic_batch`` the batch dimension of inputs and outputs is symbolic. The
    weights are inside the file (protobuf's 2 GiB limit: about 500M fp32
    parameters) unless ``external_data`` puts them into ``<path>.data``. Needs the
    ``export`` extra (onnx, onnxscript, onnxruntime). Returns ``path``.
    """
    from alexnet_kernels import onnx_translations

    model, inputs = _on_cpu(model, _as_tuple(example_inputs))
    program = export(model, inputs, dynamic_batch=dynamic_batch, max_batch=max_batch)
    torch.onnx.export(program, inputs, str(path), dynamo=True, verbose=False,
                      opset_version=onnx_translations.OPSET, external_data=external_data,
                      custom_translation_table=onnx_translations.translation_table())
    return Path(path)
