"""Activation-range observers for static int8: min/max and the histogram (L2) range search.

``minmax`` (and ``per_channel``, whose activations are per-tensor min/max) keep the largest
``|x|`` seen: no input is ever clipped, so one outlier stretches the grid for everything else.
``histogram`` is torchao's ``HistogramObserver`` (the L2-minimising search of the eager
observer, kept in ``torchao.quantization.pt2e``): it chooses the range whose quantization error
over the observed distribution is smallest, clipping rare outliers. Both end in one symmetric
per-tensor scale (``range / 127``) that :class:`~.modules.StaticInt8Linear` uses.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .modules import QMAX


class Observer(Protocol):
    def observe(self, x: Tensor) -> None: ...

    def scale(self) -> float: ...


class MinMaxObserver:
    """Symmetric per-tensor range: ``max |x|`` over everything observed."""

    def __init__(self) -> None:
        self.amax = 0.0
        self.count = 0

    def observe(self, x: Tensor) -> None:
        if x.numel():
            self.amax = max(self.amax, float(x.detach().abs().max()))
            self.count += x.numel()

    def scale(self) -> float:
        return max(self.amax, 1e-8) / QMAX


class HistogramRangeObserver:
    """torchao's ``HistogramObserver`` (2048 bins, per-tensor symmetric int8)."""

    def __init__(self) -> None:
        from torchao.quantization.pt2e import HistogramObserver

        self._obs = HistogramObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        self.count = 0

    def observe(self, x: Tensor) -> None:
        if x.numel():
            self._obs(x.detach().to(torch.float32).reshape(-1))
            self.count += x.numel()

    def scale(self) -> float:
        scale, _ = self._obs.calculate_qparams()
        return max(float(scale.reshape(-1)[0]), 1e-8 / QMAX)


def make_observer(kind: str) -> Observer:
    """``minmax``/``per_channel`` -> :class:`MinMaxObserver`; ``histogram`` -> :class:`HistogramRangeObserver`."""
    return HistogramRangeObserver() if kind == "histogram" else MinMaxObserver()
