"""Prompt weighting in A1111 syntax and long prompts through compel (adapters/a1111_syntax, adapters/prompt_weighting),
on the tiny random models: the translator's table, equality with each family's own encoder for plain prompts,
where and by how much a weight moves the embedding, chunking and padding."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from multidiffusion.adapters.customise.a1111_syntax import has_weighting, literal, parse
from multidiffusion.adapters.customise.prompt_weighting import WeightedPrompts, weighted_encoder
from multidiffusion.adapters.model.loaded import PromptLimit
from multidiffusion.core.errors import InvalidInputError
from tests.helpers.numerics import assert_close_scaled

R, S = 1.1, 1 / 1.1  # (text) and [text]

TRANSLATIONS: list[tuple[str, list[list[tuple[str, float]]]]] = [
    # A1111's own doctests of parse_prompt_attention
    ("normal text", [[("normal text", 1.0)]]),
    ("an (important) word", [[("an ", 1.0), ("important", R), (" word", 1.0)]]),
    ("(unbalanced", [[("unbalanced", R)]]),
    ("\\(literal\\]", [[("(literal]", 1.0)]]),
    ("(unnecessary)(parens)", [[("unnecessaryparens", R)]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            [
                ("a ", 1.0),
                ("house", 1.3 * R * R),
                (" ", R),
                ("on", 1.0),
                (" a ", R),
                ("hill", 0.5 * R),
                (", sun, ", R),
                ("sky", R**4),
                (".", R),
            ]
        ],
    ),
    # nesting, numbers
    ("((word))", [[("word", R * R)]]),
    ("[[word]]", [[("word", S * S)]]),
    ("([word])", [[("word", 1.0)]]),
    ("(a:0.5)", [[("a", 0.5)]]),
    ("(a:.5) (b:+2) (c:-1)", [[("a", 0.5), (" ", 1.0), ("b", 2.0), (" ", 1.0), ("c", -1.0)]]),
    ("((a:1.5) b)", [[("a", 1.65), (" b", R)]]),
    ("(word:1.0)", [[("word", 1.0)]]),
    ("x (a:b) y", [[("x ", 1.0), ("a:b", R), (" y", 1.0)]]),
    # escapes, a lone backslash (dropped, as A1111 drops it)
    ("\\(a\\) \\[b\\] c\\\\d", [[("(a) [b] c\\d", 1.0)]]),
    ("a\\b", [[("ab", 1.0)]]),
    ("(\\(x\\))", [[("(x)", R)]]),
    # unbalanced: an unmatched closer is text, an unclosed opener runs to the end
    ("a) b] c", [[("a) b] c", 1.0)]]),
    ("a:1.2) b", [[("a:1.2) b", 1.0)]]),
    ("[a:1.2) b", [[("a:1.2) b", S)]]),
    ("a (b [c", [[("a ", 1.0), ("b ", R), ("c", R * S)]]),
    ("()[] x", [[(" x", 1.0)]]),
    # plain prompts: compel's operators and punctuation are text
    (
        "masterpiece++, sci-fi city--, 1.5 + 2 - 3. a.and b.blend c.swap; x: y",
        [[("masterpiece++, sci-fi city--, 1.5 + 2 - 3. a.and b.blend c.swap; x: y", 1.0)]],
    ),
    ('"quoted", a "b" c', [[('"quoted", a "b" c', 1.0)]]),
    # BREAK
    ("a BREAK b", [[("a", 1.0)], [("b", 1.0)]]),
    ("BREAK a", [[], [("a", 1.0)]]),
    ("a BREAK", [[("a", 1.0)]]),
    ("a BREAK BREAK b", [[("a", 1.0)], [], [("b", 1.0)]]),
    ("(a BREAK b)", [[("a", R)], [("b", R)]]),
    ("aBREAK b, break c", [[("aBREAK b, break c", 1.0)]]),
    ("", [[]]),
]


def as_lists(segments: Any) -> list[list[tuple[str, float]]]:
    return [[(f.text, f.weight) for f in segment] for segment in segments]


@pytest.mark.parametrize(("text", "expected"), TRANSLATIONS, ids=[t or "empty" for t, _ in TRANSLATIONS])
def test_a1111_translation(text: str, expected: list[list[tuple[str, float]]]) -> None:
    got = as_lists(parse(text))
    assert [[t for t, _ in s] for s in got] == [[t for t, _ in s] for s in expected]
    assert [[w for _, w in s] for s in got] == [[pytest.approx(w, rel=1e-12) for _, w in s] for s in expected]


def test_a1111_float_products_are_a1111s() -> None:
    """Multipliers apply in A1111's order, so even the float rounding matches its doctest."""
    weights = [f.weight for f in parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")[0]]
    assert weights == [1.0, 1.5730000000000004, 1.1, 1.0, 1.1, 0.55, 1.1, 1.4641000000000006, 1.1]


@pytest.mark.parametrize(
    ("text", "named"),
    [("(red cat:1.2.3)", "'red cat'"), ("(a:.)", "'a'"), ("x (big:" + "9" * 400 + ")", "'big'")],
)
def test_a_weight_that_is_no_finite_number_is_one_line_naming_the_fragment(text: str, named: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        parse(text)
    message = str(error.value)
    assert named in message and "\n" not in message
    assert "finite number" in message or "not a number" in message


def test_nested_weights_past_the_float_range_are_an_error() -> None:
    huge = "9" * 300
    with pytest.raises(InvalidInputError, match="'a'"):
        parse(f"((a:{huge}):{huge})")


def test_literal_and_has_weighting() -> None:
    assert literal("a (((house:1.3)) [on] a (hill:0.5), sun") == "a house on a hill, sun"
    assert literal("x BREAK y \\(z\\)") == "x y (z)"
    assert literal("plain, 1+1 sci-fi.") == "plain, 1+1 sci-fi."
    assert literal("()") == ""
    assert has_weighting("(a)") and has_weighting("[a]") and has_weighting("a BREAK b")
    assert not has_weighting("plain, 1+1 sci-fi.") and not has_weighting("(a:1.0) \\(b\\)")
    assert not has_weighting("a BREAK")  # a trailing BREAK starts no chunk


# ---------------------------------------------------------------- encoders


LONG = ", ".join(["word"] * 40)  # 199 tokens in the tiny character-level tokenizer: 3 chunks of 75


def positions(tokenizer: Any, before: str, run: str, start: int = 1) -> slice:
    """The token positions of ``run`` after ``before`` (``start``: BOS tokens before the prompt)."""
    count = len(tokenizer(before, add_special_tokens=False).input_ids) if before else 0
    size = len(tokenizer(run, add_special_tokens=False).input_ids)
    return slice(start + count, start + count + size)


def up_weighted(z: torch.Tensor, empty: torch.Tensor, where: slice, w: float) -> torch.Tensor:
    """compel's weighting at ``where``: e + (z − e) · w."""
    out = z.clone()
    out[:, where] = empty[:, where] + (z[:, where] - empty[:, where]) * w
    return out


@pytest.fixture(scope="module")
def sd(small: dict[str, Any], one_thread: None) -> tuple[Any, WeightedPrompts]:
    from tests.helpers.tiny_models import loaded

    pytest.importorskip("compel")
    model = loaded(small)
    weighted = weighted_encoder(model)
    assert weighted is not None
    return model, weighted


@pytest.fixture(scope="module")
def sdxl_parts(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    from tests.helpers.tiny_sdxl import make_sdxl_components

    return make_sdxl_components(tmp_path_factory.mktemp("sdxl-weighting"))


def sdxl_model(c: dict[str, Any], zeros: bool = True) -> Any:
    from multidiffusion.adapters.families import sdxl

    parts = [c[k] for k in ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")]
    return sdxl.from_components("tiny-sdxl", *parts, c["scheduler"].config, force_zeros_for_empty_prompt=zeros)


@pytest.fixture(scope="module")
def xl(sdxl_parts: dict[str, Any]) -> tuple[Any, WeightedPrompts]:
    pytest.importorskip("compel")
    model = sdxl_model(sdxl_parts)
    weighted = weighted_encoder(model)
    assert weighted is not None
    return model, weighted


@pytest.mark.parametrize(
    ("weighted_text", "plain_text"),
    [("a cat", "a cat"), ("", ""), ("(a cat:1.0)", "a cat"), ("1+1, sci-fi. x-y z.and()", "1+1, sci-fi. x-y z.and")],
)
def test_sd_plain_prompt_is_the_familys_own_encoding(sd: Any, weighted_text: str, plain_text: str) -> None:
    model, weighted = sd
    assert torch.equal(weighted.encode([weighted_text]), model.encode_prompts([plain_text]))


def test_sd_batch_of_plain_prompts(sd: Any) -> None:
    model, weighted = sd
    texts = ["a cat on a mat", "x", ""]
    assert_close_scaled(weighted.encode(texts), model.encode_prompts(texts), rel=1e-5, what="plain batch")


def test_sd_up_weight_moves_only_its_tokens_by_compels_formula(sd: Any) -> None:
    model, weighted = sd
    z = model.encode_prompts(["a cat sits"])
    empty = model.encode_prompts([""])
    where = positions(model.components["tokenizer"], "a ", "cat")
    got = weighted.encode(["a (cat:1.5) sits"])
    assert torch.equal(got[:, : where.start], z[:, : where.start])
    assert torch.equal(got[:, where.stop :], z[:, where.stop :])
    assert (got[:, where] - z[:, where]).abs().amax(-1).min() > 0
    assert_close_scaled(got, up_weighted(z, empty, where, 1.5), rel=1e-6, what="e + (z − e)·1.5")
    # A1111's (cat) is 1.1
    assert_close_scaled(weighted.encode(["a (cat) sits"]), up_weighted(z, empty, where, 1.1), rel=1e-6, what="×1.1")


@pytest.mark.parametrize("w", [0.5, 0.8])
def test_sd_down_weight_blends_with_the_run_masked_out(sd: Any, w: float) -> None:
    """compel's w < 1: (z_w + t · z_w,masked) / (1 + t), t = tan((1 − w)·π/2); causal CLIP keeps what comes before."""
    model, weighted = sd
    tokenizer, encoder = model.components["tokenizer"], model.components["text_encoder"]
    ids = tokenizer(["a cat sits"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    where = positions(tokenizer, "a ", "cat")
    mask = torch.ones_like(ids)
    mask[:, where] = 0
    with torch.no_grad():
        z = encoder(ids)[0]
        masked = encoder(ids, attention_mask=mask)[0]
    empty = model.encode_prompts([""])
    t = math.tan((1 - w) * math.pi / 2)
    expected = (up_weighted(z, empty, where, w) + t * up_weighted(masked, empty, where, w)) / (1 + t)
    got = weighted.encode([f"a (cat:{w}) sits"])
    assert_close_scaled(got, expected, rel=1e-5, what=f"compel's down-weighting at {w}")
    assert_close_scaled(got[:, : where.start], z[:, : where.start], rel=1e-6, what="before the run")
    assert (got[:, where.stop :] - z[:, where.stop :]).abs().amax(-1).min() > 0  # every later position moves


def test_sd_long_prompt_is_chunked_not_cut(sd: Any) -> None:
    model, weighted = sd
    tokens = len(model.components["tokenizer"](LONG).input_ids)
    assert 2 * 77 < tokens <= 3 * 75 + 2
    got = weighted.encode([LONG])
    assert got.shape == (1, 3 * 77, 32)
    changed = weighted.encode([LONG[: -len("word")] + "cat"])  # the last word reaches the embedding
    assert torch.equal(changed[:, :154], got[:, :154]) and not torch.equal(changed[:, 154:], got[:, 154:])
    assert torch.equal(model.encode_prompts([LONG]), model.encode_prompts([LONG[: -len("word")] + "cat"]))  # cut


def test_sd_same_length_pads_with_the_empty_prompts_chunk(sd: Any) -> None:
    model, weighted = sd
    empty = model.encode_prompts([""])
    long, short = weighted.encode([LONG]), model.encode_prompts(["ugly"])
    padded = weighted.same_length([long, short])
    assert [p.shape[1] for p in padded] == [231, 231]
    assert torch.equal(padded[0], long) and torch.equal(padded[1][:, :77], short)
    assert torch.equal(padded[1][:, 77:154], empty) and torch.equal(padded[1][:, 154:], empty)
    # one batch of prompts of different lengths is padded alike
    batch = weighted.encode(["ugly", LONG])
    assert batch.shape == (2, 231, 32) and torch.equal(batch[0], padded[1][0]) and torch.equal(batch[1], long[0])


def test_sd_break_starts_a_new_chunk(sd: Any) -> None:
    model, weighted = sd
    got = weighted.encode(["a cat BREAK on a mat"])
    assert got.shape == (1, 154, 32)
    assert torch.equal(got[:, :77], model.encode_prompts(["a cat"]))
    assert torch.equal(got[:, 77:], model.encode_prompts(["on a mat"]))


def test_sd_bad_weight_through_the_encoder(sd: Any) -> None:
    with pytest.raises(InvalidInputError, match="'cat'"):
        sd[1].encode(["a (cat:1.2.3)"])


@pytest.mark.parametrize(
    ("weighted_text", "plain_text"), [("a cat", "a cat"), ("(a cat:1.0)", "a cat"), ("1+1, sci-fi.", "1+1, sci-fi.")]
)
def test_sdxl_plain_prompt_is_the_familys_own_encoding(xl: Any, weighted_text: str, plain_text: str) -> None:
    model, weighted = xl
    got, expected = weighted.encode([weighted_text]), model.encode_prompts([plain_text])
    assert torch.equal(got.prompt_embeds, expected.prompt_embeds) and torch.equal(got.pooled, expected.pooled)


def test_sdxl_up_weight_moves_only_its_tokens_and_not_the_pooled(xl: Any, sdxl_parts: dict[str, Any]) -> None:
    model, weighted = xl
    plain = model.encode_prompts(["a cat sits"])
    empty = sdxl_model(sdxl_parts, zeros=False).encode_prompts([""]).prompt_embeds  # the empty prompt as text
    where = positions(model.components["tokenizer"], "a ", "cat")
    got = weighted.encode(["a (cat:1.5) sits"])
    z = plain.prompt_embeds
    assert torch.equal(got.prompt_embeds[:, : where.start], z[:, : where.start])
    assert torch.equal(got.prompt_embeds[:, where.stop :], z[:, where.stop :])
    assert_close_scaled(got.prompt_embeds, up_weighted(z, empty, where, 1.5), rel=1e-6, what="both encoders' halves")
    assert torch.equal(got.pooled, plain.pooled)


def test_sdxl_down_weight_keeps_what_comes_before(xl: Any) -> None:
    model, weighted = xl
    z = model.encode_prompts(["a cat sits"]).prompt_embeds
    where = positions(model.components["tokenizer"], "a ", "cat")
    got = weighted.encode(["a [cat] sits"]).prompt_embeds  # w = 1/1.1: p·z + (1 − p)·z, to rounding
    assert_close_scaled(got[:, : where.start], z[:, : where.start], rel=1e-6, what="before the run")
    assert (got[:, where.start :] - z[:, where.start :]).abs().amax(-1).min() > 0


def test_sdxl_long_prompt_empty_prompts_and_padding(xl: Any, sdxl_parts: dict[str, Any]) -> None:
    model, weighted = xl
    long = weighted.encode([LONG])
    assert long.prompt_embeds.shape == (1, 231, 32) and long.pooled.shape == (1, 16)
    for text in ("", "()", "[]"):  # nothing to read: zeros, as the family's encoder gives ""
        got = weighted.encode([text])
        assert got.prompt_embeds.shape == (1, 77, 32)
        assert not got.prompt_embeds.any() and not got.pooled.any()
    # the long prompt's negative: zeros continue as zeros, text as the empty prompt's chunk
    empty = sdxl_model(sdxl_parts, zeros=False).encode_prompts([""]).prompt_embeds
    _, zero, text = weighted.same_length([long, model.encode_prompts([""]), model.encode_prompts(["ugly"])])
    assert zero.prompt_embeds.shape == text.prompt_embeds.shape == (1, 231, 32)
    assert not zero.prompt_embeds.any()
    assert torch.equal(text.prompt_embeds[:, 77:154], empty) and torch.equal(text.prompt_embeds[:, 154:], empty)
    batch = weighted.encode(["", "ugly", LONG])
    assert batch.prompt_embeds.shape == (3, 231, 32) and not batch.prompt_embeds[0].any()
    assert torch.equal(batch.prompt_embeds[1], text.prompt_embeds[0])


def test_flux_weights_its_t5_and_reads_plain_prompts_as_the_family(
    tmp_path_factory: pytest.TempPathFactory, one_thread: None
) -> None:
    from tests.helpers.tiny_flux import loaded_flux, make_flux_components

    pytest.importorskip("compel")
    model = loaded_flux(make_flux_components(tmp_path_factory.mktemp("flux-weighting"), guidance_embeds=False))
    weighted = weighted_encoder(model)
    assert weighted is not None
    plain = model.encode_prompts(["a cat sits"])
    same = weighted.encode(["(a cat sits:1.0)"])
    # compel passes T5 an all-ones attention mask, the family's encoder none: equal to float rounding
    assert_close_scaled(same.prompt_embeds, plain.prompt_embeds, rel=1e-5, what="Flux plain prompt")
    assert torch.equal(same.pooled, plain.pooled)
    empty = model.encode_prompts([""]).prompt_embeds
    where = positions(model.components["tokenizer_2"], "a ", "cat", start=0)  # T5: no BOS
    got = weighted.encode(["a (cat:1.5) sits"])
    assert_close_scaled(got.prompt_embeds, up_weighted(same.prompt_embeds, empty, where, 1.5), rel=1e-6, what="T5")
    assert (got.prompt_embeds[:, where] - same.prompt_embeds[:, where]).abs().amax(-1).min() > 0
    assert torch.equal(got.pooled, plain.pooled)  # CLIP's pooled vector reads the literal text
    assert weighted.encode(["x", "y z"]).prompt_embeds.shape == (2, 16, 32)
    assert len(weighted.same_length([got, plain])) == 2


def test_families_without_weighting_get_none() -> None:
    from multidiffusion.adapters.families import toy

    model = toy.load("toy", device=torch.device("cpu"))
    assert weighted_encoder(model) is None


def test_has_weighting_counts_chunks_with_a_tokenizer(small: dict[str, Any]) -> None:
    limit = PromptLimit.of("CLIP", small["tokenizer"])
    assert has_weighting(LONG, limit.count, limit.max_tokens)
    assert not has_weighting("a cat", limit.count, limit.max_tokens)


def test_prompt_rewrites_around_the_encoder_apply_before_parsing(small: dict[str, Any]) -> None:
    """A wrapper with ``encode`` and ``expand`` (textual inversion's trigger expansion) keeps weighting available
    and rewrites the A1111 text first, at encode time."""
    from tests.helpers.tiny_models import loaded

    pytest.importorskip("compel")

    class Expanding:
        def __init__(self, encode: Any) -> None:
            self.encode = encode
            self.words: dict[str, str] = {}

        def expand(self, text: str) -> str:
            for word, spelled in self.words.items():
                text = text.replace(word, spelled)
            return text

        def __call__(self, texts: Any) -> Any:
            return self.encode([self.expand(t) for t in texts])

    model = loaded(small)
    base = model.encode_prompts
    model.encode_prompts = Expanding(base)
    weighted = weighted_encoder(model)
    assert weighted is not None
    model.encode_prompts.words["<cat>"] = "cat cat_1"  # added after the weighted encoder was made
    assert torch.equal(weighted.encode(["a (<cat>:1.0)"]), base(["a cat cat_1"]))
    assert torch.equal(weighted.encode(["a (<cat>:1.3)"]), weighted.encode(["a (cat cat_1:1.3)"]))
