"""SDXL adapter (``StableDiffusionXLPipeline``): two CLIP text encoders, the UNet with SDXL's micro-conditioning,
the 4-channel VAE (8 px per latent cell).

Conditioning, as ``StableDiffusionXLPipeline`` computes it (Podell et al. 2023, "SDXL", §2.1–2.2):

* Text: both encoders' penultimate hidden states side by side, (N, 77, D₁ + D₂) (2048 for SDXL), and the
  second encoder's pooled projection (N, D₂ₚ) (1280). With ``force_zeros_for_empty_prompt`` in the pipeline's
  config (SDXL base ships it), the pipeline uses zeros, not the encoding of "", for the negative prompt when
  none is given; this pipeline's default negative prompt is "", so an empty prompt here is zeros (both
  parts), which makes one view equal diffusers' default call. (diffusers encodes an explicitly given "" and
  an empty *positive* prompt as text; here every empty prompt is the zeros the model was trained to read as
  "no caption".)
* Micro-conditioning ``add_time_ids`` = (original size, crop top-left, target size) in pixels, §2.2. Sizes
  are the view's own size, which is what diffusers passes by default for an image of that size
  (``original_size = target_size = (height, width)``); for the native window, 1024 × 1024 for SDXL.
* Crop coordinates per view, :attr:`SdxlDenoiser.crop_coords`:

  - ``"zero"`` (shipped default): (0, 0) for every view. In training, (c_top, c_left) told the model how
    much of the resized image was cropped away at the top and left (§2.2, "Conditioning the Model on
    Cropping Parameters"); (0, 0) asks for an uncropped, object-centred composition, the paper's
    recommendation and diffusers' default. Each view of a panorama is denoised as a whole image, so (0, 0)
    gives every view the conditioning SDXL is used with, and the same crop gives the same prediction
    wherever it lies on the canvas.
  - ``"offset"``: the view's top/left on the canvas in pixels, i.e. "this window is a crop of a larger
    picture, taken at this offset". It reads naturally for a panorama, but views far into a canvas get
    values outside training (crops were bounded by how much a resized training image exceeded the training
    size; a 4096 px panorama asks for offsets up to 3072 px), and overlapping views then differ by their
    conditioning as well as by their content.

  On the tiny random-weight test model, switching to ``"offset"`` changes a view's guided prediction by
  4–11 % (offsets 64–3072 px) and a 15-view canvas's final latents by 1.5 %, and leaves the disagreement of
  two half-overlapping views on their shared cells where it was (0.95–1.0 relative under both). Random
  weights say nothing about image quality, so the default follows the paper and diffusers.

The denoiser is unguided (``core.engine.guidance`` wraps it); UNets distilled with an embedded guidance scale
(``time_cond_proj_dim``, e.g. LCM-SDXL) get it through ``embed_guidance``, as diffusers does (no
unconditional pass, w = g − 1).

SDXL's VAE overflows in float16 (``force_upcast`` in its config): as diffusers upcasts it for decoding,
the VAE of a float16 model with ``force_upcast`` is kept in float32 (about 170 MB more than half
precision; decodes then cost what diffusers' upcast decode costs). A VAE without it (e.g. the fp16-fix
VAE) stays in float16, and a non-finite half decode is redone in float32 by ``VaeCodec.decode``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.codecs.vae import VaeCodec
from multidiffusion.adapters.customise.a1111_syntax import literal, parse
from multidiffusion.adapters.customise.control import UNET_KINDS, UNetControl
from multidiffusion.adapters.customise.prompt_weighting import TextChunks, WeightedPrompts, pad_rows
from multidiffusion.adapters.families import sd
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.loading.diffusers_files import (
    load_pretrained_pipeline,
    load_single_file_pipeline,
    to_device,
)
from multidiffusion.adapters.model.differentiable import SamplingDenoiser, differentiable_parts
from multidiffusion.adapters.model.loaded import LoadedModel, PromptLimit
from multidiffusion.adapters.schedulers.names import check_scheduler_name, is_few_step_config
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError

PIPELINE = "StableDiffusionXLPipeline"
FAMILY = Family(
    name="sdxl",
    title="SDXL (also SDXL-Turbo and Lightning)",
    module=__name__,
    pipelines=(PIPELINE, "StableDiffusionXLInpaintPipeline"),
    checkpoint_types=("xl_base", "xl_inpaint"),
    control_kinds=UNET_KINDS,  # SD's UNet control: ControlNets and T2I-Adapters made for SDXL
)
CROP_COORDS: tuple[str, ...] = ("zero", "offset")
DEFAULT_GUIDANCE_SCALE = 5.0  # StableDiffusionXLPipeline.__call__'s default
DENOISER = "unet"  # the denoising network's folder in a diffusers model
native_cells = sd.native_cells  # the UNet's sample_size, as for SD 1.x/2.x
cell_px = sd.cell_px  # the VAE's downsampling, as for SD 1.x/2.x


def view_cell_bytes(config: Any, itemsize: int) -> int:
    """Rough peak activation bytes per latent cell of one SDXL UNet row (``config``: the UNet's)."""
    # Peak live activations of one UNet row, per latent cell, ∝ the first block's width c₀ (320 for SDXL) and
    # the item size. Counted for SDXL base's UNet config at its native 128² cells in float16 (live tensor
    # storage through diffusers' forward on the meta device, weights excluded): 9.8 KiB per cell when attention
    # stores no scores (CUDA's flash / mem-efficient SDPA), 45 KiB where attention materialises its
    # 4096² scores (AttnProcessor), 88 KiB with PyTorch's math SDPA fallback (scores and softmax copies).
    # 144 · c₀ · itemsize = 90 KiB per cell (1.4 GiB per 1024² row) covers the worst of them; the scores
    # term grows with the window (per cell ∝ tokens), so windows above native need more.
    return 144 * int(sd._get(config, "block_out_channels")[0]) * itemsize


LCM_GUIDANCE_SCALE = 8.0  # latent-consistency/lcm-sdxl's model card


@dataclass(frozen=True)
class SdxlCondition:
    """N prompts encoded for the SDXL UNet.

    Attributes:
        prompt_embeds: (N, L, D₁ + D₂) both encoders' penultimate hidden states, concatenated (cross-attention).
        pooled: (N, D₂ₚ) the second encoder's pooled projection (the UNet's ``text_embeds``).
        guidance: For guidance-embedding UNets (``time_cond_proj_dim``): the scale g they embed; else None.
    """

    prompt_embeds: Tensor
    pooled: Tensor
    guidance: float | None = None

    def __len__(self) -> int:
        return int(self.prompt_embeds.shape[0])


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """(B,) → (B, dim) sinusoidal embedding of w · 1000 (``StableDiffusionXLPipeline.get_guidance_scale_embedding``,
    VDM's; float32)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = (w.float() * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 == 1 else emb


class SdxlDenoiser(SamplingDenoiser):
    """The SDXL ``UNet2DConditionModel`` as a :class:`~multidiffusion.core.types.Denoiser`.

    Conditions are :class:`SdxlCondition`; the batch's conditions are concatenated in order, and each
    condition's rows get ``add_time_ids`` = (h, w, c_top, c_left, h, w) in pixels for their view (h × w: the
    view's size; (c_top, c_left) per :attr:`crop_coords`). Input and output float32; the UNet runs in its
    own dtype.

    Args:
        unet: The UNet (``addition_embed_type="text_time"``).
        scale_factor: Pixels per latent cell (8).
        crop_coords: ``"zero"`` or ``"offset"`` (see the module docstring).
    """

    def __init__(self, unet: torch.nn.Module, scale_factor: int = 8, crop_coords: str = "zero") -> None:
        self.unet = unet
        self.scale_factor = scale_factor
        self.crop_coords = crop_coords

    @property
    def crop_coords(self) -> str:
        """``"zero"``: (0, 0) for every view; ``"offset"``: the view's canvas top/left in pixels."""
        return self._crop_coords

    @crop_coords.setter
    def crop_coords(self, value: str) -> None:
        if value not in CROP_COORDS:
            raise InvalidInputError(f"crop_coords must be one of {', '.join(CROP_COORDS)}, got {value!r}")
        self._crop_coords = value

    def time_ids(self, view: View | None, height: int, width: int) -> list[float]:
        """SDXL's six micro-conditioning numbers for an h × w-cell crop taken at ``view`` (None: no canvas)."""
        f = self.scale_factor
        size = [float(height * f), float(width * f)]
        crop = [0.0, 0.0]
        if self.crop_coords == "offset" and view is not None:
            crop = [float(view.top * f), float(view.left * f)]
        return size + crop + size  # original_size + crops_coords_top_left + target_size

    def network_inputs(
        self, x: Tensor, conds: Sequence[SdxlCondition], views: Sequence[View] | None = None
    ) -> dict[str, Any]:
        """The UNet's keyword inputs besides (x, t) for this batch (x: (len(conds)·N, 4, h, w)):
        ``encoder_hidden_states``, ``timestep_cond`` and ``added_cond_kwargs`` (pooled text, time ids). A
        ControlNet takes the same (:mod:`~multidiffusion.adapters.customise.control`)."""
        n = x.shape[0] // len(conds)
        if any(len(c) != n for c in conds) or n * len(conds) != x.shape[0]:
            raise InvalidInputError(
                f"{x.shape[0]} latents but conditions of {[len(c) for c in conds]} entries; each condition needs one "
                "entry per canvas"
            )
        dtype, device = self.unet.dtype, x.device
        embeds = torch.cat([c.prompt_embeds for c in conds]).to(device, dtype)
        pooled = torch.cat([c.pooled for c in conds]).to(device, dtype)
        h, w = x.shape[-2:]
        rows = [self.time_ids(views[i] if views is not None else None, h, w) for i in range(len(conds))]
        # float32: add_time_proj embeds them in float32 anyway, so pixel offsets stay exact in half precision
        time_ids = torch.tensor(rows, dtype=torch.float32, device=device).repeat_interleave(n, dim=0)
        timestep_cond = None
        proj_dim = getattr(self.unet.config, "time_cond_proj_dim", None)
        if proj_dim is not None:  # diffusers: w = g − 1 for every row (no unconditional pass)
            w_rows = torch.tensor([(c.guidance if c.guidance is not None else 1.0) - 1.0 for c in conds])
            timestep_cond = guidance_embedding(w_rows.repeat_interleave(n), proj_dim).to(device, dtype)
        return {
            "encoder_hidden_states": embeds,
            "timestep_cond": timestep_cond,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids},
        }

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        conds: Sequence[SdxlCondition],
        views: Sequence[View] | None = None,
        *,
        track_grad: bool = False,
        residuals: dict[str, Any] | None = None,
    ) -> Tensor:
        """x: (len(conds)·N, 4, h, w) → the UNet's output, float32; ``track_grad`` follows the ambient grad mode;
        ``residuals``: extra UNet inputs from control networks."""
        inputs = self.network_inputs(x, conds, views)
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            out = self.unet(x.to(self.unet.dtype), t, **inputs, **(residuals or {}), return_dict=False)[0]
        return out.float()


