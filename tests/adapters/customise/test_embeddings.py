"""Textual-inversion embeddings on tiny random models: a trigger word changes the encoding only where a prompt has
it, equals diffusers' load_textual_inversion, SDXL's two-encoder files, and bad input as one line.

Each test loads into a model of its own (loading adds tokens to the tokenizer and rows to the embedding matrix).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from multidiffusion.adapters.customise.embeddings import (
    EmbeddingSpec,
    ExpandingEncoder,
    TriggerExpansion,
    load_embeddings,
)
from multidiffusion.core.errors import InvalidInputError
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.tiny_lora import save_embedding
from tests.helpers.tiny_models import loaded, make_components
from tests.helpers.tiny_sdxl import HIDDEN, make_sdxl_components, sdxl_pipeline

WIDTH = 32  # the tiny SD text encoder's hidden size
# Relative to max|expected| (tests/helpers/numerics.py): ours and diffusers put the same vectors in the same embedding
# rows and run the same encoder; worst measured 0, so 1e-4 is the brief's bound.
REL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (shared fixture)."""


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_components(tmp_path_factory.mktemp("emb-sd"), seed=4, sample_size=16)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_sdxl_components(tmp_path_factory.mktemp("emb-sdxl"), seed=4)


def _sd_model(sd: dict[str, Any]):
    return loaded(copy.deepcopy(sd))


def _sd_reference(sd: dict[str, Any]) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **copy.deepcopy(sd), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def _sdxl_model(c: dict[str, Any]):
    from multidiffusion.adapters.families.sdxl import from_components

    c = copy.deepcopy(c)
    keys = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    return from_components("tiny-sdxl", *(c[k] for k in keys), c["scheduler"].config)


# --- parsing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "token"),
    [
        ("EasyNegative.safetensors", "EasyNegative.safetensors", "EasyNegative"),
        ("dir/style.pt", "dir/style.pt", "style"),
        ("dir/style.safetensors:<my-style>", "dir/style.safetensors", "<my-style>"),
        ("C:\\emb\\x.pt", "C:\\emb\\x.pt", Path("C:\\emb\\x.pt").stem),  # x where \\ is a separator
        ("C:\\emb\\x.pt:xtok", "C:\\emb\\x.pt", "xtok"),
        ("a:b.safetensors", "a:b.safetensors", "a:b"),
    ],
)
def test_spec_parse(text, path, token):
    spec = EmbeddingSpec.parse(text)
    assert (spec.path, spec.token) == (path, token)


def test_spec_parse_keeps_an_existing_file_with_a_colon(tmp_path):
    path = tmp_path / "odd:name"
    path.write_bytes(b"")
    assert EmbeddingSpec.parse(str(path)) == EmbeddingSpec(str(path), "odd:name")


def test_spec_label_names_the_file_not_its_folder():
    assert EmbeddingSpec.parse("/home/me/emb/style.safetensors:sty").label == "style.safetensors:sty"


def test_trigger_expansion_is_case_insensitive_and_longest_first():
    expand = TriggerExpansion()
    expand.vectors.update({"Sty": 3, "Sty2": 2, "one": 1})
    assert expand("a sty and STY2 and one") == "a Sty Sty_1 Sty_2 and Sty2 Sty2_1 and one"


# --- loading -------------------------------------------------------------------------------------------------------


def test_token_changes_the_encoding_only_where_a_prompt_has_it(sd, tmp_path):
    model = _sd_model(sd)
    prompts = ["a cat on a wall", "a mystyle cat on a wall"]
    base = model.encode_prompts(prompts)
    assert load_embeddings(
        model, [EmbeddingSpec.parse(str(save_embedding(tmp_path / "mystyle.safetensors", 3, WIDTH)))]
    ) == ("mystyle",)
    after = model.encode_prompts(prompts)
    assert torch.equal(after[0], base[0])
    assert (after[1] - base[1]).abs().max() > 0.1 * base[1].abs().max()
    limit = model.prompt_limits[0]
    assert limit.count("a mystyle cat") == limit.count("a  cat") + 3  # three vectors: three tokens


@pytest.mark.parametrize(
    ("vectors", "key"),
    [(3, "emb_params"), (1, "<tok>")],
    ids=["a1111-3-vectors", "diffusers-1-vector"],
)
def test_encoding_matches_diffusers(sd, tmp_path, vectors, key):
    """A lowercase token, as diffusers' prompt expansion finds it: ours ≡ StableDiffusionPipeline with
    load_textual_inversion and its encode_prompt."""
    file = save_embedding(tmp_path / "emb.safetensors", vectors, WIDTH, key=key)
    prompt = "a photo of sometok in the alps"
    model = _sd_model(sd)
    load_embeddings(model, [EmbeddingSpec(str(file), "sometok")])
    ref = _sd_reference(sd)
    ref.load_textual_inversion(str(file), token="sometok")
    with torch.no_grad():
        expected = ref.encode_prompt(prompt, "cpu", 1, False)[0]
    assert_close_scaled(model.encode_prompts([prompt]), expected, rel=REL, what="embedding vs diffusers")


