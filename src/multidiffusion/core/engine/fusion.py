"""Fusion of per-view tensors into the canvas: the closed-form least-squares solution (paper Eq. 5).

Ψ(J) = Σ_i F_i⁻¹(W_i ⊗ Φ(F_i(J) | y_i)) / Σ_j F_j⁻¹(W_j)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multidiffusion.core.engine.crop import crop, paste_add, paste_add_weighted, view_indices
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import ViewTask


class FusionPlan:
    """Precomputed indices, weights and the denominator Σ_j F_j⁻¹(W_j) of a task list.

    Args:
        tasks: (view, condition, weight) tasks; all views of one size (h, w).
        height: Canvas rows, latent cells.
        width: Canvas columns, latent cells.
        device: Where the canvas lives.

    Raises:
        InvalidInputError: a canvas cell gets zero total weight (it would have no value: docs/design.md §4).
    """

    def __init__(self, tasks: Sequence[ViewTask], height: int, width: int, device: torch.device | str) -> None:
        if not tasks:
            raise InvalidInputError("no view covers the canvas: the layout produced no (view, condition) pair")
        self.tasks = list(tasks)
        self.height, self.width = height, width
        first = self.tasks[0].view
        self.view_size = (first.height, first.width)
        self.index = view_indices([t.view for t in self.tasks], height, width, device)  # (T, h·w)
        self.weights = torch.stack([t.weight.to(torch.float32) for t in self.tasks]).to(device)  # (T, h, w)
        if bool((self.weights < 0).any()) or not bool(torch.isfinite(self.weights).all()):
            raise InvalidInputError("view weights must be finite and non-negative")
        denom = torch.zeros(1, 1, height, width, dtype=torch.float32, device=device)
        paste_add(denom, self.weights[:, None], self.index)
        uncovered = int((denom <= 0).sum())
        if uncovered:
            raise InvalidInputError(
                f"{uncovered} canvas cell(s) get zero total view weight; every cell must be covered by a view "
                "with a positive weight"
            )
        self.denominator = denom  # (1, 1, H, W)
        self._buffers: dict[tuple[torch.dtype, torch.device], Tensor] = {}  # :meth:`_scratch`, by dtype and device

    def __len__(self) -> int:
        return len(self.tasks)

    def crop(self, canvas: Tensor, batch: slice) -> Tensor:
        """Crops of ``canvas`` (N, C, H, W) for the tasks in ``batch``: (T·N, C, h, w), a new tensor."""
        index = self.index[batch]
        if _tracks_grad(canvas):
            return crop(canvas, index, self.view_size)
        scratch = self._scratch(canvas.shape[0] * canvas.shape[1] * index.numel(), canvas)
        return crop(canvas, index, self.view_size, scratch)

    def accumulate(self, numerator: Tensor, values: Tensor, batch: slice) -> None:
        """numerator += Σ_{i ∈ batch} F_i⁻¹(W_i ⊗ values_i); values (T·N, C, h, w), numerator float32."""
        w = self.weights[batch]
        if _tracks_grad(values) or _tracks_grad(numerator):
            t = w.shape[0]
            weighted = values.reshape(t, -1, *values.shape[1:]).to(torch.float32) * w[:, None, None]
            paste_add(numerator, weighted.reshape(values.shape), self.index[batch])
            return
        scratch = self._scratch(values.numel(), numerator)
        paste_add_weighted(numerator, values, w, self.index[batch], scratch)

    def _scratch(self, numel: int, like: Tensor) -> Tensor:
        """A flat buffer of ``numel`` elements of ``like``'s dtype and device, reused from call to call.

        Every step crops and weights a batch of views as large as the previous one; on a CPU, fresh buffers that
        size come from the kernel each time (page faults and zeroing), so the plan keeps one for its run. The crop's
        gather and the weighted paste share it (they never overlap; the float32 canvas and numerator agree).
        """
        key = (like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self._buffers[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buffer[:numel]

    def normalise(self, numerator: Tensor) -> Tensor:
        """Divide an accumulated numerator by Σ_j F_j⁻¹(W_j), in place; returns it."""
        return numerator.div_(self.denominator)


def _tracks_grad(x: Tensor) -> bool:
    """Whether an op on ``x`` would be recorded for autograd (``out=`` buffers are refused then)."""
    return torch.is_grad_enabled() and x.requires_grad


def fuse(values: Tensor, plan: FusionPlan, num_canvases: int) -> Tensor:
    """Eq. 5 in one call: per-task values (T·N, C, h, w) → fused canvas (N, C, H, W), float32."""
    out = torch.zeros(num_canvases, values.shape[1], plan.height, plan.width, device=values.device)
    plan.accumulate(out, values, slice(None))
    return plan.normalise(out)
