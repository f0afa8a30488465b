"""LoRA files on tiny random models: equality with diffusers' own LoRA loading, bit-exact switching (none active ≡
no LoRA loaded; A → B → A ≡ A), unloading, and bad input as one line.

Every model here is built for this module (never the suite's shared fixtures): loading a LoRA changes the networks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from multidiffusion.adapters.customise.host import diffusers_host
from multidiffusion.adapters.customise.lora import LoraSpec, LoraSwitch
from multidiffusion.core.errors import InvalidInputError
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.tiny_lora import family_model_with_lora, save_lora
from tests.helpers.tiny_models import loaded, make_components
from tests.helpers.tiny_sdxl import make_sdxl_components, sdxl_pipeline

PROMPT = "a photo of the dolomites"
SCALE = 0.7
# Relative to max|expected| (tests/helpers/numerics.py). Ours and diffusers run the same peft layers on the same
# weights; they
# differ only in where the scale enters (set_adapters' s · α/r vs cross_attention_kwargs' (α/r) · s, lora_scale):
# worst measured 0 (SD and SDXL, denoiser and encodings), so 1e-4 is the brief's bound, not a measured one.
REL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (shared fixture)."""


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_components(tmp_path_factory.mktemp("lora-sd"), seed=3, sample_size=16)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_sdxl_components(tmp_path_factory.mktemp("lora-sdxl"), seed=3)


@pytest.fixture(scope="module")
def files(sd: dict[str, Any], sdxl: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``a``: UNet + text encoder; ``b``: UNet only (another seed); ``xl``: an SDXL LoRA (UNet, both encoders)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    folder = tmp_path_factory.mktemp("loras")
    return {
        "a": str(save_lora(StableDiffusionPipeline, sd, folder / "a.safetensors", seed=0)),
        "b": str(save_lora(StableDiffusionPipeline, sd, folder / "b.safetensors", seed=1, text_encoders=())),
        "xl": str(
            save_lora(
                StableDiffusionXLPipeline,
                sdxl,
                folder / "xl.safetensors",
                text_encoders=("text_encoder", "text_encoder_2"),
            )
        ),
    }


def _sd_model(sd: dict[str, Any]):
    """A model on a private copy of the components (LoRAs change the networks)."""
    return loaded(copy.deepcopy(sd))


def _sdxl_model(c: dict[str, Any]):
    from multidiffusion.adapters.families.sdxl import from_components

    c = copy.deepcopy(c)
    keys = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    return from_components("tiny-sdxl", *(c[k] for k in keys), c["scheduler"].config)


def _latent(channels: int = 4, size: int = 16) -> torch.Tensor:
    return torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(5))


T = torch.tensor([601])


def _outputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt encoding (1, 77, D), the denoiser's output on a fixed latent with it)."""
    cond = model.encode_prompts([PROMPT])
    return cond, model.denoiser(_latent(), T, [cond])


# --- parsing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "scale"),
    [
        ("x.safetensors", "x.safetensors", 1.0),
        ("dir/x.safetensors:0.7", "dir/x.safetensors", 0.7),
        ("x.safetensors:-1.5", "x.safetensors", -1.5),
        ("x.safetensors:1e-1", "x.safetensors", 0.1),
        ("C:\\loras\\x.safetensors", "C:\\loras\\x.safetensors", 1.0),
        ("C:\\loras\\x.safetensors:2", "C:\\loras\\x.safetensors", 2.0),
        ("a:b.safetensors", "a:b.safetensors", 1.0),
    ],
)
def test_spec_parse(text, path, scale):
    assert LoraSpec.parse(text) == LoraSpec(path, scale)


@pytest.mark.parametrize("text", ["x.safetensors:nan", "x.safetensors:inf", "x.safetensors:-inf", ":0.5", ""])
def test_spec_parse_refuses_non_finite_scales_and_empty_paths(text):
    with pytest.raises(InvalidInputError) as info:
        LoraSpec.parse(text)
    assert "\n" not in str(info.value)


def test_spec_label_names_the_file_not_its_folder():
    assert LoraSpec.parse("/home/me/loras/style.safetensors:0.7").label == "style.safetensors:0.7"
    assert LoraSpec("style.safetensors").label == "style.safetensors:1.0"


# --- equality with diffusers ---------------------------------------------------------------------------------------