def test_a_capitalised_token_runs_all_its_vectors(sd, tmp_path):
    """``EasyStyle`` (the file's name) in any case runs its three vectors, as diffusers does for the prompt spelled
    out. (diffusers' own expansion misses words with capitals under transformers 5 and runs the first vector only.)"""
    file = save_embedding(tmp_path / "EasyStyle.safetensors", 3, WIDTH)
    model = _sd_model(sd)
    load_embeddings(model, [EmbeddingSpec.parse(str(file))])
    ref = _sd_reference(sd)
    ref.load_textual_inversion(str(file), token="EasyStyle")
    ours = model.encode_prompts(["a EasyStyle cat", "a easystyle cat"])
    with torch.no_grad():
        expected = ref.encode_prompt("a EasyStyle EasyStyle_1 EasyStyle_2 cat", "cpu", 1, False)[0]
    assert torch.equal(ours[0], ours[1])
    assert_close_scaled(ours[:1], expected, rel=REL, what="capitalised embedding vs diffusers, spelled out")


def test_a1111_pickle_layout_with_allow_pickle(sd, tmp_path):
    """A1111's .pt layout (string_to_param) loads with allow_pickle and equals the same vectors as .safetensors."""
    from safetensors.torch import load_file

    file = save_embedding(tmp_path / "sty.safetensors", 2, WIDTH)
    vectors = load_file(str(file))["emb_params"]
    pt = tmp_path / "pickled" / "sty.pt"
    pt.parent.mkdir()
    torch.save({"string_to_param": {"*": vectors}, "name": "sty", "step": 100, "string_to_token": {"*": 265}}, pt)
    a, b = _sd_model(sd), _sd_model(sd)
    load_embeddings(a, [EmbeddingSpec.parse(str(file))])
    load_embeddings(b, [EmbeddingSpec.parse(str(pt))], allow_pickle=True)
    assert torch.equal(a.encode_prompts(["a sty cat"]), b.encode_prompts(["a sty cat"]))


def test_sdxl_two_encoder_file_matches_diffusers(sdxl, tmp_path):
    """clip_l into the first encoder, clip_g into the second, as diffusers' docs load SDXL embeddings."""
    from safetensors.torch import load_file

    file = save_embedding(tmp_path / "xlsty.safetensors", 2, (HIDDEN, HIDDEN))
    prompt = "a xlsty lake"
    model = _sdxl_model(sdxl)
    base = model.encode_prompts([prompt, "a lake"])
    load_embeddings(model, [EmbeddingSpec.parse(str(file))])
    ours = model.encode_prompts([prompt, "a lake"])

    ref = sdxl_pipeline(copy.deepcopy(sdxl))
    state = load_file(str(file))
    ref.load_textual_inversion(state["clip_l"], token="xlsty", text_encoder=ref.text_encoder, tokenizer=ref.tokenizer)
    ref.load_textual_inversion(
        state["clip_g"], token="xlsty", text_encoder=ref.text_encoder_2, tokenizer=ref.tokenizer_2
    )
    with torch.no_grad():
        embeds, _, pooled, _ = ref.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert_close_scaled(ours.prompt_embeds[:1], embeds, rel=REL, what="SDXL embedding hidden states vs diffusers")
    assert_close_scaled(ours.pooled[:1], pooled, rel=REL, what="SDXL embedding pooled vs diffusers")
    first, second = ours.prompt_embeds[0, :, :HIDDEN], ours.prompt_embeds[0, :, HIDDEN:]
    assert not torch.equal(first, base.prompt_embeds[0, :, :HIDDEN])  # clip_l landed
    assert not torch.equal(second, base.prompt_embeds[0, :, HIDDEN:])  # clip_g landed
    assert torch.equal(ours.prompt_embeds[1], base.prompt_embeds[1]) and torch.equal(ours.pooled[1], base.pooled[1])


# --- bad input -----------------------------------------------------------------------------------------------------