class SdxlTextEncoder:
    """Texts (N,) → :class:`SdxlCondition`, as ``StableDiffusionXLPipeline.encode_prompt`` (no clip skip).

    Args:
        tokenizers: ``tokenizer``, ``tokenizer_2`` (or ``tokenizer_2`` alone when the model has no first encoder).
        text_encoders: ``CLIPTextModel``, ``CLIPTextModelWithProjection`` (or the latter alone), in that order.
        dtype: The UNet's dtype (the condition's).
        zeros_for_empty: The pipeline's ``force_zeros_for_empty_prompt``: an empty prompt is zeros.
    """

    def __init__(
        self, tokenizers: Sequence[Any], text_encoders: Sequence[Any], dtype: torch.dtype, zeros_for_empty: bool
    ) -> None:
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.dtype = dtype
        self.zeros_for_empty = zeros_for_empty

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> SdxlCondition:
        texts = list(texts)
        hidden: list[Tensor] = []
        pooled: Tensor | None = None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # the pooled projection of the encoder that has one
                pooled = out[0]
            hidden.append(out.hidden_states[-2])  # SDXL always reads the penultimate layer
        if pooled is None:
            raise InvalidInputError("SDXL needs a text encoder with a pooled projection (CLIPTextModelWithProjection)")
        embeds = torch.cat(hidden, dim=-1).to(self.dtype)
        pooled = pooled.to(embeds.device, self.dtype)
        if self.zeros_for_empty:
            empty = torch.tensor([text == "" for text in texts], device=embeds.device)
            embeds = torch.where(empty[:, None, None], torch.zeros_like(embeds), embeds)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        return SdxlCondition(embeds, pooled)


