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
        self.index = _task_indices(self.tasks, height, width, device)  # (T, h·w)
        self.weights = torch.stack([t.weight.to(torch.float32) for t in self.tasks]).to(device)  # (T, h, w)
        if bool((self.weights < 0).any()) or not bool(torch.isfinite(self.weights).all()):
            raise InvalidInputError("view weights must be finite and non-negative")
        denom = torch.zeros(1, 1, height, width, dtype=torch.float32, device=device)
        paste_add(denom, self.weights[:, None], self.index)
        self.spread = _Spread.of(self.tasks, self.view_size, height * width, device)
        if self.spread is not None:
            self.spread.add(denom, torch.ones_like(self.weights[:, None]), self.weights, slice(None))  # Σ W_i
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
            if self.spread is not None:
                self.spread.add(numerator, values, self.weights, batch)
            return
        if self.spread is not None:  # the spread pairs, then the gather's weighted paste: one fixed order, one result
            self.spread.add(numerator, values, self.weights, batch)
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


def _task_indices(tasks: Sequence[ViewTask], height: int, width: int, device: torch.device | str) -> Tensor:
    """(T, h·w) flat canvas indices of the tasks: the crops' from their views, index-map tasks' their own."""
    if all(t.index is None for t in tasks):
        return view_indices([t.view for t in tasks], height, width, device)
    h, w = tasks[0].view.height, tasks[0].view.width
    rows = []
    for t in tasks:
        if (t.view.height, t.view.width) != (h, w):
            raise InvalidInputError(
                f"all views of a batch must have one size, got {(h, w)} and {t.view.height, t.view.width}"
            )
        if t.index is None:
            rows.append(view_indices([t.view], height, width, device)[0])
            continue
        index = t.index.to(device=device, dtype=torch.long).reshape(-1)
        if index.numel() != h * w:
            raise InvalidInputError(f"a view's index map has {index.numel()} cells; its {h}×{w} view needs {h * w}")
        if int(index.min()) < 0 or int(index.max()) >= height * width:
            raise InvalidInputError(
                f"a view's index map reads outside the {height}×{width} canvas (0…{height * width - 1})"
            )
        rows.append(index)
    return torch.stack(rows)


class _Spread:
    """The (cell, pixel) pairs of every task's ``spread``, flattened: F_i⁻¹ into cells the task does not read."""

    def __init__(self, cells: Tensor, task: Tensor, pixel: Tensor, pixels_per_view: int) -> None:
        self.cells, self.task, self.pixel, self.pixels_per_view = cells, task, pixel, pixels_per_view
        self._by_batch: dict[tuple[int, int], tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    @classmethod
    def of(
        cls, tasks: Sequence[ViewTask], size: tuple[int, int], cells: int, device: torch.device | str
    ) -> _Spread | None:
        parts = [(i, t.spread) for i, t in enumerate(tasks) if t.index is not None and t.spread is not None]
        if not parts:
            return None
        pixels = size[0] * size[1]
        cell, task, pixel = [], [], []
        for i, pairs in parts:
            pairs = pairs.to(device=device, dtype=torch.long)
            if pairs.ndim != 2 or pairs.shape[0] != 2:
                raise InvalidInputError(f"a view's spread must be (2, K) (cell, pixel) pairs, got {tuple(pairs.shape)}")
            if pairs.numel() and (
                int(pairs[0].min()) < 0
                or int(pairs[0].max()) >= cells
                or int(pairs[1].min()) < 0
                or int(pairs[1].max()) >= pixels
            ):
                raise InvalidInputError("a view's spread names a cell outside the canvas or a pixel outside the view")
            cell.append(pairs[0])
            pixel.append(pairs[1])
            task.append(torch.full_like(pairs[0], i))
        return cls(torch.cat(cell), torch.cat(task), torch.cat(pixel), pixels)

    def _select(self, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(cells, task, its place in the batch, pixel) of the pairs of tasks start … stop − 1."""
        key = (start, stop)
        if key not in self._by_batch:
            keep = (self.task >= start) & (self.task < stop)
            self._by_batch[key] = (self.cells[keep], self.task[keep], self.task[keep] - start, self.pixel[keep])
        return self._by_batch[key]

    def add(self, target: Tensor, values: Tensor, weights: Tensor, batch: slice) -> None:
        """target (N, C, H, W) += W ⊗ values pasted through the pairs of the tasks in ``batch``.

        ``values`` is (T·N, C, h, w) view-major for the batch's T tasks (N may be 1 for all canvases); ``weights``
        (all tasks, h, w).
        """
        start, stop, _ = batch.indices(weights.shape[0])
        cells, task, local, pixel = self._select(start, stop)
        if cells.numel() == 0:
            return
        n, c = target.shape[:2]
        views = values.reshape(stop - start, -1, c, self.pixels_per_view)  # (T, N, C, h·w), no copy
        picked = views[local, :, :, pixel].to(torch.float32)  # (K, N, C)
        picked = picked * weights.reshape(weights.shape[0], -1)[task, pixel][:, None, None]
        picked = picked.permute(1, 2, 0).expand(n, c, -1)  # (N, C, K)
        target.view(n, c, -1).index_add_(2, cells, picked)


def _tracks_grad(x: Tensor) -> bool:
    """Whether an op on ``x`` would be recorded for autograd (``out=`` buffers are refused then)."""
    return torch.is_grad_enabled() and x.requires_grad


def fuse(values: Tensor, plan: FusionPlan, num_canvases: int) -> Tensor:
    """Eq. 5 in one call: per-task values (T·N, C, h, w) → fused canvas (N, C, H, W), float32."""
    out = torch.zeros(num_canvases, values.shape[1], plan.height, plan.width, device=values.device)
    plan.accumulate(out, values, slice(None))
    return plan.normalise(out)
