"""AlexNet variants and convert(): parameter counts, weights and outputs against PyTorch."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from cases.models import (
    NET_ATOL,
    NET_RTOL,
    VARIANTS,
    assert_net_close,
    check_backend_matches_torch,
)
from helpers import random_tensor, require_native_cpu, require_native_cuda
from torch import nn

import alexnet_kernels
from alexnet_kernels import models
from alexnet_kernels.backends import use_backend
from alexnet_kernels.models import keras_same_padding


def torchvision_alexnet(num_classes: int = 1000) -> nn.Module:
    """``torchvision.models.alexnet`` itself when torchvision is installed (the test extra
    installs it), else :func:`handwritten_torchvision_alexnet`."""
    try:
        import torchvision
    except ImportError:
        return handwritten_torchvision_alexnet(num_classes)
    return torchvision.models.alexnet(weights=None, num_classes=num_classes)


def handwritten_torchvision_alexnet(num_classes: int = 1000) -> nn.Module:
    """torchvision.models.alexnet's layout with plain PyTorch modules (no torchvision import)."""

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return Reference()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: models.alexnet(), 61_100_840),
    (lambda: models.alexnet_paper(groups=1), 62_378_344),
    (lambda: models.alexnet_paper(groups=2), 60_965_224),
    (lambda: models.alexnet_cifar(), 21_622_154),
    (lambda: models.alexnet_bn(3), 46_762_051),
], ids=["torchvision", "paper", "paper-grouped", "cifar", "bn"])
def test_parameter_count(build: Callable[[], nn.Module], expected: int) -> None:
    assert n_params(build()) == expected


def test_alexnet_loads_torchvision_weights() -> None:
    require_native_cpu()
    torch.manual_seed(0)
    reference = torchvision_alexnet().eval()
    ours = models.alexnet(backend="native").eval()
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    for side in (63, 224):
        x = random_tensor((1, 3, side, side), torch.float32, seed=side)
        with torch.no_grad():
            assert_net_close(ours(x), reference(x))


def test_handwritten_reference_is_torchvision_alexnet() -> None:
    """The fallback reference used without torchvision has torchvision's keys and outputs."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(11)
    reference = torchvision.models.alexnet(weights=None, num_classes=7).eval()
    handwritten = handwritten_torchvision_alexnet(7).eval()
    handwritten.load_state_dict(reference.state_dict(), strict=True)
    x = random_tensor((2, 3, 70, 70), torch.float32, seed=12)
    with torch.no_grad():
        torch.testing.assert_close(handwritten(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_native_matches_torch_backend(variant: str) -> None:
    require_native_cpu()
    check_backend_matches_torch(variant, "native")


def _first_layer_input_layout(model: nn.Module, x: torch.Tensor) -> str:
    """"channels_last" or "contiguous": how the first feature layer received `x`."""
    seen: list[torch.Tensor] = []
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    handle = first.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    (received,) = seen
    if received.is_contiguous():
        return "contiguous"
    assert received.is_contiguous(memory_format=torch.channels_last)
    return "channels_last"


@pytest.mark.parametrize(("variant", "auto_layout"),
                         [("cifar", "contiguous"), ("bn", "channels_last"),
                          ("paper-grouped", "channels_last")])
def test_features_layout(variant: str, auto_layout: str) -> None:
    """On the CPU the feature layers of inputs from 64x64 on run channels_last, unless the
    network is PyTorch's (backend="torch") or told to keep the input's layout; the
    results match PyTorch's NCHW network whichever layout runs."""
    build, shape = VARIANTS[variant]
    torch.manual_seed(3)
    ours, reference = build(backend="auto").eval(), build(backend="torch").eval()
    reference.load_state_dict(ours.state_dict())
    x = random_tensor(shape, torch.float32, seed=4)
    assert ours.features_layout == "auto"
    assert _first_layer_input_layout(ours, x) == auto_layout
    assert _first_layer_input_layout(reference, x) == "contiguous"
    with torch.no_grad():
        expected = reference(x)
        assert_net_close(ours(x), expected)
        ours.features_layout = "input"
        assert _first_layer_input_layout(ours, x) == "contiguous"
        assert_net_close(ours(x), expected)
        ours.features_layout = "channels_last"
        assert _first_layer_input_layout(ours, x) == "channels_last"
        assert_net_close(ours(x), expected)
        reference.features_layout = "channels_last"
        assert _first_layer_input_layout(reference, x) == "channels_last"
    ours.features_layout = "auto"
    with use_backend("torch"):  # "auto" resolving to PyTorch's ops keeps their layout too
        assert _first_layer_input_layout(ours, x) == "contiguous"
    with pytest.raises(ValueError, match="features_layout must be one of"):
        ours.features_layout = "nhwc"


