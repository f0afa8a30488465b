"""Diffusers schedulers: by short name, by class name, or as an instance the user configured."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from multidiffusion.core.errors import InvalidInputError

# short name -> (diffusers class, config overrides). The flow_* names are for flow-matching models (SD 3, Flux):
# their configs are FlowMatchEuler ones, and the multistep solvers run on flow sigmas with the model's shift.
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
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "flow_heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "flow_dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "use_flow_sigmas": True,
            "prediction_type": "flow_prediction",
        },
    ),
    "flow_unipc": ("UniPCMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}
FLOW_NAMES: tuple[str, ...] = tuple(name for name in SCHEDULERS if name.startswith("flow_"))
DIFFUSION_NAMES: tuple[str, ...] = tuple(name for name in SCHEDULERS if name not in FLOW_NAMES)
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)
SCHEDULER_HELP = (
    f"one of: {', '.join(DIFFUSION_NAMES)} (SD 1.x/2.x, SDXL); "
    f"{', '.join(FLOW_NAMES)} (SD 3, Flux); or any diffusers scheduler class name (e.g. KDPM2DiscreteScheduler)"
)


def is_flow_config(config: Mapping[str, Any]) -> bool:
    """Whether a scheduler config is a flow-matching one (x_t = (1 − σ) x₀ + σ ε; SD 3, Flux)."""
    return str(config.get("_class_name", "")).startswith("FlowMatch") or bool(config.get("use_flow_sigmas"))


def is_flow_scheduler(scheduler: Any, base_config: Mapping[str, Any]) -> bool:
    """Whether ``scheduler`` (a name, class name or instance) would run as a flow-matching scheduler."""
    if is_scheduler_instance(scheduler):
        return is_flow_config(dict(scheduler.config))
    if scheduler in SCHEDULERS:
        class_name, overrides = SCHEDULERS[scheduler]
        return is_flow_config({"_class_name": class_name, **overrides})
    if str(scheduler).startswith("FlowMatch"):
        return True
    return is_flow_config({**base_config, "_class_name": scheduler})


def check_scheduler_fits(
    scheduler: Any, base_config: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> None:
    """A flow-matching model needs a flow-matching scheduler and a diffusion model a diffusion one: the other kind
    would read the model's timesteps on the wrong scale and return noise. ``config``: a recorded instance's full
    config (decides instead of the name)."""
    model_flow = is_flow_config(base_config)
    flow = is_flow_config(config) if config is not None else is_flow_scheduler(scheduler, base_config)
    if flow == model_flow:
        return
    label = scheduler_label(scheduler)
    if model_flow:
        raise InvalidInputError(
            f"scheduler {label!r} is for noise-prediction models; this model is flow-matching: choose one of "
            f"{', '.join(FLOW_NAMES)} (or a FlowMatch* diffusers class)"
        )
    others = ", ".join(DIFFUSION_NAMES)
    raise InvalidInputError(
        f"scheduler {label!r} is for flow-matching models (SD 3, Flux); this model is a noise-prediction one: "
        f"choose one of {others}"
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
        if overrides.get("use_flow_sigmas"):  # the model's shift carries over to the multistep solver
            overrides = {**overrides, "flow_shift": float(source.get("shift", source.get("flow_shift", 1.0)))}
        return from_config_directly(getattr(diffusers, class_name), source, overrides)
    return _scheduler_class(name).from_config(source)


def from_config_directly(cls: type, config: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
    """``cls.from_config(config, **overrides)`` for a scheduler class without deprecated arguments, built without
    importing every other scheduler.

    diffusers' ``from_config`` imports each class "compatible" with ``cls`` only to leave their keys out of a warning
    (and Heun's and DEIS's modules load ``scipy.stats``): a second of start-up for nothing the run uses. The instance
    is the same: ``__init__`` gets the keys of its signature (an override wins over the config, and keys the config
    lists in ``_use_default_values`` are left to their defaults), and the rest of the config is registered as hidden
    keys with ``_class_name`` set to ``cls``, as ``from_config`` does (tests/adapters/schedulers/test_names.py compares
    the two for every short name).
    """
    if getattr(cls, "_deprecated_kwargs", None):  # from_config routes those; keep its logic for such classes
        return cls.from_config(dict(config), **overrides)
    defaults = set(config.get("_use_default_values", ()))
    given = {k: v for k, v in config.items() if k not in defaults and k != "_use_default_values"}
    expected = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", *cls.ignore_for_config}
    init = {k: overrides[k] if k in overrides else given[k] for k in expected if k in overrides or k in given}
    scheduler = cls(**init)
    hidden = {k: v for k, v in given.items() if k not in init}
    if "_class_name" in hidden:
        hidden["_class_name"] = cls.__name__
    scheduler.register_to_config(**hidden)
    return scheduler


def scheduler_fields(scheduler: Any) -> dict[str, Any]:
    """``scheduler`` and ``scheduler_config`` of a settings dataclass for a name or an instance (checked)."""
    return {"scheduler": check_scheduler_name(scheduler), "scheduler_config": scheduler_config_of(scheduler)}


def checked_scheduler_fields(scheduler: Any, model_config: Mapping[str, Any], steps: int) -> dict[str, Any]:
    """:func:`scheduler_fields` of ``scheduler`` (a name, class name or instance), checked once against the model's
    scheduler config: the same kind (flow-matching or not) and at most the steps it can run."""
    fields = scheduler_fields(scheduler)
    check_scheduler_fits(fields["scheduler"], model_config, fields["scheduler_config"])
    check_scheduler_steps(fields["scheduler"], model_config, steps, fields["scheduler_config"])
    return fields


FEW_STEP_CLASSES: tuple[str, ...] = ("LCMScheduler", "TCDScheduler", "FlowMatchLCMScheduler")


def is_few_step_config(config: Mapping[str, Any]) -> bool:
    """Whether a model's scheduler config is a few-step (distilled) model's: an LCM/TCD scheduler, or ``trailing``
    timestep spacing, which SD-Turbo, SDXL-Turbo and SDXL-Lightning ship so that 1–4 steps start at pure noise."""
    return config.get("_class_name") in FEW_STEP_CLASSES or config.get("timestep_spacing") == "trailing"


def default_scheduler_for(config: Mapping[str, Any], otherwise: str) -> str:
    """A model's default scheduler: the class its config names for a few-step model, else ``otherwise``."""
    name = config.get("_class_name")
    return str(name) if is_few_step_config(config) and _scheduler_class(str(name)) is not None else otherwise


