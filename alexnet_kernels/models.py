"""AlexNet variants built on the library's modules.

The published descriptions of AlexNet disagree, so each variant is its own
constructor:

* :func:`alexnet`: torchvision's network (64/192/384/256/256, adaptive pool),
  with torchvision's ``state_dict`` keys so its weights load unchanged;
* :func:`alexnet_paper`: the 2012 paper at 227x227 (96/256/384/384/256, LRN
  after conv1 and conv2, optional two-GPU grouping of conv2/conv4/conv5);
* :func:`alexnet_cifar`: the Keras CIFAR-10 network for 32x32 inputs, with
  Keras' ``'same'`` paddings made explicit;
* :func:`alexnet_bn`: the BatchNorm variant at 224x224.

Every op module gets the ``backend`` it is constructed with. Where a ReLU is
fused into the convolution before it (:class:`~alexnet_kernels.nn.Conv2dReLU`)
its slot holds ``nn.Identity()``, so Sequential indices and ``state_dict`` keys
are those of the unfused layout.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from alexnet_kernels import backends
from alexnet_kernels.nn import Conv2dReLU, Dropout, LocalResponseNorm, MaxPool2d
from alexnet_kernels.ops._args import int_pair, pool_output_size

Size = tuple[int, int]

FEATURE_LAYOUTS = ("auto", "input", "channels_last")
# "auto" runs inputs at least this large channels_last on the CPU. Measured there
# (train step and inference, fp32, batch 4-32): 96x96 to 227x227 inputs 1.02-1.3x
# faster than NCHW, the CIFAR network's 32x32 inputs 0.86-0.97x.
_CHANNELS_LAST_MIN_SIDE = 64

# Scanned when looking for the smallest (or the valid range of) input sizes.
_LARGEST_SEARCHED_INPUT = 4096


def _layer_output_size(module: nn.Module, size: Size) -> Size:
    """Spatial (H, W) after one leaf module; layers that keep the size return it."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise TypeError("string paddings are not supported by the size arithmetic")
        return tuple(pool_output_size(n, k, s, p, d, False) for n, k, s, p, d in zip(
            size, module.kernel_size, module.stride, module.padding, module.dilation, strict=True))
    if isinstance(module, nn.MaxPool2d):
        kernel = int_pair("MaxPool2d", "kernel_size", module.kernel_size)
        stride = int_pair("MaxPool2d", "stride", module.stride or module.kernel_size)
        padding = int_pair("MaxPool2d", "padding", module.padding)
        dilation = int_pair("MaxPool2d", "dilation", module.dilation)
        return tuple(pool_output_size(n, k, s, p, d, module.ceil_mode) for n, k, s, p, d in zip(
            size, kernel, stride, padding, dilation, strict=True))
    if isinstance(module, nn.ZeroPad2d):
        left, right, top, bottom = module.padding
        return (size[0] + top + bottom, size[1] + left + right)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        # An output_size entry may be None: that dimension keeps its size.
        out = module.output_size
        out = (out, out) if isinstance(out, int) else (out[0], out[-1])
        return tuple(n if o is None else o for n, o in zip(size, out, strict=True))
    return size


def feature_size(stages: Iterable[nn.Module], size: Size) -> Size | None:
    """Spatial (H, W) after `stages` for an (N, C, *size) input; None if a layer's output is empty.

    Nested containers are walked in registration order, which is the order a
    sequential network runs them in.
    """
    for stage in stages:
        for module in stage.modules():
            if next(module.children(), None) is not None:
                continue
            size = _layer_output_size(module, size)
            if min(size) < 1:
                return None
    return size