# Our ops each network must run (by profiler name) when compiled.
COMPILED_OPS = {"cifar": {"conv2d_relu", "max_pool2d"},
                "paper-grouped": {"conv2d_relu", "lrn", "max_pool2d"}}


@pytest.mark.parametrize("variant", list(COMPILED_OPS))
def test_torch_compile_whole_network(variant: str) -> None:
    """torch.compile(fullgraph=True) traces the network without a graph break, the compiled
    graph still calls our kernels, and its output and parameter gradients equal eager's."""
    require_native_cpu()
    build, shape = VARIANTS[variant]
    torch.manual_seed(3)
    model = build(backend="native").eval()
    x = random_tensor(shape, torch.float32, seed=4)
    model(x).square().sum().backward()
    eager_y = model(x).detach()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.profiler.profile() as profile:
        y = compiled(x)
        y.square().sum().backward()
    ran = {event.key.removeprefix("alexnet_kernels::") for event in profile.key_averages()
           if event.key.startswith("alexnet_kernels::")}
    assert COMPILED_OPS[variant] <= ran, f"compiled graph ran {sorted(ran)}"
    assert_net_close(y, eager_y)
    scale = max(g.abs().max().item() for g in eager_grads)
    for p, expected in zip(model.parameters(), eager_grads, strict=True):
        assert_net_close(p.grad, expected, scale=scale)


@pytest.mark.parametrize("variant", ["cifar", "paper-grouped"])
def test_native_cuda_matches_torch_backend(variant: str) -> None:
    """On a GPU: the network on our CUDA kernels against PyTorch's, fp32 with TF32 off on both
    sides (the per-op TF32 tests check TF32)."""
    require_native_cuda()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        check_backend_matches_torch(variant, "native", "cuda")


def keras_same_reference(model: models.AlexNet, x: torch.Tensor) -> torch.Tensor:
    """The CIFAR network written with Keras' 'same' rule directly: (N, 3, 32, 32) -> logits."""
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            before, after = keras_same_padding(x.shape[-1], layer.kernel_size[0],
                                               layer.stride[0])
            x = F.relu(F.conv2d(F.pad(x, (before, after, before, after)), layer.weight,
                                layer.bias, layer.stride))
        elif isinstance(layer, nn.MaxPool2d):
            before, after = keras_same_padding(x.shape[-1], 3, 2)
            x = F.max_pool2d(F.pad(x, (before, after, before, after), value=float("-inf")), 3, 2)
    fc1, fc2, fc3 = (m for m in model.classifier if isinstance(m, nn.Linear))
    x = F.relu(fc1(torch.flatten(x, 1)))
    return fc3(F.relu(fc2(x)))


def test_cifar_matches_keras_same_padding() -> None:
    torch.manual_seed(3)
    model = models.alexnet_cifar(backend="torch").eval()
    x = random_tensor((3, 3, 32, 32), torch.float32, seed=4)
    with torch.no_grad():
        assert_net_close(model(x), keras_same_reference(model, x))


def test_convert_keeps_keys_and_shares_parameters() -> None:
    require_native_cpu()
    torch.manual_seed(5)
    model = torchvision_alexnet(10).eval()
    x = random_tensor((2, 3, 63, 63), torch.float32, seed=6)
    with torch.no_grad():
        expected = model(x)
    keys = list(model.state_dict())
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}

    assert alexnet_kernels.convert(model, backend="native") is model
    assert list(model.state_dict()) == keys
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers
    fused = [m for m in model.features if isinstance(m, alexnet_kernels.nn.Conv2dReLU)]
    assert len(fused) == 5 and all(m.backend == "native" for m in fused)
    assert not any(isinstance(m, nn.ReLU) for m in model.features)
    assert sum(isinstance(m, alexnet_kernels.nn.Dropout) for m in model.classifier) == 2
    with torch.no_grad():
        assert_net_close(model(x), expected)


