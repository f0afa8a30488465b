"""The family registry, few-step defaults, flow-matching schedulers and packed latents, on tiny SD components
and on files the tests write themselves (the per-family adapters have their own test files)."""

from __future__ import annotations

import json

import pytest
import torch

from multidiffusion.adapters import load_model
from multidiffusion.adapters.codecs.packed import pack, tokens, unpack, untokens
from multidiffusion.adapters.families.registry import family_of_checkpoint, family_of_model, file_families
from multidiffusion.adapters.families.sd import from_components
from multidiffusion.adapters.schedulers.names import (
    FLOW_NAMES,
    check_scheduler_fits,
    default_scheduler_for,
    is_few_step_config,
    make_scheduler,
)
from multidiffusion.core.engine.foresee import foresee_x0
from multidiffusion.core.engine.noise import initial_noise
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.spies import counted_rows
from tests.helpers.tiny_models import loaded

FLUX_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "use_dynamic_shifting": False}
# Relative to max|expected|: 2 Euler steps of the tiny UNet, one view, ours batched vs diffusers' pipeline;
# latents |x| ≈ 3; worst measured 3e-7.
REL_ONE_VIEW = 1e-4


def _turbo(small, tmp_path):
    """The small SD components as an SD-Turbo-style model: Euler with trailing spacing (what SD-Turbo ships)."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(small["scheduler"].config, timestep_spacing="trailing")
    # as a saved model's config names its class (an instance's own config names it only once it has been saved, so
    # without this the test would depend on whether an earlier test saved the small model)
    config = {**scheduler.config, "_class_name": type(scheduler).__name__}
    c = small
    return from_components("turbo", c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], config), scheduler


def test_model_index_names_the_family(small_folder, tmp_path):
    assert family_of_model(str(small_folder)).name == "stable-diffusion"
    other = tmp_path / "kandinsky"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(InvalidInputError, match="KandinskyV22Pipeline, which this tool does not run; supported: "):
        load_model(str(other))
    for family in file_families():  # the error names every family that loads files
        with pytest.raises(InvalidInputError, match=family.pipelines[0]):
            load_model(str(other))


def _safetensors(path, shapes):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    return str(path)


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        ({"model.diffusion_model.output_blocks.11.0.skip_connection.weight": (2,)}, "stable-diffusion"),
        ({"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (2,)}, "sdxl"),
        (
            {
                "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": (9216,),
                "model.diffusion_model.pos_embed": (1, 36864, 1),
            },
            "sd3",
        ),
        ({"double_blocks.0.img_attn.norm.key_norm.scale": (2,), "img_in.weight": (2, 64)}, "flux"),
        (
            {
                "double_blocks.0.img_attn.norm.key_norm.scale": (2,),
                "guidance_in.in_layer.bias": (2,),
                "img_in.weight": (2, 64),
            },
            "flux",
        ),
    ],
)
def test_checkpoint_tensor_names_name_the_family(tmp_path, shapes, family):
    assert family_of_checkpoint(_safetensors(tmp_path / "m.safetensors", shapes)).name == family


def test_unknown_checkpoint_is_one_clear_error(tmp_path):
    lora = _safetensors(tmp_path / "lora.safetensors", {"lora_unet_down.alpha": (1,)})
    with pytest.raises(InvalidInputError, match=r"no whole model this tool recognises .* supported: Stable Diffusion"):
        load_model(lora, device="cpu")
    video = _safetensors(tmp_path / "wan.safetensors", {"patch_embedding.weight": (1,), "blocks.0.ffn.0.bias": (1,)})
    with pytest.raises(InvalidInputError, match=r"which this tool does not run|no whole model"):
        load_model(video, device="cpu")


def test_few_step_configs_default_to_their_scheduler_and_no_guidance(small, tmp_path):
    turbo, _ = _turbo(small, tmp_path)
    assert turbo.default_scheduler == "EulerDiscreteScheduler"
    assert turbo.default_guidance_scale == 1.0
    plain = loaded(small)
    assert (plain.default_scheduler, plain.default_guidance_scale) == ("ddim", 7.5)
    assert is_few_step_config({"_class_name": "LCMScheduler"})
    assert default_scheduler_for({"_class_name": "LCMScheduler"}, "ddim") == "LCMScheduler"
    assert default_scheduler_for({"_class_name": "PNDMScheduler"}, "ddim") == "ddim"


@pytest.mark.float_sensitive
@pytest.mark.parametrize("guidance", [0.0, 1.0])
def test_few_step_one_view_matches_diffusers_with_one_batch(small, tmp_path, guidance):
    """SD-Turbo style: guidance ≤ 1 is the conditional output alone (diffusers' rule), one pass per view."""
    from diffusers import StableDiffusionPipeline

    model, scheduler = _turbo(small, tmp_path)
    with counted_rows(model) as calls:
        ours = MultiDiffusionPipeline(model)(
            "a red fox", height=128, width=128, num_inference_steps=2, guidance_scale=guidance,
            generator=torch.Generator().manual_seed(5), output_type="latent", progress=False,
        )  # fmt: skip
    assert ours.metadata.settings.scheduler == "EulerDiscreteScheduler"
    assert calls == [1, 1]  # one row per step: no unconditional half
    c = small
    ref = StableDiffusionPipeline(
        unet=c["unet"], vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    ref.set_progress_bar_config(disable=True)
    expected = ref(
        "a red fox", height=128, width=128, num_inference_steps=2, guidance_scale=guidance,
        generator=torch.Generator().manual_seed(5), output_type="latent",
    ).images  # fmt: skip
    assert_close_scaled(ours.latents, expected, rel=REL_ONE_VIEW, what=f"few-step one view, g={guidance}")


def test_guidance_above_one_still_runs_both_halves(small_pipe):
    with counted_rows(small_pipe.model) as calls:
        small_pipe("sky", height=128, width=128, num_inference_steps=1, guidance_scale=1.5, progress=False,
                   output_type="latent")  # fmt: skip
    assert calls == [2]


def test_flow_and_diffusion_schedulers_do_not_mix(small_pipe):
    with pytest.raises(InvalidInputError, match=r"for flow-matching models .* choose one of ddim"):
        small_pipe("sky", height=128, width=128, num_inference_steps=1, scheduler="flow_euler", progress=False)
    with pytest.raises(InvalidInputError, match="this model is flow-matching: choose one of flow_euler"):
        check_scheduler_fits("ddim", FLUX_SCHEDULER)
    with pytest.raises(InvalidInputError, match="flow-matching"):
        check_scheduler_fits("DPMSolverMultistepScheduler", FLUX_SCHEDULER)
    for name in FLOW_NAMES:
        check_scheduler_fits(name, FLUX_SCHEDULER)
    check_scheduler_fits("FlowMatchHeunDiscreteScheduler", FLUX_SCHEDULER)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_flow_schedulers_keep_the_model_shift(name):
    scheduler = make_scheduler(name, FLUX_SCHEDULER)
    scheduler.set_timesteps(8)
    shift = scheduler.config.get("shift", scheduler.config.get("flow_shift"))
    assert shift == 3.0
    sigmas = scheduler.sigmas[:-1] if hasattr(scheduler, "sigmas") else None
    assert sigmas is not None and float(sigmas.max()) <= 1.0 + 1e-6 and float(sigmas.min()) > 0


def test_packing_is_flux_pack_latents_and_noise_is_diffusers_draw():
    from diffusers import FluxPipeline
    from diffusers.utils.torch_utils import randn_tensor

    flat = randn_tensor((2, 16, 8, 12), generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    packed = initial_noise((2, 64, 4, 6), torch.Generator().manual_seed(9), "cpu", torch.float32, patch=2)
    assert torch.equal(packed, pack(flat, 2))
    assert torch.equal(unpack(packed, 2), flat)
    sequence = FluxPipeline._pack_latents(flat, 2, 16, 8, 12)  # (B, h·w, 64), diffusers' own packing
    assert torch.equal(tokens(packed), sequence)
    assert torch.equal(untokens(sequence, 4, 6), packed)


def test_foresee_recovers_x0_for_flow_matching():
    """x_t = (1 − σ) x₀ + σ ε and v = ε − x₀ give back x₀ at every step (Esser et al. 2024, Eq. 1–2)."""
    scheduler = make_scheduler("flow_euler", FLUX_SCHEDULER)
    scheduler.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])
        x_t = (1 - sigma) * x0 + sigma * eps
        assert_close_scaled(foresee_x0(scheduler, eps - x0, x_t, t), x0, rel=1e-6, what=f"x̂₀ at step {i}")
        scheduler.step(eps - x0, t, x_t)


def test_model_help_lists_the_families(capsys):
    from multidiffusion.interfaces.cli.main import main

    with pytest.raises(SystemExit):
        main(["panorama", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for family in file_families():
        assert family.title in text