class _SizeChecked(nn.Module):
    """Checks the input's spatial size against the layers before they run.

    ``_feature_stages`` lists the modules the size arithmetic walks;
    ``_expected_features`` is the (H, W) the classifier needs, or None when an
    adaptive pool makes every non-empty size acceptable.
    """

    _expected_features: Size | None = None

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backends._validate(backend)
        self.features_layout = "auto"

    def _feature_stages(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def features_layout(self) -> str:
        """The memory layout the convolutional part runs in.

        ``"input"``: the input's own layout, as PyTorch's layers keep it;
        ``"channels_last"``: an NCHW input is copied to channels_last once, and every
        feature map is channels_last from there (the flatten before the classifier
        gives the same features either way); ``"auto"`` (the default): channels_last
        for floating-point inputs of at least 64x64 pixels on the CPU, where oneDNN's
        convolutions (and PyTorch's max-pool) run faster in it, unless the network was
        built with ``backend="torch"`` (or "auto" resolves to it), which stays exactly
        PyTorch's eager network; the input's layout for smaller inputs (slower in
        channels_last) and on GPUs (not measured there yet).
        """
        return self._features_layout

    @features_layout.setter
    def features_layout(self, layout: str) -> None:
        if layout not in FEATURE_LAYOUTS:
            raise ValueError(f"features_layout must be one of {FEATURE_LAYOUTS}, got {layout!r}")
        self._features_layout = layout

    def _runs_channels_last(self, x: torch.Tensor) -> bool:
        if self._features_layout != "auto":
            return self._features_layout == "channels_last"
        backend = self.backend if self.backend != "auto" else backends.get_backend()
        return (backend != "torch" and x.device.type == "cpu" and x.is_floating_point()
                and min(x.shape[-2:]) >= _CHANNELS_LAST_MIN_SIDE)

    def features_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) checked, in the layout the feature layers run in."""
        self.check_input(x)
        if self._runs_channels_last(x):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _accepts(self, side: int) -> bool:
        out = feature_size(self._feature_stages(), (side, side))
        return out is not None and (self._expected_features is None
                                    or out[0] == self._expected_features[0])

    def valid_input_sizes(self) -> range:
        """The square input sides this network accepts (contiguous for these layers)."""
        sides = [n for n in range(1, _LARGEST_SEARCHED_INPUT + 1) if self._accepts(n)]
        if not sides:
            return range(0)
        if self._expected_features is None:
            return range(sides[0], _LARGEST_SEARCHED_INPUT + 1)
        return range(sides[0], sides[-1] + 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raises ValueError naming the accepted sizes when (N, 3, H, W) `x` does not fit."""
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects an (N, C, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        out = feature_size(self._feature_stages(), (height, width))
        if out is not None and (self._expected_features is None
                                or out == self._expected_features):
            return
        sides = self.valid_input_sizes()
        name = type(self).__name__
        accepted = ("" if self._expected_features is None else
                    f"; accepted input sizes are {sides.start}x{sides.start} to "
                    f"{sides[-1]}x{sides[-1]}")
        if out is None or min(height, width) < sides.start:
            raise ValueError(f"{name}: input {height}x{width} is too small; the minimum input "
                             f"size is {sides.start}x{sides.start}{accepted}")
        expected = self._expected_features
        raise ValueError(f"{name}: input {height}x{width} gives {out[0]}x{out[1]} feature maps "
                         f"but the classifier needs {expected[0]}x{expected[1]}{accepted}")


class AlexNet(_SizeChecked):
    """features -> avgpool -> flatten -> classifier, as in torchvision.

    Input (N, 3, H, W), output (N, num_classes) logits. ``avgpool`` is
    ``nn.Identity()`` for the fixed-size variants, which then accept only the
    input sizes whose feature maps match the first Linear layer.
    """

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential,
                 expected_features: Size | None, *, backend: str = "auto") -> None:
        super().__init__(backend)
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self._expected_features = expected_features

    def _feature_stages(self) -> list[nn.Module]:
        return [self.features, self.avgpool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(self.features_input(x)))
        return self.classifier(torch.flatten(x, 1))


class AlexNetBN(_SizeChecked):
    """The BatchNorm variant: ``layer1``..``layer5``, ``flatten``, ``fc``, ``fc1``, ``fc2``.

    Input (N, 3, H, W) with H, W giving 5x5 feature maps (224x224), output
    (N, num_classes) logits.
    """

    def __init__(self, layers: list[nn.Sequential], fc: list[nn.Sequential],
                 expected_features: Size, *, backend: str = "auto") -> None:
        super().__init__(backend)
        for index, layer in enumerate(layers, start=1):
            self.add_module(f"layer{index}", layer)
        self.flatten = nn.Flatten()
        self.fc, self.fc1, self.fc2 = fc
        self._expected_features = expected_features

    def _feature_stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4, self.layer5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features_input(x)
        for layer in self._feature_stages():
            x = layer(x)
        x = self.flatten(x)
        return self.fc2(self.fc1(self.fc(x)))


def _conv_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               padding: int = 0, groups: int = 1, *, backend: str) -> list[nn.Module]:
    """A fused convolution + ReLU and the Identity holding the unfused ReLU's index."""
    return [Conv2dReLU(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                       backend=backend), nn.Identity()]


