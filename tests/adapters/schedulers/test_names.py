"""Short scheduler names build the same scheduler as diffusers' ``from_config``, without its import of every other
scheduler (issue 30 item 4: ``scipy.stats`` and a dozen scheduler modules at start-up)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch

from multidiffusion.adapters.families.toy import SCHEDULER_CONFIG
from multidiffusion.adapters.schedulers.names import SCHEDULERS, from_config_directly, make_scheduler

SD15 = {  # runwayml/stable-diffusion-v1-5's scheduler_config.json
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SDXL = {  # SDXL base's, with a key its defaults filled in
    **SD15,
    "_class_name": "EulerDiscreteScheduler",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "timestep_spacing": "trailing",
    "use_karras_sigmas": False,
    "_use_default_values": ["timestep_spacing"],
}
SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0", "num_train_timesteps": 1000}
CONFIGS = {"toy": dict(SCHEDULER_CONFIG), "sd15": SD15, "sdxl": SDXL, "sd3": {**SD3, "shift": 3.0}}


def _state(scheduler: Any) -> tuple[Any, ...]:
    scheduler.set_timesteps(12)
    sigmas = getattr(scheduler, "sigmas", None)
    return type(scheduler), dict(scheduler.config), scheduler.timesteps.tolist(), None if sigmas is None else sigmas


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_short_name_builds_what_from_config_builds(name: str, config_name: str) -> None:
    import diffusers

    config = CONFIGS[config_name]
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    try:
        expected = cls.from_config(dict(config), **overrides)
    except Exception as exc:  # a pairing diffusers refuses is refused the same way
        with pytest.raises(type(exc)):
            from_config_directly(cls, config, overrides)
        return
    got = from_config_directly(cls, config, overrides)
    want_state, got_state = _state(expected), _state(got)
    assert got_state[:3] == want_state[:3]
    if want_state[3] is not None:
        assert torch.equal(got_state[3], want_state[3])


def test_make_scheduler_uses_the_models_config_and_the_short_names_overrides() -> None:
    scheduler = make_scheduler("pndm", SD15)
    assert type(scheduler).__name__ == "PNDMScheduler"
    assert scheduler.config.skip_prk_steps is True and scheduler.config.beta_schedule == "scaled_linear"
    assert dict(scheduler.config)["_class_name"] == "PNDMScheduler"


@pytest.mark.heavy
def test_the_toy_models_scheduler_does_not_import_scipy() -> None:
    """What the toy command's scheduler costs at start-up: diffusers itself, but no other scheduler's module."""
    code = textwrap.dedent(
        """
        import sys
        from multidiffusion.adapters.families.toy import SCHEDULER_CONFIG
        from multidiffusion.adapters.schedulers.names import make_scheduler
        scheduler = make_scheduler("ddim", SCHEDULER_CONFIG)
        heavy = sorted(m for m in sys.modules if m.startswith("scipy.stats") or m.endswith("scheduling_heun_discrete"))
        print(type(scheduler).__name__, heavy)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["DDIMScheduler", "[]"], done.stdout + done.stderr
