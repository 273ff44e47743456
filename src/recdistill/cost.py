"""What a model costs at inference, measured the same way for every model of every track.

Multiply-adds are counted by ``torch.utils.flop_counter`` at dispatch level: matrix products
(``mm``, ``addmm``, ``bmm``, ``mv``, attention, convolutions) count ``M*N*K``; element-wise
products count one per output element; lookups, sums, additions and non-linearities count
nothing. Where the counter cannot see the work (sparse products), a track documents its
formula and labels the cost ``macs_method="formula"``. Latency is :func:`recdistill.train.median_ms`:
a warm-up call, then the median of timed calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_macs", "n_params"]


def _mul_flops(*args: Any, out_shape: tuple[int, ...], **kwargs: Any) -> int:
    return 2 * int(torch.Size(out_shape).numel())  # 1 multiply = 1 MAC = 2 "flops"


def _mv_flops(mat: tuple[int, ...], *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return 2 * mat[0] * mat[1]  # (M, N) @ (N,)


def _addmv_flops(bias: Any, mat: tuple[int, ...], *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return 2 * mat[0] * mat[1]


def _dot_flops(a: tuple[int, ...], *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return 2 * a[0]


def _cpu_attention_flops(query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...],
                         *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return int(sdpa_flop_count(query, key, value))  # QK^T and AV, as torch counts its CUDA kernels


# counted on top of torch's own formulas (mm, addmm, bmm, baddbmm, attention, convolutions);
# torch has attention formulas for its CUDA kernels only: without the CPU one, attention on
# the CPU would count nothing
_MAC_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten.mul: _mul_flops, torch.ops.aten.mv: _mv_flops,
    torch.ops.aten.addmv: _addmv_flops, torch.ops.aten.dot: _dot_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


@torch.no_grad()
def count_macs(forward: Callable[[], object], examples: int) -> int:
    """Multiply-adds per example of ``forward()``, which scores ``examples`` examples.

    >>> layer = nn.Linear(4, 3)
    >>> count_macs(lambda: layer(torch.ones(2, 4)), examples=2)  # 4 x 3 per row
    12
    >>> count_macs(lambda: torch.ones(5) * torch.ones(5), examples=1)
    5
    >>> q = torch.ones(2, 1, 3, 4)  # (B, heads, L, D): QK^T and AV, 3 x 3 x 4 each per example
    >>> count_macs(lambda: nn.functional.scaled_dot_product_attention(q, q, q), examples=2)
    72
    """
    counter = FlopCounterMode(display=False, custom_mapping=_MAC_FORMULAS)
    with counter:
        forward()
    return round(counter.get_total_flops() / 2 / examples)


def n_params(model: nn.Module) -> int:
    """The number of parameters (every element of every parameter tensor).

    >>> n_params(nn.Linear(4, 3))
    15
    """
    return sum(p.numel() for p in model.parameters())