def _classifier(in_features: int, num_classes: int, dropout: float, *,
                backend: str) -> nn.Sequential:
    """torchvision's head: (N, in_features) -> (N, num_classes), dropout before each hidden fc."""
    return nn.Sequential(
        Dropout(dropout, backend=backend), nn.Linear(in_features, 4096), nn.ReLU(inplace=True),
        Dropout(dropout, backend=backend), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes))


def _flattened(stages: Iterable[nn.Module], channels: int, input_size: int) -> tuple[Size, int]:
    """(H, W) of the last feature maps for a square `input_size` input, and C*H*W."""
    size = feature_size(stages, (input_size, input_size))
    if size is None:
        raise ValueError(f"input size {input_size} is too small for these layers")
    return size, channels * size[0] * size[1]


def alexnet(num_classes: int = 1000, dropout: float = 0.5, *, backend: str = "auto") -> AlexNet:
    """torchvision's AlexNet (64/192/384/256/256 channels), same ``state_dict`` keys.

    Input (N, 3, H, W) with H, W >= 63 (the adaptive pool resizes the 256-channel
    feature maps to 6x6); output (N, num_classes). 61,100,840 parameters at
    1000 classes.
    """
    features = nn.Sequential(
        *_conv_relu(3, 64, 11, 4, 2, backend=backend), MaxPool2d(3, 2, backend=backend),
        *_conv_relu(64, 192, 5, padding=2, backend=backend), MaxPool2d(3, 2, backend=backend),
        *_conv_relu(192, 384, 3, padding=1, backend=backend),
        *_conv_relu(384, 256, 3, padding=1, backend=backend),
        *_conv_relu(256, 256, 3, padding=1, backend=backend), MaxPool2d(3, 2, backend=backend))
    avgpool = nn.AdaptiveAvgPool2d((6, 6))
    _, flat = _flattened([features, avgpool], 256, 224)
    return AlexNet(features, avgpool, _classifier(flat, num_classes, dropout, backend=backend),
                   expected_features=None, backend=backend)


def alexnet_paper(num_classes: int = 1000, groups: int = 1, lrn: bool = True,
                  dropout: float = 0.5, *, backend: str = "auto") -> AlexNet:
    """The 2012 paper's network (96/256/384/384/256 channels) for 227x227 inputs.

    LRN(size 5, alpha 1e-4, beta 0.75, k 2) follows the ReLU of conv1 and conv2
    when ``lrn``. ``groups=2`` reproduces the two-GPU split: conv2, conv4 and
    conv5 see half their input channels (kernel depths 48/192/192) while conv3
    connects across both halves. Input (N, 3, 227, 227) (227 to 258 give the
    same 6x6 feature maps), output (N, num_classes). Parameters at 1000
    classes: 62,378,344 (groups=1), 60,965,224 (groups=2).
    """
    def norm() -> list[nn.Module]:
        return [LocalResponseNorm(5, 1e-4, 0.75, 2.0, backend=backend)] if lrn else []

    features = nn.Sequential(
        *_conv_relu(3, 96, 11, 4, backend=backend), *norm(), MaxPool2d(3, 2, backend=backend),
        *_conv_relu(96, 256, 5, padding=2, groups=groups, backend=backend), *norm(),
        MaxPool2d(3, 2, backend=backend),
        *_conv_relu(256, 384, 3, padding=1, backend=backend),
        *_conv_relu(384, 384, 3, padding=1, groups=groups, backend=backend),
        *_conv_relu(384, 256, 3, padding=1, groups=groups, backend=backend),
        MaxPool2d(3, 2, backend=backend))
    size, flat = _flattened([features], 256, 227)
    return AlexNet(features, nn.Identity(), _classifier(flat, num_classes, dropout,
                                                        backend=backend), size, backend=backend)