def weighted_prompts(encoder: Any) -> WeightedPrompts | None:
    """Both encoders' penultimate hidden states with A1111 weighting and 77-token chunks, side by side, as compel's
    ``CompelForSDXL`` (:mod:`~multidiffusion.adapters.customise.prompt_weighting`); the pooled projection is the second
    encoder's on the first chunk's tokens, unweighted (A1111's pooled). A prompt that reads as nothing (``""``,
    ``"()"``) is zeros where the model's ``force_zeros_for_empty_prompt`` says so, and padding continues zero rows with
    zeros. None for an encoder other than :class:`SdxlTextEncoder`, or one without a pooled projection."""
    if not isinstance(encoder, SdxlTextEncoder):
        return None
    clips = [
        TextChunks(tokenizer, text_encoder, penultimate=True)
        for tokenizer, text_encoder in zip(encoder.tokenizers, encoder.text_encoders, strict=True)
    ]
    device = encoder.text_encoders[0].device
    # the encoder with the pooled projection (CLIPTextModelWithProjection): SDXL's second
    pooling = next((i for i, c in enumerate(clips) if hasattr(c.text_encoder, "text_projection")), None)
    if pooling is None:
        return None

    def empty_chunk() -> Tensor:
        return torch.cat([c.empty.to(device) for c in clips], dim=-1)  # (1, 77, D₁ + D₂)

    def one(text: str) -> SdxlCondition:
        segments = parse(text)
        parts = [clip.prompt(segments) for clip in clips]
        longest = max(int(embeds.shape[1]) for embeds, _ in parts)
        # both tokenizers chunk alike; one that split differently is padded with its own empty chunk
        embeds = torch.cat(
            [pad_rows(e.to(device), longest, c.empty) for (e, _), c in zip(parts, clips, strict=True)], dim=-1
        )
        # the pooled projection of the first chunk's tokens, unweighted (A1111's)
        pooler = clips[pooling]
        first = parts[pooling][1][:, : pooler.chunk].to(pooler.text_encoder.device)
        pooled = pooler.text_encoder(first, output_hidden_states=False)[0].to(device)
        if encoder.zeros_for_empty and literal(text) == "":
            embeds, pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
        return SdxlCondition(embeds.to(encoder.dtype), pooled.to(encoder.dtype))

    def pad(conditions: Sequence[SdxlCondition]) -> list[SdxlCondition]:
        longest = max(int(c.prompt_embeds.shape[1]) for c in conditions)
        chunk = empty_chunk()
        out = []
        for c in conditions:
            zero = None
            if encoder.zeros_for_empty:  # "no caption" rows stay zeros
                zero = (c.prompt_embeds == 0).flatten(1).all(1) & (c.pooled == 0).flatten(1).all(1)
            out.append(SdxlCondition(pad_rows(c.prompt_embeds, longest, chunk, zero), c.pooled, c.guidance))
        return out

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> SdxlCondition:
        rows = pad([one(text) for text in texts])
        return SdxlCondition(torch.cat([r.prompt_embeds for r in rows]), torch.cat([r.pooled for r in rows]))

    return WeightedPrompts(encode=encode, same_length=lambda conditions: pad(list(conditions)))


