"""The resolution-dependent timestep shift of flow-matching models (SD 3.5, Flux), computed for a view."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any


def accepts(scheduler: Any, name: str) -> bool:
    """Whether ``scheduler.set_timesteps`` takes the keyword ``name`` (a user may pick any scheduler)."""
    return name in inspect.signature(scheduler.set_timesteps).parameters


def dynamic_shift(
    scheduler: Any, view_cells: tuple[int, int], fallback: Mapping[str, Any] | None = None, max_shift: float = 1.15
) -> dict[str, Any]:
    """``{"mu": μ}`` for ``set_timesteps`` when the scheduler shifts its sigmas by the image size
    (``use_dynamic_shifting``) and takes μ; else ``{}`` (other schedulers ignore μ, and DPM-Solver refuses it).

    μ is diffusers' ``calculate_shift``, linear in the token count of the VIEW (h · w cells: one cell is one
    token), since a view is the image the transformer sees; its parameters come from the scheduler's config, else
    ``fallback`` (the model's own scheduler config), else the pipelines' defaults (``max_shift``: Flux's 1.15,
    SD 3's 1.16).
    """
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = {**(fallback or {}), **dict(scheduler.config)}
    if not config.get("use_dynamic_shifting") or not accepts(scheduler, "mu"):
        return {}
    mu = calculate_shift(
        view_cells[0] * view_cells[1],
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", max_shift),
    )
    return {"mu": mu}
