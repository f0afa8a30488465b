"""Diffusers schedulers: by short name, by class name, or as an instance the user configured."""

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
SCHEDULER_HELP = (
    f"one of: {', '.join(SCHEDULER_NAMES)}, or any diffusers scheduler class name (e.g. KDPM2DiscreteScheduler)"
)


def is_scheduler_instance(scheduler: Any) -> bool:
    """A diffusers-style scheduler object: a ``config``, ``set_timesteps`` and ``step``."""
    return all(hasattr(scheduler, a) for a in ("config", "set_timesteps", "step")) and not isinstance(scheduler, type)


def _scheduler_class(name: str) -> Any:
    """The diffusers scheduler class called ``name``, or None if there is none."""
    if not name.endswith("Scheduler") or not name.isidentifier():
        return None
    import diffusers

    cls = getattr(diffusers, name, None)
    return cls if isinstance(cls, type) and hasattr(cls, "from_config") and hasattr(cls, "step") else None


def check_scheduler_name(name: Any) -> str:
    """Return ``name`` if it is a short name or a diffusers scheduler class name, else raise with the list.

    A scheduler instance passes too (see :func:`scheduler_label`).
    """
    if is_scheduler_instance(name):
        if _scheduler_class(type(name).__name__) is not type(name):
            raise InvalidInputError(
                f"scheduler {type(name).__name__} is not a diffusers scheduler; pass a diffusers scheduler or a name"
            )
        return scheduler_label(name)
    if not isinstance(name, str):
        raise InvalidInputError(f"scheduler must be a name or a diffusers scheduler, got {type(name).__name__}")
    if name not in SCHEDULERS and _scheduler_class(name) is None:
        raise InvalidInputError(f"unknown scheduler {name!r}; choose {SCHEDULER_HELP}")
    return name


def scheduler_label(scheduler: Any) -> str:
    """What metadata records for a scheduler: its short name, or its class name for an instance."""
    return type(scheduler).__name__ if is_scheduler_instance(scheduler) else str(scheduler)


def scheduler_config_of(scheduler: Any) -> dict[str, Any] | None:
    """An instance's full config (JSON-ready, for the metadata); None for a name (the model's config is used)."""
    if not is_scheduler_instance(scheduler):
        return None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(scheduler.config).items()}


def make_scheduler(scheduler: Any, base_config: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> Any:
    """A fresh diffusers scheduler for one run.

    Args:
        scheduler: A short name (the model's training settings carry over; only the solver changes), a
            diffusers class name (built from the model's config, like ``Class.from_config(pipe.scheduler.config)``),
            or an instance (a fresh copy of it is used, so runs never share multistep state).
        base_config: The model's scheduler config.
        config: A full config recorded with an image; when given it is used instead of ``base_config``
            (regenerating an image made with a configured instance).
    """
    if is_scheduler_instance(scheduler):
        return type(scheduler).from_config(dict(scheduler.config))
    name = check_scheduler_name(scheduler)
    source = dict(config) if config is not None else dict(base_config)
    if name in SCHEDULERS:
        import diffusers

        class_name, overrides = SCHEDULERS[name]
        return getattr(diffusers, class_name).from_config(source, **overrides)
    return _scheduler_class(name).from_config(source)


def scheduler_fields(scheduler: Any) -> dict[str, Any]:
    """``scheduler`` and ``scheduler_config`` of a settings dataclass for a name or an instance (checked)."""
    return {"scheduler": check_scheduler_name(scheduler), "scheduler_config": scheduler_config_of(scheduler)}