def embed_guidance(condition: SdxlCondition, guidance_scale: float) -> SdxlCondition:
    """The condition with g embedded, for UNets with ``time_cond_proj_dim`` (LoadedModel.embed_guidance)."""
    return replace(condition, guidance=float(guidance_scale))


def default_scheduler_of(scheduler_config: Any) -> str:
    """The scheduler class the model's config names (SDXL: EulerDiscreteScheduler; SDXL-Turbo: EulerAncestral
    with trailing spacing), or Euler where that is no diffusers scheduler."""
    name = str(scheduler_config.get("_class_name", ""))
    try:
        return check_scheduler_name(name)
    except InvalidInputError:
        return "euler"


def from_components(
    source: str,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    text_encoder_2: Any,
    tokenizer_2: Any,
    scheduler_config: Any,
    *,
    force_zeros_for_empty_prompt: bool = True,
    crop_coords: str = "zero",
) -> LoadedModel:
    """Assemble a :class:`LoadedModel` from SDXL components already in memory (on their device).

    ``text_encoder``/``tokenizer`` may be None (the pipeline then uses the second encoder alone). A float16
    VAE whose config sets ``force_upcast`` is moved to float32 (see the module docstring).
    """
    if getattr(unet.config, "addition_embed_type", None) != "text_time":
        raise InvalidInputError("this UNet has no SDXL micro-conditioning (addition_embed_type 'text_time')")
    vae_config = vae.config
    if getattr(vae_config, "latents_mean", None) is not None and getattr(vae_config, "latents_std", None) is not None:
        raise InvalidInputError(
            "this model's VAE normalises latents per channel (latents_mean/latents_std, e.g. Playground v2.5), "
            "which this tool does not support"
        )
    if vae.dtype == torch.float16 and getattr(vae_config, "force_upcast", False):
        vae.to(torch.float32)  # diffusers decodes such a VAE in float32 (StableDiffusionXLPipeline.__call__)
    codec = VaeCodec(vae)
    denoiser = SdxlDenoiser(unet, codec.scale_factor, crop_coords)
    tokenizers = [tokenizer, tokenizer_2] if text_encoder is not None else [tokenizer_2]
    encoders = [text_encoder, text_encoder_2] if text_encoder is not None else [text_encoder_2]
    itemsize = torch.finfo(unet.dtype).bits // 8
    few_step = is_few_step_config(scheduler_config)
    guidance_embedded = getattr(unet.config, "time_cond_proj_dim", None) is not None
    return LoadedModel(
        source=source,
        family=FAMILY.name,
        denoiser=denoiser,
        codec=codec,
        encode_prompts=SdxlTextEncoder(tokenizers, encoders, unet.dtype, force_zeros_for_empty_prompt),
        scheduler_config=dict(scheduler_config),
        native_window=int(unet.config.sample_size),
        device=unet.device,
        dtype=unet.dtype,
        bytes_per_view_cell=view_cell_bytes(unet.config, itemsize),
        # LCM-distilled UNets embed g (their cards use 8); other few-step models run unguided.
        default_guidance_scale=LCM_GUIDANCE_SCALE if guidance_embedded else 1.0 if few_step else DEFAULT_GUIDANCE_SCALE,
        differentiable=differentiable_parts(denoiser, codec.decode_differentiable, unet, vae),
        components={
            "unet": unet,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
        },
        default_scheduler=default_scheduler_of(scheduler_config),
        embed_guidance=embed_guidance if guidance_embedded else None,
        prompt_limits=(PromptLimit.of("CLIP", tokenizers[0]),),
        # Inpainting UNets (9 input channels) also read the mask and the masked image's latents.
        inpaint_channels=int(unet.config.in_channels) - codec.latent_channels,
        control=UNetControl(denoiser, codec.scale_factor),
        prompt_weighting=weighted_prompts,
    )