def _bad_specs(kind: str, tmp: Path) -> tuple[list[EmbeddingSpec], dict[str, Any]]:
    from safetensors.torch import save_file

    good = EmbeddingSpec(str(save_embedding(tmp / "good.safetensors", 2, WIDTH)), "goodtok")
    if kind == "missing":
        return [good, EmbeddingSpec(str(tmp / "nowhere.safetensors"))], {}
    if kind == "pickle":
        torch.save({"emb_params": torch.zeros(1, WIDTH)}, tmp / "p.pt")
        return [good, EmbeddingSpec(str(tmp / "p.pt"))], {}
    if kind == "not-an-embedding":
        save_file({"a": torch.zeros(2, WIDTH), "b": torch.zeros(2, WIDTH)}, str(tmp / "two.safetensors"))
        return [good, EmbeddingSpec(str(tmp / "two.safetensors"))], {}
    if kind == "other-width":
        return [good, EmbeddingSpec(str(save_embedding(tmp / "narrow.safetensors", 2, 16)))], {}
    if kind == "sdxl-file":
        return [good, EmbeddingSpec(str(save_embedding(tmp / "xl.safetensors", 2, (16, 16))))], {}
    if kind == "word-in-vocabulary":
        return [good, EmbeddingSpec(good.path, "a")], {}
    if kind == "token-twice":
        return [good, EmbeddingSpec(str(save_embedding(tmp / "g2.safetensors", 1, WIDTH)), "GoodTok")], {}
    family = kind.removeprefix("family-")
    return [good], {"family": family}


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "does not exist"),
        ("pickle", "--allow-pickle"),
        ("not-an-embedding", "not a textual-inversion embedding"),
        ("other-width", "another model family"),
        ("sdxl-file", "has no clip_g"),
        ("word-in-vocabulary", "already a token"),
        ("token-twice", "given twice"),
        ("family-sd3", "stable-diffusion, sdxl;"),
        ("family-flux", "stable-diffusion, sdxl;"),
        ("family-gaussian-field", "has no networks"),
    ],
)
def test_bad_embedding_is_one_line_and_leaves_the_model_as_it_was(kind, words, sd, tmp_path):
    model = _sd_model(sd)
    specs, changes = _bad_specs(kind, tmp_path)
    target = dataclasses.replace(model, **changes) if changes else model
    vocabulary = len(model.components["tokenizer"])
    base = model.encode_prompts(["a goodtok cat"])
    with pytest.raises(InvalidInputError) as info:
        load_embeddings(target, specs)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert len(model.components["tokenizer"]) == vocabulary
    assert torch.equal(model.encode_prompts(["a goodtok cat"]), base)
    assert not isinstance(model.encode_prompts, ExpandingEncoder)


def test_sd_file_on_sdxl_is_refused(sdxl, tmp_path):
    model = _sdxl_model(sdxl)
    file = save_embedding(tmp_path / "sd.safetensors", 2, HIDDEN)
    with pytest.raises(InvalidInputError, match=r"one set of vectors.*clip_l, clip_g") as info:
        load_embeddings(model, [EmbeddingSpec(str(file))])
    assert "\n" not in str(info.value)


def test_the_same_token_twice_across_calls_is_refused(sd, tmp_path):
    model = _sd_model(sd)
    load_embeddings(model, [EmbeddingSpec(str(save_embedding(tmp_path / "one.safetensors", 2, WIDTH)))])
    with pytest.raises(InvalidInputError, match="already a token"):
        load_embeddings(model, [EmbeddingSpec(str(save_embedding(tmp_path / "ONE.safetensors", 2, WIDTH)))])
    load_embeddings(model, [EmbeddingSpec(str(save_embedding(tmp_path / "two.safetensors", 2, WIDTH)))])
    limit = model.prompt_limits[0]
    assert limit.count("one two") == limit.count(" ") + 4  # both expansions in place, installed once


def test_the_model_records_its_embeddings_so_every_pipeline_on_it_reuses_them(sd, tmp_path):
    """The tokens live in the model's tokenizer, so the record of them lives with the model (``model.state``): a second
    pipeline on the same model reuses them instead of loading the file again (which would be refused)."""
    from multidiffusion.pipeline import MultiDiffusionPipeline
    from multidiffusion.pipeline.customise.customisation import Customisation

    model = _sd_model(sd)
    file = save_embedding(tmp_path / "shiny.safetensors", 2, WIDTH)
    load_embeddings(model, [EmbeddingSpec(str(file))])
    assert model.state.embeddings == {"shiny": file.resolve()}
    custom = Customisation(embeddings=(EmbeddingSpec(str(file)),))
    run = dict(height=128, width=128, num_inference_steps=1, output_type="latent", progress=False)
    first, second = MultiDiffusionPipeline(model), MultiDiffusionPipeline(model)
    a = first("a shiny hill", generator=torch.Generator().manual_seed(1), customise=custom, **run).latents
    b = second("a shiny hill", generator=torch.Generator().manual_seed(1), customise=custom, **run).latents
    assert torch.equal(a, b)
