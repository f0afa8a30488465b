"""What every model family's adapter hands to the pipeline (docs/design.md §5): the pipeline never branches
on the family."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from multidiffusion.adapters.model.state import ModelState
from multidiffusion.core.types import Codec, Denoiser

if TYPE_CHECKING:  # prompt_weighting imports this module: the type only, to keep the import graph one-way
    from multidiffusion.adapters.customise.prompt_weighting import WeightedPrompts


@dataclass(frozen=True)
class Differentiable:
    """The model's parts as differentiable functions, for gradient guidance such as SyncDiffusion.

    Attributes:
        denoiser: Like ``LoadedModel.denoiser`` but builds an autograd graph when grad is enabled.
        decode: Latents (B, C, h, w) → images (B, 3, h·f, w·f) in [−1, 1], differentiable.
        set_checkpointing: Turns activation checkpointing of the denoiser and decoder on or off (saves
            memory in the backward pass at the cost of a second forward).
    """

    denoiser: Denoiser
    decode: Callable[[Tensor], Tensor]
    set_checkpointing: Callable[[bool], None]


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """A Hugging Face tokenizer's token count of one text, uncut and with its special tokens."""

    def count(text: str) -> int:
        return len(tokenizer(text, truncation=False, verbose=False).input_ids)

    return count


def first_step_truncating(num_steps: int, strength: float) -> int:
    """The first step of an image start in SD's and SDXL's img2img pipelines (``get_timesteps``):
    steps − int(steps · strength), so the steps run are steps · strength rounded down."""
    return num_steps - min(int(num_steps * strength), num_steps)


def first_step_flow(num_steps: int, strength: float) -> int:
    """The first step of an image start in SD 3's and Flux's img2img pipelines: int(max(steps − steps ·
    strength, 0)), so the steps run are steps · strength rounded up (they differ from
    :func:`first_step_truncating` when steps · strength is not whole)."""
    return int(max(num_steps - num_steps * strength, 0))


@dataclass(frozen=True)
class PromptLimit:
    """Where one text encoder of a model cuts prompts.

    Attributes:
        encoder: Its name for people (``CLIP``, ``T5``).
        count: Text → its token count in that encoder's tokenizer (special tokens included).
        max_tokens: The count it cuts prompts to (CLIP: 77).
    """

    encoder: str
    count: Callable[[str], int]
    max_tokens: int

    @classmethod
    def of(cls, encoder: str, tokenizer: Any, max_tokens: int | None = None) -> PromptLimit:
        """The limit of a Hugging Face tokenizer: ``max_tokens``, default its ``model_max_length``."""
        return cls(encoder, token_counter(tokenizer), int(max_tokens or tokenizer.model_max_length))


