"""Textual-inversion embeddings: new trigger words whose vectors come from a file, through diffusers'
``load_textual_inversion`` on the family's pipeline (:func:`~multidiffusion.adapters.customise.host.diffusers_host`).

A file holds k vectors of the text encoder's width D (one (k, D) tensor: A1111's ``emb_params`` or
``string_to_param``, diffusers' ``{"<token>": …}``). Its trigger word is, as in A1111, the file's name without its
suffix (``EasyNegative.safetensors`` → ``EasyNegative``), or the token given after a colon. SDXL files hold one set per
encoder, ``clip_l`` (D₁, the first encoder) and ``clip_g`` (D₂, the second), and load into both.

A word with k > 1 vectors stands for k tokens: prompts are expanded before encoding (``word`` → ``word word_1 …
word_{k−1}``, the tokens diffusers adds), case-insensitively as CLIP reads prompts lowercased. (diffusers'
``maybe_convert_prompt`` misses words with capitals under transformers 5, whose CLIP tokenizer reports added tokens
lowercased, and would run such a word on its first vector alone.) The model's ``encode_prompts`` and prompt limits are
wrapped to do it.

Families whose prompt is also read by a non-CLIP encoder (T5 in SD 3 and Flux) take no embeddings: no file covers it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from multidiffusion.adapters.customise.host import WEIGHTS_SUFFIXES, check_weights_file, diffusers_host, host_family
from multidiffusion.adapters.loading.hub import first_line
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.adapters.loading.resolve import PICKLE_SUFFIXES
from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.errors import InvalidInputError

ENCODER_PARTS: dict[str, str] = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
"""A two-encoder (SDXL) embedding file's key for the vectors of each of the pipeline's text encoders."""


def takes_embeddings(pipeline_class: type) -> bool:
    """Whether a diffusers pipeline class loads textual inversions into every encoder that reads the prompt: it has
    ``load_textual_inversion`` and all its ``text_encoder*`` parts are CLIP models."""
    if not hasattr(pipeline_class, "load_textual_inversion"):
        return False
    parameters = inspect.signature(pipeline_class.__init__).parameters
    kinds = [getattr(p.annotation, "__name__", str(p.annotation)) for n, p in parameters.items() if "text_encoder" in n]
    return all(kind.startswith("CLIP") for kind in kinds)


@dataclass(frozen=True)
class EmbeddingSpec:
    """One embedding file and its trigger word.

    Attributes:
        path: The file (``.safetensors``; ``.pt``, ``.bin``, ``.ckpt``, ``.pth`` only with ``allow_pickle``).
        token: The word that calls it up in prompts (default: the file's name without its suffix, as in A1111).
    """

    path: str
    token: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            raise InvalidInputError("empty embedding path; give PATH or PATH:TOKEN")
        token = self.token or Path(self.path).stem
        if not token or token != token.strip():
            raise InvalidInputError(f"embedding token {token!r} for {self.path!r} must be a word without outer spaces")
        object.__setattr__(self, "token", token)

    @classmethod
    def parse(cls, text: str) -> EmbeddingSpec:
        """``PATH`` or ``PATH:TOKEN``. The part after the last colon is the token unless the whole text names an
        existing file, or that part looks like a path (has a slash or backslash, or ends with a weights suffix):
        so ``C:\\emb\\x.pt`` and ``a:b.safetensors`` are paths."""
        head, sep, tail = text.rpartition(":")
        pathlike = "/" in tail or "\\" in tail or tail.lower().endswith(WEIGHTS_SUFFIXES)
        if not sep or not head or not tail or pathlike or Path(text).expanduser().is_file():
            return cls(text)
        return cls(head, tail)

    @property
    def label(self) -> str:
        """For metadata: the file's name (never its folder) and the token, ``name.safetensors:token``."""
        return f"{Path(self.path).name}:{self.token}"


def _vectors(path: str, state: Any) -> Tensor | dict[str, Tensor]:
    """The (k, D) vectors of a loaded embedding file, or for a two-encoder file its ``clip_l``/``clip_g`` sets."""
    if isinstance(state, Mapping) and any(part in state for part in ENCODER_PARTS.values()):
        return {part: state[part] for part in ENCODER_PARTS.values() if isinstance(state.get(part), Tensor)}
    found: Any = None
    if isinstance(state, Tensor):
        found = state
    elif isinstance(state, Mapping) and isinstance(state.get("string_to_param"), Mapping):
        found = state["string_to_param"].get("*")  # A1111's .pt layout
    elif isinstance(state, Mapping) and len(state) == 1:
        found = next(iter(state.values()))  # A1111's emb_params, diffusers' {"<token>": …}
    if not isinstance(found, Tensor) or found.ndim not in (1, 2) or found.numel() == 0:
        keys = ", ".join(map(str, list(state)[:4])) if isinstance(state, Mapping) else type(state).__name__
        raise InvalidInputError(
            f"{path!r} is not a textual-inversion embedding (one (k, D) tensor, or SDXL's clip_l and clip_g); "
            f"it holds: {keys}"
        )
    return found if found.ndim == 2 else found[None]


class TriggerExpansion:
    """Prompt → prompt with each multi-vector trigger word spelled out as its k tokens (case-insensitive).

    Attributes:
        vectors: Trigger word (as loaded) → its vector count k; words added later take effect at once.
    """

    def __init__(self) -> None:
        self.vectors: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        multi = {token.lower(): (token, k) for token, k in self.vectors.items() if k > 1}
        if not multi:
            return text
        words = sorted(multi, key=len, reverse=True)  # the longest first: "style2" before "style"
        pattern = re.compile("|".join(re.escape(word) for word in words), re.IGNORECASE)

        def spelled(match: re.Match[str]) -> str:
            token, k = multi[match.group().lower()]
            return " ".join([token, *(f"{token}_{i}" for i in range(1, k))])

        return pattern.sub(spelled, text)


class ExpandingEncoder:
    """``LoadedModel.encode_prompts`` with :class:`TriggerExpansion` applied to each prompt first."""

    def __init__(self, encode: Callable[[Sequence[str]], Any], expand: TriggerExpansion) -> None:
        self.encode = encode
        self.expand = expand

    def __call__(self, texts: Sequence[str]) -> Any:
        return self.encode([self.expand(text) for text in texts])


def _expanding_count(count: Callable[[str], int], expand: TriggerExpansion) -> Callable[[str], int]:
    return lambda text: count(expand(text))


def _expansion_of(model: LoadedModel) -> TriggerExpansion:
    """The model's trigger expansion, installed on first use around ``encode_prompts`` and the prompt limits."""
    if isinstance(model.encode_prompts, ExpandingEncoder):
        return model.encode_prompts.expand
    expand = TriggerExpansion()
    model.encode_prompts = ExpandingEncoder(model.encode_prompts, expand)
    model.prompt_limits = tuple(replace(lim, count=_expanding_count(lim.count, expand)) for lim in model.prompt_limits)
    return expand


def _encoders(host: Any) -> list[tuple[str, Any, Any]]:
    """(name, text encoder, its tokenizer) of each text encoder of the host pipeline, in name order."""
    parts = host.components
    names = sorted(n for n in parts if n.startswith("text_encoder") and parts[n] is not None)
    return [(name, parts[name], parts["tokenizer" + name.removeprefix("text_encoder")]) for name in names]


def _check_token(token: str, path: str, tokenizers: Sequence[Any]) -> None:
    for tokenizer in tokenizers:
        taken = token in tokenizer.get_vocab() or f"{token}_1" in tokenizer.get_vocab()
        if taken or len(tokenizer.tokenize(token)) == 1:
            raise InvalidInputError(
                f"embedding token {token!r} (for {path!r}) is already a token of this model's tokenizer (a word, or an "
                "embedding loaded before); give another as PATH:TOKEN"
            )


def _plan(
    spec: EmbeddingSpec, state: Any, encoders: Sequence[tuple[str, Any, Any]], slots: Sequence[str], family: str
) -> list[tuple[Tensor, Any, Any]]:
    """(vectors, text encoder, tokenizer) for each encoder ``spec``'s file loads into, all checked. ``slots``: the
    pipeline's text-encoder parts, present or not (an SDXL pipeline without its first encoder still has its slot)."""
    vectors = _vectors(spec.path, state)
    parts = vectors if isinstance(vectors, dict) else {}
    foreign = [part for name, part in ENCODER_PARTS.items() if name not in slots and part in parts]
    if foreign:
        raise InvalidInputError(
            f"embedding {spec.path!r} is for a model with the text encoders {', '.join(parts)}; this {family} model "
            f"has no {', '.join(foreign)} (is it for another model family?)"
        )
    if isinstance(vectors, Tensor):
        if len(encoders) > 1:
            wanted = ", ".join(ENCODER_PARTS.get(name, name) for name, _, _ in encoders)
            raise InvalidInputError(
                f"embedding {spec.path!r} holds one set of vectors, but this {family} model has {len(encoders)} text "
                f"encoders; its embeddings hold one set for each ({wanted})"
            )
        sets = [vectors]
    else:
        missing = [ENCODER_PARTS.get(name, name) for name, _, _ in encoders if ENCODER_PARTS.get(name) not in vectors]
        if missing:
            raise InvalidInputError(
                f"embedding {spec.path!r} has no vectors {', '.join(missing)} for this {family} model"
            )
        sets = [vectors[ENCODER_PARTS[name]] for name, _, _ in encoders]
        sets = [s if s.ndim == 2 else s[None] for s in sets]
        if len({s.shape[0] for s in sets}) > 1:
            raise InvalidInputError(f"embedding {spec.path!r} has different vector counts for its text encoders")
    plan = []
    for (name, encoder, tokenizer), vecs in zip(encoders, sets, strict=True):
        width = int(encoder.get_input_embeddings().weight.shape[-1])
        if vecs.shape[-1] != width:
            raise InvalidInputError(
                f"embedding {spec.path!r} has vectors of width {vecs.shape[-1]}, but this {family} model's {name} "
                f"takes {width} (is it for another model family?)"
            )
        plan.append((vecs, encoder, tokenizer))
    return plan


def _read(spec: EmbeddingSpec) -> Any:
    from diffusers.loaders.textual_inversion import load_textual_inversion_state_dicts

    pickled = Path(spec.path).suffix.lower() in PICKLE_SUFFIXES
    try:
        with library_chatter_off():
            return load_textual_inversion_state_dicts([spec.path], use_safetensors=None if pickled else True)[0]
    except Exception as exc:  # safetensors, torch.load and diffusers raise many types; all mean "cannot read it"
        raise InvalidInputError(f"could not read embedding {spec.path!r}: {first_line(exc)}") from exc


def load_embeddings(
    model: LoadedModel, specs: Sequence[EmbeddingSpec], *, allow_pickle: bool = False
) -> tuple[str, ...]:
    """Load textual-inversion embeddings into ``model``'s text encoders; returns their trigger words.

    Every file is checked (exists, pickle only with ``allow_pickle``), read, and matched to the model (layout,
    vector width, token not yet in the vocabulary) before any is loaded, so a bad one leaves the model as it was.
    The model's ``encode_prompts`` then expands multi-vector words (see the module docstring), and
    ``model.state.embeddings`` records each token's file (a later run naming the same file need not load it).

    Raises:
        InvalidInputError: One line: a missing or pickled file, not an embedding, for another model family, a token
            already taken or named twice, or a family that takes no embeddings (SD 3, Flux, the Gaussian-field model).
    """
    family = host_family(model, "textual-inversion embeddings", takes_embeddings).name
    for spec in specs:
        check_weights_file(spec.path, "embedding", allow_pickle)
    tokens = [spec.token.lower() for spec in specs]
    for spec in specs:
        if tokens.count(spec.token.lower()) > 1:
            raise InvalidInputError(f"embedding token {spec.token!r} is given twice; give each file its own token")
    host = diffusers_host(model)
    encoders = _encoders(host)
    slots = [name for name in host.components if name.startswith("text_encoder")]
    plans = []
    for spec in specs:
        _check_token(spec.token, spec.path, [tokenizer for _, _, tokenizer in encoders])
        plans.append(_plan(spec, _read(spec), encoders, slots, family))
    done: list[tuple[str, Any, Any]] = []
    try:
        with library_chatter_off():
            for spec, plan in zip(specs, plans, strict=True):
                for vectors, encoder, tokenizer in plan:
                    host.load_textual_inversion(vectors, token=spec.token, tokenizer=tokenizer, text_encoder=encoder)
                    done.append((spec.token, encoder, tokenizer))
    except Exception as exc:  # not expected after the checks above; undo what loaded
        for token, encoder, tokenizer in done:
            added = [
                t for t in tokenizer.added_tokens_encoder if t == token or re.fullmatch(rf"{re.escape(token)}_\d+", t)
            ]
            with library_chatter_off():
                host.unload_textual_inversion(added, tokenizer=tokenizer, text_encoder=encoder)
        raise InvalidInputError(f"could not load embeddings into this {family} model: {first_line(exc)}") from exc
    expand = _expansion_of(model)
    for spec, plan in zip(specs, plans, strict=True):
        expand.vectors[spec.token] = int(plan[0][0].shape[0])
        model.state.embeddings[spec.token.lower()] = Path(spec.path).expanduser().resolve()
    return tuple(spec.token for spec in specs)


def embedding_labels(specs: Sequence[EmbeddingSpec]) -> list[str]:
    """What metadata records for ``specs``: :attr:`EmbeddingSpec.label` of each, in order."""
    return [spec.label for spec in specs]