STEP_LIMIT_FRACTION = 0.9  # DDIM/DDPM/PNDM index past the end at T steps, the multistep solvers fail near T
STEP_BOUND_CLASSES: tuple[str, ...] = ("LCMScheduler", "TCDScheduler")  # at most the distillation's step count


def max_steps(
    scheduler: Any, base_config: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> tuple[int, str] | None:
    """(the most steps, why) ``scheduler`` (a name, class name or instance) can run on a model whose scheduler
    config is ``base_config``; None: no limit of its own (flow-matching schedulers place their sigmas freely).

    Discrete-time schedulers index the model's T training timesteps (1000): past ``STEP_LIMIT_FRACTION`` · T the
    timesteps collide or run off the end (an IndexError or non-finite latents at 999–1000 steps, tried on every
    short name; 990 run). LCM and TCD run at most the ``original_inference_steps`` they were distilled with (50).
    """
    if is_scheduler_instance(scheduler):
        source, class_name = dict(scheduler.config), type(scheduler).__name__
    else:
        source = dict(config) if config is not None else dict(base_config)
        class_name, overrides = SCHEDULERS.get(scheduler, (str(scheduler), {}))
        source = {**source, **overrides}
    if is_flow_config({**source, "_class_name": class_name}):
        return None
    if class_name in STEP_BOUND_CLASSES:
        return int(source.get("original_inference_steps") or 50), "the step count it was distilled with"
    train = int(source.get("num_train_timesteps") or 1000)
    return int(train * STEP_LIMIT_FRACTION), f"{STEP_LIMIT_FRACTION:.0%} of the model's {train} training timesteps"


def check_scheduler_steps(
    scheduler: Any, base_config: Mapping[str, Any], steps: int, config: Mapping[str, Any] | None = None
) -> None:
    """Refuse step counts the scheduler cannot run (see :func:`max_steps`), naming its limit."""
    bound = max_steps(scheduler, base_config, config)
    if bound is not None and isinstance(steps, int) and steps > bound[0]:
        raise InvalidInputError(
            f"scheduler {scheduler_label(scheduler)!r} runs at most {bound[0]} steps ({bound[1]}), got {steps}"
        )
