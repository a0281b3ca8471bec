"""Convolution unit shared by the TensorFlow-trained MobileNets: TF "SAME" padding, optional
BatchNorm (TF's eps 1e-3) and ReLU6, plus the weight-layout conversions from TF to PyTorch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TF_BN_EPS = 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding (before, after) for one spatial axis: the extra pixel goes after."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


class TfConv(nn.Module):
    """Conv2d with TF SAME padding -> optional BatchNorm -> optional ReLU6.

    With stride 1 and an odd kernel SAME padding is symmetric, so it is done by the convolution
    itself; with stride 2 TF pads (0, 1) on even inputs, which PyTorch's symmetric padding cannot
    express, so the input is padded explicitly. While tracing (ONNX export) the pads are the
    even-size ones, a constant Pad: every stride-2 input is even when the image size is a multiple
    of 32 (224 is); eager mode computes SAME padding for any size.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False,
                 batch_norm: bool = True, relu6: bool = True, bias: bool = False):
        super().__init__()
        if depthwise and cin != cout:
            raise ValueError(f"depthwise conv needs cin == cout, got {cin} -> {cout}")
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=cin if depthwise else 1, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=TF_BN_EPS) if batch_norm else None
        self.relu6 = relu6
        self.even_padding = same_padding(2 * stride, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            if torch.jit.is_tracing():
                top, bottom = left, right = self.even_padding
            else:
                top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
                left, right = same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu6:
            x = F.relu6(x)
        return x

    def load_tf(self, kernel: np.ndarray, layout: str, where: str, bias: np.ndarray | None = None,
                bn: dict[str, np.ndarray] | None = None) -> None:
        """Copy TF weights in. layout: "hwio" (Keras Conv2D), "hwc1" (Keras DepthwiseConv2D),
        "ohwi" (TFLite conv), "1hwc" (TFLite depthwise). bn: gamma/beta/moving_mean/moving_variance."""
        if layout == "hwio":
            torch_kernel = kernel.transpose(3, 2, 0, 1)
        elif layout == "hwc1":
            torch_kernel = kernel.transpose(2, 3, 0, 1)
        elif layout == "ohwi":
            torch_kernel = kernel.transpose(0, 3, 1, 2)
        elif layout == "1hwc":
            torch_kernel = kernel.transpose(3, 0, 1, 2)
        else:
            raise ValueError(f"{where}: unknown kernel layout {layout!r}")
        _copy(self.conv.weight, torch_kernel, f"{where} kernel")
        if bias is not None:
            if self.conv.bias is None:
                raise ValueError(f"{where}: weights carry a bias but this conv has none")
            _copy(self.conv.bias, bias, f"{where} bias")
        elif self.conv.bias is not None:
            raise ValueError(f"{where}: this conv needs a bias but the weights carry none")
        if bn is not None:
            if self.bn is None:
                raise ValueError(f"{where}: weights carry BatchNorm parameters but this unit has no BatchNorm")
            _copy(self.bn.weight, bn["gamma"], f"{where} BN gamma")
            _copy(self.bn.bias, bn["beta"], f"{where} BN beta")
            _copy(self.bn.running_mean, bn["moving_mean"], f"{where} BN moving_mean")
            _copy(self.bn.running_var, bn["moving_variance"], f"{where} BN moving_variance")
        elif self.bn is not None:
            raise ValueError(f"{where}: this unit has BatchNorm but the weights carry no BN parameters")


def _copy(target: torch.Tensor, value: np.ndarray, what: str) -> None:
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"{what}: expected shape {tuple(target.shape)}, weights file has {tuple(value.shape)}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