@dataclass
class LoadedModel:
    """A model family's parts, ready for the engine.

    Attributes:
        source: What the user asked for (repo id, folder or file), recorded in metadata.
        family: The family's name (``Family.name`` of its module's ``FAMILY``), e.g. ``"stable-diffusion"``.
        denoiser: Unguided denoiser; conditions are what ``encode_prompts`` returns.
        codec: Latents ↔ images.
        encode_prompts: Texts (N,) → one condition holding N entries; called once per prompt set per run.
        scheduler_config: The model's scheduler config; schedulers are built from it by name.
        native_window: The model's training resolution in latent cells (its default window).
        device: Where the model runs.
        dtype: The model's weights dtype.
        bytes_per_view_cell: Rough peak activation bytes per latent cell of one denoiser row, for the
            automatic view batch size.
        default_guidance_scale: The guidance scale a run uses when none is given.
        default_stride_px: The stride a run uses when none is given (None: window / 8).
        differentiable: The differentiable parts, or None if the family has none (no SyncDiffusion).
        components: The family's parts by name, as its diffusers pipeline names them (``unet`` or ``transformer``,
            ``vae``, ``text_encoder``, ``tokenizer``, …; None for an optional part the model lacks); the toy model:
            its ``field``. The modules the denoiser and codec run, not copies: the add-on loaders and the speed
            settings act on them.
        state: What changes on the model after loading (:class:`~multidiffusion.adapters.model.state.ModelState`:
            the diffusers host pipeline, the open LoRA switch, embeddings loaded, speed settings).
        default_scheduler: The scheduler a run uses when none is given: a short name or a diffusers class
            name (few-step models name the one their config names).
        noise_patch: p where one latent cell of the canvas packs p × p cells of the VAE (SD3, Flux: 2):
            the initial noise is drawn at the VAE's resolution and packed, as the family's pipeline draws it.
        timestep_options: ``timestep_options(scheduler, steps, (h, w))`` → extra keyword arguments of
            ``scheduler.set_timesteps`` for views of h × w cells (Flux's sigmas and its dynamic shift μ,
            which depends on the sequence length the model sees: the view's); None: none.
        embed_guidance: For guidance-distilled models (Flux dev): ``embed_guidance(condition, g)`` returns
            the condition with the guidance scale g embedded; runs then make no unconditional pass. None:
            classifier-free guidance.
        weights_sha256: SHA-256 of the weight files (see :func:`~multidiffusion.adapters.loading.fingerprint.
            weights_sha256`) for a local folder or file, recorded so an image names its exact weights without
            the user's directory tree; None for hub repo ids (the id names them) and weightless models.
        prompt_limits: Where each text encoder that carries the prompt cuts it (:class:`PromptLimit`), so the
            pipeline can warn when a prompt is cut; empty: none known (no warning).
        first_step: ``first_step(steps, strength)`` → the index of the first of ``steps`` scheduler steps that
            an image start at ``strength`` runs, as the family's own img2img pipeline picks it
            (:func:`first_step_truncating` for SD and SDXL, :func:`first_step_flow` for SD 3 and Flux).
        inpaint_channels: Extra input channels of an inpainting model (SD and SDXL 9-channel UNets: 5, the mask
            then the masked image's latents), concatenated after the latent per view; 0 for ordinary models.
        control: For families whose network takes control residuals (SD 1.x/2.x and SDXL: ControlNets and
            T2I-Adapters; SD 3 and Flux: their ControlNets): a
            :class:`~multidiffusion.adapters.customise.control.FamilyControl`
            that checks networks, prepares guides and makes the controlled denoiser; None: no control.
        prompt_weighting: The family's A1111 prompt weighting: its own prompt encoder (``encode_prompts`` under any
            wrappers that rewrite prompts, :func:`~multidiffusion.adapters.customise.prompt_weighting.unwrapped`) →
            the weighted twin (:class:`~multidiffusion.adapters.customise.prompt_weighting.WeightedPrompts`), or None
            where that encoder cannot weight; None: the family has no prompt weighting (SD 3, the toy model).
    """

    source: str
    family: str
    denoiser: Denoiser
    codec: Codec
    encode_prompts: Callable[[Sequence[str]], Any]
    scheduler_config: Mapping[str, Any]
    native_window: int
    device: torch.device
    dtype: torch.dtype
    bytes_per_view_cell: int = 0
    default_guidance_scale: float = 7.5
    default_stride_px: int | None = None
    differentiable: Differentiable | None = None
    components: Mapping[str, Any] = field(default_factory=dict)
    state: ModelState = field(default_factory=ModelState, repr=False, compare=False)
    weights_sha256: str | None = None
    default_scheduler: str = "ddim"
    noise_patch: int = 1
    timestep_options: Callable[[Any, int, tuple[int, int]], dict[str, Any]] | None = None
    embed_guidance: Callable[[Any, float], Any] | None = None
    prompt_limits: tuple[PromptLimit, ...] = ()
    inpaint_channels: int = 0
    first_step: Callable[[int, float], int] = first_step_truncating
    control: Any | None = None
    prompt_weighting: Callable[[Any], WeightedPrompts | None] | None = None

    @property
    def name(self) -> str:
        """What metadata records as the model: a repo id or model spec as given, a local folder's or file's
        own name (never its absolute path, which would leak the user's directory tree into every image)."""
        path = Path(self.source).expanduser()
        return path.name if path.exists() else self.source

    @property
    def granularity_px(self) -> int:
        """Canvas and window sizes must be multiples of this many pixels (one latent cell)."""
        return self.codec.scale_factor

    def set_timesteps(self, scheduler: Any, steps: int, view_cells: tuple[int, int]) -> None:
        """``scheduler.set_timesteps`` as this family's own pipeline calls it, for views of ``view_cells``."""
        options = self.timestep_options(scheduler, steps, view_cells) if self.timestep_options is not None else {}
        scheduler.set_timesteps(steps, device=self.device, **options)