def test_sd_lora_matches_diffusers(sd, files):
    """Encoding (text-encoder LoRA) and one denoiser call (UNet LoRA) at scale 0.7, against a diffusers
    StableDiffusionPipeline with load_lora_weights and the scale as its __call__ passes it (lora_scale to
    encode_prompt, cross_attention_kwargs to the UNet)."""
    from diffusers import StableDiffusionPipeline

    model = _sd_model(sd)
    base_cond, base_out = _outputs(model)
    with LoraSwitch(model, [LoraSpec(files["a"], SCALE)]) as switch:
        switch.activate((LoraSpec(files["a"], SCALE),))
        cond, out = _outputs(model)

    ref = StableDiffusionPipeline(
        **copy.deepcopy(sd), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ref.load_lora_weights(files["a"])
    with torch.no_grad():
        ref_cond = ref.encode_prompt(PROMPT, "cpu", 1, False, lora_scale=SCALE)[0]
        ref_out = ref.unet(_latent(), T, ref_cond, cross_attention_kwargs={"scale": SCALE}).sample
    assert_close_scaled(cond, ref_cond, rel=REL, what="encoding with LoRA vs diffusers")
    assert_close_scaled(out, ref_out, rel=REL, what="denoiser with LoRA vs diffusers")
    # not vacuous: the LoRA moves both by far more than the tolerance
    assert (cond - base_cond).abs().max() > 0.1 * base_cond.abs().max()
    assert (out - base_out).abs().max() > 0.1 * base_out.abs().max()


def test_sd_one_view_generation_matches_diffusers(sd, files):
    """A whole one-view run through the package (3 DDIM steps, CFG) against StableDiffusionPipeline called with
    cross_attention_kwargs={"scale": s}."""
    from diffusers import StableDiffusionPipeline

    from multidiffusion.adapters import make_scheduler
    from multidiffusion.pipeline import MultiDiffusionPipeline

    model = _sd_model(sd)
    run = {"height": 128, "width": 128, "num_inference_steps": 3, "guidance_scale": 7.5, "output_type": "latent"}
    with LoraSwitch(model, [LoraSpec(files["a"], SCALE)]) as switch:
        switch.activate((LoraSpec(files["a"], SCALE),))
        ours = MultiDiffusionPipeline(model)(
            PROMPT, scheduler="ddim", generator=torch.Generator().manual_seed(2), progress=False, **run
        ).latents

    c = copy.deepcopy(sd)
    c["scheduler"] = make_scheduler("ddim", c["scheduler"].config)
    ref = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.load_lora_weights(files["a"])
    expected = ref(
        PROMPT, generator=torch.Generator().manual_seed(2), cross_attention_kwargs={"scale": SCALE}, **run
    ).images
    assert expected.abs().max() > 1
    assert_close_scaled(ours, expected, rel=REL, what="one view with LoRA vs diffusers")


def test_sdxl_lora_matches_diffusers(sdxl, files):
    """Both encoders' LoRAs (the concatenated hidden states and the pooled projection) and the UNet's, at scale 0.7,
    against StableDiffusionXLPipeline with load_lora_weights."""
    model = _sdxl_model(sdxl)
    x = _latent()
    with LoraSwitch(model, [LoraSpec(files["xl"])]) as switch:
        switch.activate((LoraSpec(files["xl"], SCALE),))
        cond = model.encode_prompts([PROMPT])
        out = model.denoiser(x, T, [cond])
        active = switch.active

    ref = sdxl_pipeline(copy.deepcopy(sdxl))
    ref.load_lora_weights(files["xl"])
    with torch.no_grad():
        embeds, _, pooled, _ = ref.encode_prompt(
            PROMPT, device="cpu", do_classifier_free_guidance=False, lora_scale=SCALE
        )
        time_ids = torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]])
        ref_out = ref.unet(
            x,
            T,
            embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            cross_attention_kwargs={"scale": SCALE},
        ).sample
    assert active == {"lora0": SCALE}
    assert_close_scaled(cond.prompt_embeds, embeds, rel=REL, what="SDXL hidden states with LoRA vs diffusers")
    assert_close_scaled(cond.pooled, pooled, rel=REL, what="SDXL pooled with LoRA vs diffusers")
    assert_close_scaled(out, ref_out, rel=REL, what="SDXL denoiser with LoRA vs diffusers")
    base = _sdxl_model(sdxl).encode_prompts([PROMPT])
    assert (cond.pooled - base.pooled).abs().max() > 0.1 * base.pooled.abs().max()  # text_encoder_2's LoRA ran


# --- switching -----------------------------------------------------------------------------------------------------


