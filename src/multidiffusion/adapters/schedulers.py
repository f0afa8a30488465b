"""Diffusers schedulers by short name, built from the model's own scheduler config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import InvalidInputError

# short name -> (diffusers class, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # PLMS, as SD ships it
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


def check_scheduler_name(name: str) -> str:
    """Return ``name`` if it is a known short name, else raise with the list."""
    if name not in SCHEDULERS:
        raise InvalidInputError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULER_NAMES)}")
    return name


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """A fresh diffusers scheduler ``name`` built from a model's scheduler config.

    The model's training settings (betas, prediction type, timestep spacing…) carry over; only the
    solver changes. Each call returns a new object, so runs never share multistep state.
    """
    import diffusers

    class_name, overrides = SCHEDULERS[check_scheduler_name(name)]
    cls = getattr(diffusers, class_name)
    return cls.from_config(dict(base_config), **overrides)