def test_convert_leaves_other_layers() -> None:
    class UserNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3), nn.GELU(), nn.LocalResponseNorm(3))
            self.conv = nn.Conv2d(8, 8, 1)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2, ceil_mode=True)

    model = UserNet()
    before = dict(model.named_modules())
    alexnet_kernels.convert(model, backend="torch")
    after = dict(model.named_modules())
    for name in ("body.0", "body.1", "body.2", "body.3", "body.4", "conv", "relu"):
        assert after[name] is before[name], name
    assert isinstance(after["body.5"], alexnet_kernels.nn.LocalResponseNorm)
    assert after["body.5"].size == 3
    assert isinstance(after["pool"], alexnet_kernels.nn.MaxPool2d) and after["pool"].ceil_mode


@pytest.mark.parametrize(("build", "side", "message"), [
    (models.alexnet, 62, "minimum input size is 63x63"),
    (models.alexnet_paper, 226, "minimum input size is 227x227"),
    (models.alexnet_paper, 259, "accepted input sizes are 227x227 to 258x258"),
    (lambda: models.alexnet_bn(3), 150, "minimum input size is 195x195"),
    (models.alexnet_cifar, 16,
     "minimum input size is 32x32; accepted input sizes are 32x32 to 63x63"),
    (models.alexnet_cifar, 64, "gives 2x2 feature maps but the classifier needs 1x1"),
])
def test_wrong_input_size_raises(build: Callable[[], nn.Module], side: int, message: str) -> None:
    model = build().eval()
    with pytest.raises(ValueError, match=message):
        model(torch.empty(1, 3, side, side))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_channels_last_and_half_precision(dtype: torch.dtype) -> None:
    require_native_cpu()
    torch.manual_seed(7)
    model = models.alexnet(10, backend="native").eval()
    x = random_tensor((2, 3, 67, 67), torch.float32, seed=8)
    with torch.no_grad():
        expected = model(x)
        converted = copy.deepcopy(model).to(dtype=dtype, memory_format=torch.channels_last)
        actual = converted(x.to(dtype).contiguous(memory_format=torch.channels_last))
    assert actual.dtype == dtype
    loose = {torch.float32: (NET_RTOL, NET_ATOL), torch.bfloat16: (0.1, 0.1),
             torch.float16: (2e-2, 2e-2)}[dtype]
    assert_net_close(actual, expected, *loose)


def test_summary_table_matches_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from alexnet_kernels.summary import summary

    rows = summary(models.alexnet_bn(3, backend="torch"), (1, 3, 224, 224))
    by_name = {row.name: row for row in rows}
    assert by_name["layer1.3"].output_shape == (1, 96, 26, 26)
    assert by_name["flatten"].output_shape == (1, 6400)
    assert sum(row.params for row in rows) == 46_762_051
    # The seed's summary (torchinfo's) reports 1.01 G multiply-adds for this network.
    assert round(sum(row.mult_adds for row in rows) / 1e9, 2) == 1.01
    assert "46,762,051" in capsys.readouterr().out


def test_summary_torchinfo_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from alexnet_kernels.summary import summary

    monkeypatch.setitem(sys.modules, "torchinfo", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install torchinfo"):
        summary(models.alexnet_cifar(), (1, 3, 32, 32), use_torchinfo=True)


@pytest.mark.parametrize("variant", ["paper-grouped", "cifar"])
def test_summary_agrees_with_torchinfo(variant: str) -> None:
    """Our table's shapes, parameters and multiply-adds are torchinfo's (a test extra)."""
    from alexnet_kernels.summary import VARIANTS, layer_rows, summary

    build, side = VARIANTS[variant]
    model = build()
    ours = layer_rows(model, (2, 3, side, side))
    theirs = summary(model, (2, 3, side, side), use_torchinfo=True)
    assert theirs.total_params == sum(p.numel() for p in model.parameters())
    assert theirs.total_mult_adds == sum(row.mult_adds for row in ours)
    leaves = [layer for layer in theirs.summary_list if layer.is_leaf_layer]
    assert [tuple(layer.output_size) for layer in leaves] == [row.output_shape for row in ours]