def test_switching_is_bit_exact(sd, files):
    """None active ≡ no LoRA loaded, bit for bit (diffusers' disable_lora: peft returns the base layer's output); A →
    B → A ≡ A; B (no text-encoder weights) leaves the encoding bit-identical; close() restores the model."""
    model = _sd_model(sd)
    base = _outputs(model)
    a, b = LoraSpec(files["a"], SCALE), LoraSpec(files["b"], 1.3)
    switch = LoraSwitch(model, [a, b])
    assert all(torch.equal(x, y) for x, y in zip(_outputs(model), base, strict=True)), "loaded, none active"
    switch.activate(())
    assert switch.switches == 0  # none was active already

    switch.activate((a,))
    first_a = _outputs(model)
    assert not torch.equal(first_a[1], base[1])
    switch.activate((a,))
    assert switch.switches == 1  # a repeat is no switch

    switch.activate((b,))
    only_b = _outputs(model)
    assert torch.equal(only_b[0], base[0]), "b has no text-encoder weights: a's must be off there"
    assert not torch.equal(only_b[1], first_a[1])

    switch.activate((a,))
    assert all(torch.equal(x, y) for x, y in zip(_outputs(model), first_a, strict=True)), "A → B → A"

    switch.activate((a, b))
    both = _outputs(model)
    switch.activate((b, a))  # the same set in another order
    assert switch.switches == 4
    assert not torch.equal(both[1], first_a[1])

    switch.activate(())
    assert all(torch.equal(x, y) for x, y in zip(_outputs(model), base, strict=True)), "none active after switching"
    switch.activate((LoraSpec(files["a"], 0.0),))  # scale 0 is none
    assert switch.switches == 5 and switch.active == {}

    switch.close()
    assert all(torch.equal(x, y) for x, y in zip(_outputs(model), base, strict=True)), "after close"
    from peft.tuners.tuners_utils import BaseTunerLayer

    networks = (model.components["unet"], model.components["text_encoder"])
    assert not any(isinstance(m, BaseTunerLayer) for net in networks for m in net.modules())
    assert model.state.lora_switch is None
    switch.close()  # twice is fine


def test_same_file_twice_loads_once_and_adds_scales(sd, files):
    model = _sd_model(sd)
    with LoraSwitch(model, [LoraSpec(files["a"], 0.5), LoraSpec(files["a"], 0.2)]) as switch:
        assert switch.host.get_list_adapters() == {"unet": ["lora0"], "text_encoder": ["lora0"]}
        switch.activate((LoraSpec(files["a"], 0.5), LoraSpec(files["a"], 0.2)))
        twice = _outputs(model)
        assert switch.active == {"lora0": pytest.approx(0.7)}
        switch.activate((LoraSpec(files["a"], 0.7),))
        once = _outputs(model)
    assert_close_scaled(twice[1], once[1], rel=1e-6, what="0.5 + 0.2 vs 0.7")


def test_activate_refuses_a_lora_not_loaded(sd, files):
    model = _sd_model(sd)
    with LoraSwitch(model, [LoraSpec(files["a"])]) as switch, pytest.raises(InvalidInputError, match="not among"):
        switch.activate((LoraSpec(files["b"]),))


