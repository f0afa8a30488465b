"""Prompt weighting in A1111 syntax, and prompts longer than 77 tokens, through compel.

Prompts are parsed by :mod:`~multidiffusion.adapters.customise.a1111_syntax` (the one parser: A1111's syntax translated
to compel's weighted fragments, never through compel's own string syntax, so ``+``, ``-``, ``.and()`` in a
prompt are text) and embedded by compel's ``EmbeddingsProvider`` (compel 2.5), the engine of its ``CompelForSD``,
``CompelForSDXL`` and ``CompelForFlux``:

* Long prompts are not cut (CLIP): the tokens are split into chunks of 75, each wrapped in BOS … EOS and padded
  to 77 and encoded on its own, the hidden states concatenated: (1, 77·k, D). A chunk ends after the last
  ``, . ; :`` within its 75 tokens (else after a word), compel's ``PHRASES`` split (A1111 backs up at most 20
  tokens to a comma, else cuts at 75). A BREAK starts a new chunk: each BREAK segment is chunked on its own and
  the segments' chunks concatenated, as A1111 does.
* A weight w ≥ 1 on a run scales its tokens' hidden states away from the empty prompt's,
  ``e + (z − e) · w`` at those positions only (e: the empty prompt's chunk, z: the prompt's hidden states).
  A1111 multiplies z by w and restores the chunk's mean instead.
* A weight w < 1 is compel's down-weighting (``DownweightMode.MASK``): the run's positions first get
  ``e + (z − e) · w`` as above, then the whole sequence is blended with the same prompt encoded with the run's
  tokens masked out of attention, ``(z_w + t · z_w,masked) / (1 + t)``, t = tan((1 − w) · π/2) (w = 0.5: the
  mean; w → 0: the prompt without the run). CLIP attends causally, so positions before the run keep their
  values (to rounding; exactly at w = 0.5) and every later one (EOS and padding too) moves. For w ≤ 0 compel
  takes t at w = 10⁻⁵ (≈ 6·10⁴: the run all but removed) while the run's positions get e + (z − e)·w with the
  w given; A1111's negative weights (z·w, flipping the run) have no counterpart.
* A prompt without weighting, within one chunk, encodes as the family's own encoder does (compel skips the
  arithmetic when every weight is 1): bit-identical for SD and SDXL (an SDXL batch's pooled vectors, which the
  family's encoder computes as one batch and this one prompt by prompt, to float rounding).

Families: each family module builds the weighted twin of its own prompt encoder from the pieces here (its
``weighted_prompts``, handed over as ``LoadedModel.prompt_weighting``):

* SD 1.x/2.x (:func:`~multidiffusion.adapters.families.sd.weighted_prompts`): CLIP's last hidden states.
* SDXL (:func:`~multidiffusion.adapters.families.sdxl.weighted_prompts`): both encoders' penultimate hidden states
  side by side, as ``CompelForSDXL``; the pooled projection is the second encoder's on the first chunk's tokens,
  unweighted (A1111's pooled). A prompt that reads as nothing (``""``, ``"()"``) is zeros where the model's
  ``force_zeros_for_empty_prompt`` says so, as the family's encoder makes it, and
  :attr:`WeightedPrompts.same_length` continues zero rows with zeros (what diffusers pairs with a long prompt).
* Flux (:func:`~multidiffusion.adapters.families.flux.weighted_prompts`), as ``CompelForFlux``: weights act on T5's
  hidden states; T5 reads one sequence of ``max_sequence_length`` tokens, so long prompts are still cut there
  and a BREAK only separates words; CLIP's pooled vector reads the literal text (compel weighs no pooled
  output). T5 is bidirectional, so a down-weighted run moves every position. Without weighting it matches the
  family's encoder to float rounding (compel passes T5 an all-ones attention mask, the family none).
* SD 3 and the toy family: None. Those should read :func:`~multidiffusion.adapters.customise.a1111_syntax.literal`
  prompts, or their encoders read ``(``, ``:1.2`` and ``BREAK`` as words.

Textual inversion: trigger words loaded into a tokenizer are tokens to compel like any other; a model whose
``encode_prompts`` is wrapped to spell multi-vector words out first (an object with ``encode`` and ``expand``) has
the rewrite applied to the A1111 text before parsing (:func:`weighted_encoder`), which is what compel's
``DiffusersTextualInversionManager`` does through a diffusers pipeline (which this package does not keep).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.customise.a1111_syntax import Fragment, Segment, has_weighting, literal
from multidiffusion.adapters.model.loaded import LoadedModel

__all__ = ["TextChunks", "WeightedPrompts", "has_weighting", "literal", "pad_rows", "unwrapped", "weighted_encoder"]


@dataclass(frozen=True)
class WeightedPrompts:
    """A model's prompt encoder with A1111 weighting and without the 77-token cut.

    Attributes:
        encode: Texts (N,) → the family's condition (what ``model.encode_prompts`` returns) holding N entries,
            weighted and, for CLIP, chunked: token length 77·k, k the most chunks any of the texts needs
            (shorter ones padded as :attr:`same_length` pads); Flux: T5's ``max_sequence_length``.
        same_length: Conditions → the same conditions padded to the longest token length among them, with the
            empty prompt's chunk (compel's padding), so any of them can be concatenated in one batch. Accepts
            conditions of ``model.encode_prompts`` too (77 tokens). Flux's all have one length: returned as given.
    """

    encode: Callable[[Sequence[str]], Any]
    same_length: Callable[[Sequence[Any]], list[Any]]


class TextChunks:
    """One text encoder through compel: A1111 segments → weighted hidden states (1, L, D).

    Args:
        tokenizer, text_encoder: The encoder's parts (CLIP or T5).
        penultimate: The penultimate layer's hidden states, not normalised (SDXL); else the last layer's.
        cut_at: None: chunks of the tokenizer's ``model_max_length`` (CLIP: 77), as many as the prompt needs, L
            = 77·k; a number: one sequence of that many tokens, longer prompts cut (Flux's T5), L = ``cut_at``.
    """

    def __init__(
        self, tokenizer: Any, text_encoder: torch.nn.Module, *, penultimate: bool = False, cut_at: int | None = None
    ) -> None:
        from compel import DownweightMode, EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode

        kind = ReturnedEmbeddingsType
        use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
        self.text_encoder = text_encoder
        self.provider = EmbeddingsProvider(
            tokenizer,
            text_encoder,
            truncate=cut_at is not None,
            padding_attention_mask_value=0 if use_mask else 1,
            downweight_mode=DownweightMode.MASK,
            returned_embeddings_type=(
                kind.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if penultimate else kind.LAST_HIDDEN_STATES_NORMALIZED
            ),
            split_long_text_mode=SplitLongTextMode.PHRASES,
            model_max_length=cut_at,
        )

    @property
    def chunk(self) -> int:
        """Tokens per chunk (the tokenizer's ``model_max_length``, 77)."""
        return int(self.provider.max_token_count)

    @property
    def empty(self) -> Tensor:
        """(1, 77, D) the empty prompt's chunk (BOS, EOS, padding): the padding of long conditions."""
        return self.provider.empty_z

    def segment(self, segment: Segment) -> tuple[Tensor, Tensor]:
        """One BREAK segment → (hidden states (1, L, D), token ids (1, L))."""
        texts = [f.text for f in segment]
        ids = self.provider.get_token_ids(texts, include_start_and_end_markers=False) if texts else []
        # runs without tokens (whitespace) weigh nothing, and compel cannot locate them to mask
        kept = [f for f, tokens in zip(segment, ids, strict=True) if tokens] or [Fragment("", 1.0)]
        return self.provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[[f.text for f in kept]],
            fragment_weights_batch=[[float(f.weight) for f in kept]],
            should_return_tokens=True,
            device=self.text_encoder.device,
        )

    def prompt(self, segments: Sequence[Segment]) -> tuple[Tensor, Tensor]:
        """A parsed prompt → (hidden states (1, 77·k, D), token ids (1, 77·k)), its segments' chunks in order
        (a BREAK starts a new chunk)."""
        parts = [self.segment(s) for s in segments]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def pad_rows(embeds: Tensor, length: int, chunk: Tensor, zero_rows: Tensor | None = None) -> Tensor:
    """(N, L, D) → (N, length, D): each row continued with copies of ``chunk`` (1, c, D), or with zeros where
    ``zero_rows`` (N,) is True. ``L`` and ``length`` must be multiples of c."""
    n, size, _ = embeds.shape
    c = chunk.shape[1]
    if size % c or length % c:
        raise ValueError(f"token lengths {size} and {length} are not multiples of the chunk length {c}")
    if size == length:
        return embeds
    filler = chunk.to(embeds.device, embeds.dtype).repeat(n, (length - size) // c, 1)
    if zero_rows is not None:
        filler = torch.where(zero_rows[:, None, None].to(embeds.device), torch.zeros_like(filler), filler)
    return torch.cat([embeds, filler], dim=1)


def unwrapped(encoder: Any) -> tuple[Any, list[Callable[[str], str]]]:
    """The family's own prompt encoder under wrappers that rewrite each prompt before encoding it (any object
    with ``encode``, the wrapped encoder, and ``expand``, text → text: e.g. textual inversion's trigger-word
    expansion), and those rewrites, outermost first."""
    rewrites: list[Callable[[str], str]] = []
    while callable(getattr(encoder, "expand", None)) and hasattr(encoder, "encode"):
        rewrites.append(encoder.expand)
        encoder = encoder.encode
    return encoder, rewrites


def weighted_encoder(model: LoadedModel) -> WeightedPrompts | None:
    """The model's prompt encoder with A1111 weighting and long prompts (see the module docstring), or None
    where there is none (SD 3, the toy family; compel not installed).

    Prompt rewrites wrapped around the family's encoder (:func:`unwrapped`) apply to the A1111 text first, as
    they are installed on ``model.encode_prompts`` when a prompt is encoded (so a multi-vector trigger word in
    ``(word:1.2)`` spells out its tokens inside the weight)."""
    builder = model.prompt_weighting
    if builder is None:
        return None
    base, _ = unwrapped(model.encode_prompts)
    try:
        import compel  # noqa: F401
    except ImportError:
        return None
    weighted = builder(base)
    if weighted is None:
        return None

    def encode(texts: Sequence[str]) -> Any:
        rewrites = unwrapped(model.encode_prompts)[1]
        for rewrite in rewrites:
            texts = [rewrite(text) for text in texts]
        return weighted.encode(texts)

    return WeightedPrompts(encode=encode, same_length=weighted.same_length)