def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of Keras' ``padding='same'``: output ceil(size / stride)."""
    output = -(-size // stride)
    total = max((output - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_conv_relu(in_channels: int, out_channels: int, kernel: int, stride: int, size: int,
                    *, backend: str) -> tuple[list[nn.Module], int]:
    """Keras' 'same' Conv2D + ReLU for a `size` input, and its output side.

    Keras puts the odd pixel of padding after the input; PyTorch's padding is
    symmetric, so an asymmetric one becomes an explicit ZeroPad2d in front.
    """
    before, after = keras_same_padding(size, kernel, stride)
    layers: list[nn.Module] = []
    if before != after:
        layers.append(nn.ZeroPad2d((before, after, before, after)))
        before = 0
    layers += _conv_relu(in_channels, out_channels, kernel, stride, before, backend=backend)
    return layers, -(-size // stride)


def _same_max_pool(kernel: int, stride: int, size: int, *,
                   backend: str) -> tuple[MaxPool2d, int]:
    """Keras' 'same' MaxPooling2D for a `size` input, and its output side.

    Keras pads max pooling with -inf, which is what PyTorch's padding does; the
    extra pixel after the input is ceil mode's partial last window.
    """
    before, after = keras_same_padding(size, kernel, stride)
    pool = MaxPool2d(kernel, stride, before, ceil_mode=after > before, backend=backend)
    output = -(-size // stride)
    if _layer_output_size(pool, (size, size)) != (output, output):
        raise ValueError(f"'same' max pooling of a {size}-pixel input has no PyTorch equivalent")
    return pool, output


def alexnet_cifar(num_classes: int = 10, dropout: float = 0.5, *, input_size: int = 32,
                  backend: str = "auto") -> AlexNet:
    """The Keras CIFAR-10 AlexNet (96/256/384/384/256 channels, 'same' paddings).

    Keras' 'same' paddings depend on the input size; they are computed for
    ``input_size`` (32: conv1 pads 3 before and 4 after, the pools take ceil
    mode's partial window), and the network then accepts only inputs whose
    feature maps have that size. Keras' classifier order: Dense+ReLU, Dropout,
    Dense+ReLU, Dropout, Dense. Input (N, 3, 32, 32), output (N, num_classes)
    logits (the Keras softmax is left to the loss).
    """
    size = input_size
    conv1, size = _same_conv_relu(3, 96, 11, 4, size, backend=backend)
    pool1, size = _same_max_pool(3, 2, size, backend=backend)
    conv2, size = _same_conv_relu(96, 256, 5, 1, size, backend=backend)
    pool2, size = _same_max_pool(3, 2, size, backend=backend)
    conv3, size = _same_conv_relu(256, 384, 3, 1, size, backend=backend)
    conv4, size = _same_conv_relu(384, 384, 3, 1, size, backend=backend)
    conv5, size = _same_conv_relu(384, 256, 3, 1, size, backend=backend)
    pool3, size = _same_max_pool(3, 2, size, backend=backend)
    features = nn.Sequential(*conv1, pool1, *conv2, pool2, *conv3, *conv4, *conv5, pool3)
    expected, flat = _flattened([features], 256, input_size)
    classifier = nn.Sequential(
        nn.Linear(flat, 4096), nn.ReLU(inplace=True), Dropout(dropout, backend=backend),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), Dropout(dropout, backend=backend),
        nn.Linear(4096, num_classes))
    return AlexNet(features, nn.Identity(), classifier, expected, backend=backend)


def alexnet_bn(num_classes: int, dropout: float = 0.5, *, backend: str = "auto") -> AlexNetBN:
    """AlexNet with BatchNorm after every convolution, for 224x224 inputs.

    conv1 has no padding, so 224x224 gives 5x5x256 feature maps (6400 features).
    BatchNorm sits between each convolution and its ReLU, so these convolutions
    are plain ``nn.Conv2d`` (the fused op would apply ReLU before the norm).
    Input (N, 3, 224, 224), output (N, num_classes); 46,762,051 parameters
    for 3 classes.
    """
    def block(cin: int, cout: int, kernel: int, stride: int, padding: int,
              pool: bool) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding),
                                   nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(MaxPool2d(3, 2, backend=backend))
        return nn.Sequential(*layers)

    layers = [block(3, 96, 11, 4, 0, True), block(96, 256, 5, 1, 2, True),
              block(256, 384, 3, 1, 1, False), block(384, 384, 3, 1, 1, False),
              block(384, 256, 3, 1, 1, True)]
    expected, flat = _flattened(layers, 256, 224)
    fc = [nn.Sequential(Dropout(dropout, backend=backend), nn.Linear(flat, 4096), nn.ReLU()),
          nn.Sequential(Dropout(dropout, backend=backend), nn.Linear(4096, 4096), nn.ReLU()),
          nn.Sequential(nn.Linear(4096, num_classes))]
    return AlexNetBN(layers, fc, expected, backend=backend)