def test_pickled_lora_loads_with_allow_pickle(sd, files, tmp_path):
    """The same tensors saved with torch.save load as .ckpt with allow_pickle and run as a .safetensors file of them
    (both without the adapter metadata, which only safetensors files carry: α defaults to the rank there)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(files["a"])
    plain, ckpt = tmp_path / "plain.safetensors", tmp_path / "a.ckpt"
    save_file(tensors, str(plain))
    torch.save(tensors, ckpt)
    model = _sd_model(sd)
    with LoraSwitch(model, [LoraSpec(str(plain))]) as switch:
        switch.activate((LoraSpec(str(plain)),))
        expected = _outputs(model)
    with LoraSwitch(model, [LoraSpec(str(ckpt))], allow_pickle=True) as switch:
        switch.activate((LoraSpec(str(ckpt)),))
        assert all(torch.equal(x, y) for x, y in zip(_outputs(model), expected, strict=True))


def test_no_lora_and_after_close(sd, files):
    """An empty switch is a no-op; a switch names a file by any spelling of its path; a closed switch refuses."""
    model = _sd_model(sd)
    base = _outputs(model)
    with LoraSwitch(model, []) as switch:
        switch.activate(())
        assert switch.switches == 0
    assert all(torch.equal(x, y) for x, y in zip(_outputs(model), base, strict=True))
    a = Path(files["a"])
    other_spelling = str(a.parent / ".." / a.parent.name / a.name)
    with LoraSwitch(model, [LoraSpec(files["a"])]) as switch:
        switch.activate((LoraSpec(other_spelling),))
        assert switch.active == {"lora0": 1.0}
    with pytest.raises(RuntimeError, match="closed"):
        switch.activate(())


def test_a_second_switch_on_one_model_is_refused(sd, files):
    model = _sd_model(sd)
    with LoraSwitch(model, [LoraSpec(files["a"])]), pytest.raises(RuntimeError, match="already"):
        LoraSwitch(model, [LoraSpec(files["b"])])


# --- other families: the generic host ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_transformer_families_switch_bit_exact(family, tmp_path):
    """SD 3 and Flux through the same generic host: a one-view run changes with the LoRA active and is bit-identical
    to the run without any LoRA when none is active and after close()."""
    from multidiffusion.pipeline import MultiDiffusionPipeline

    model, file = family_model_with_lora(family, tmp_path)
    assert type(diffusers_host(model)).__name__ == {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[family]

    def run() -> torch.Tensor:
        pipe = MultiDiffusionPipeline(model)
        gen = torch.Generator().manual_seed(4)
        return pipe("a lake", height=128, width=128, num_inference_steps=2, generator=gen, output_type="latent").latents

    base = run()
    with LoraSwitch(model, [LoraSpec(str(file))]) as switch:
        assert torch.equal(run(), base)
        switch.activate((LoraSpec(str(file), SCALE),))
        with_lora = run()
        switch.activate(())
        assert torch.equal(run(), base)
    assert (with_lora - base).abs().max() > 1e-3 * base.abs().max()
    assert torch.equal(run(), base)


# --- bad input -----------------------------------------------------------------------------------------------------


def _bad_file(kind: str, files: dict[str, str], tmp: Path) -> str:
    from safetensors.torch import save_file

    if kind == "missing":
        return str(tmp / "nowhere.safetensors")
    if kind == "pickle":
        path = tmp / "a.ckpt"
        torch.save({"x": torch.zeros(1)}, path)
        return str(path)
    if kind == "not-a-lora":
        path = tmp / "weights.safetensors"
        save_file({"conv.weight": torch.zeros(2, 2)}, str(path))
        return str(path)
    if kind == "no-such-layer":
        path = tmp / "elsewhere.safetensors"
        save_file(
            {"unet.nowhere.lora_A.weight": torch.zeros(4, 8), "unet.nowhere.lora_B.weight": torch.zeros(8, 4)},
            str(path),
        )
        return str(path)
    if kind == "folder":
        return str(tmp)
    if kind == "text":
        path = tmp / "notes.txt"
        path.write_text("hello")
        return str(path)
    return files["xl"]  # an SDXL LoRA on the SD model


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "does not exist"),
        ("pickle", "--allow-pickle"),
        ("not-a-lora", "not a LoRA file"),
        ("no-such-layer", "does not fit"),
        ("folder", "folder"),
        ("text", "not a weights file"),
        ("other-family", "does not fit"),
    ],
)
def test_bad_lora_is_one_line_and_leaves_the_model_as_it_was(kind, words, sd, files, tmp_path):
    model = _sd_model(sd)
    base = _outputs(model)
    path = _bad_file(kind, files, tmp_path)
    with pytest.raises(InvalidInputError) as info:
        LoraSwitch(model, [LoraSpec(files["a"]), LoraSpec(path)])  # a good file first: nothing may stay loaded
    message = str(info.value)
    assert words in message and "\n" not in message
    assert all(torch.equal(x, y) for x, y in zip(_outputs(model), base, strict=True))
    assert model.state.lora_switch is None


def test_sdxl_lora_whose_layers_partly_fit_is_refused(sd, sdxl, tmp_path):
    """An SDXL LoRA on the UNet alone: its attention layers have SD's shapes here, but some are not in SD's UNet
    (diffusers only warns and loads the rest)."""
    from diffusers import StableDiffusionXLPipeline

    path = save_lora(StableDiffusionXLPipeline, sdxl, tmp_path / "xl-unet.safetensors", text_encoders=())
    model = _sd_model(sd)
    with pytest.raises(InvalidInputError, match="does not fit") as info:
        LoraSwitch(model, [LoraSpec(str(path))])
    assert "\n" not in str(info.value)


def test_toy_model_takes_no_lora(files):
    from multidiffusion.adapters import load_model

    with pytest.raises(InvalidInputError) as info:
        LoraSwitch(load_model("toy"), [LoraSpec(files["a"])])
    message = str(info.value)
    assert "\n" not in message and "gaussian-field model has no networks" in message
    assert all(name in message for name in ("stable-diffusion", "sdxl", "sd3", "flux"))