def from_pipeline(source: str, pipe: Any, device: torch.device, crop_coords: str = "zero") -> LoadedModel:
    """A loaded ``StableDiffusionXLPipeline`` as a :class:`LoadedModel` on ``device``."""
    to_device(pipe, device)
    return from_components(
        source,
        pipe.unet,
        pipe.vae,
        pipe.text_encoder,
        pipe.tokenizer,
        pipe.text_encoder_2,
        pipe.tokenizer_2,
        pipe.scheduler.config,
        force_zeros_for_empty_prompt=bool(getattr(pipe.config, "force_zeros_for_empty_prompt", True)),
        crop_coords=crop_coords,
    )


_NO_EXTRAS = {"image_encoder": None, "feature_extractor": None, "add_watermarker": False}


def load_pretrained(
    source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
) -> LoadedModel:
    """Load a diffusers-format SDXL model (SDXL base, Turbo, Lightning, fine-tunes) from a repo id or folder."""
    pipe = load_pretrained_pipeline(PIPELINE, source, dtype, allow_pickle=allow_pickle, **_NO_EXTRAS)
    return from_pipeline(source, pipe, device)


def load_single_file(path: str, dtype: torch.dtype, device: torch.device, config: str | None = None) -> LoadedModel:
    """Load an original-format SDXL checkpoint (``.safetensors`` / ``.ckpt``); ``config`` as in
    :func:`~multidiffusion.adapters.loading.diffusers_files.load_single_file_pipeline`."""
    pipe = load_single_file_pipeline(PIPELINE, path, dtype, config, add_watermarker=False)
    return from_pipeline(path, pipe, device)
