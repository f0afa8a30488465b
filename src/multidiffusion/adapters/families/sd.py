"""Stable Diffusion 1.x / 2.x adapter: CLIP text encoding (A1111 weighting through compel), the UNet as a Denoiser
with ControlNets and T2I-Adapters, the VAE codec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.codecs.vae import VaeCodec
from multidiffusion.adapters.customise.a1111_syntax import parse
from multidiffusion.adapters.customise.control import UNET_KINDS, UNetControl
from multidiffusion.adapters.customise.prompt_weighting import TextChunks, WeightedPrompts, pad_rows
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.loading.diffusers_files import (
    load_pretrained_pipeline,
    load_single_file_pipeline,
    to_device,
)
from multidiffusion.adapters.model.differentiable import SamplingDenoiser, differentiable_parts
from multidiffusion.adapters.model.loaded import LoadedModel, PromptLimit
from multidiffusion.adapters.schedulers.names import default_scheduler_for, is_few_step_config
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError

PIPELINE = "StableDiffusionPipeline"
FAMILY = Family(
    name="stable-diffusion",
    title="Stable Diffusion 1.x/2.x (also SD-Turbo and LCM)",
    module=__name__,
    pipelines=(PIPELINE, "StableDiffusionInpaintPipeline"),
    checkpoint_types=("v1", "v2", "inpainting", "inpainting_v2"),
    control_kinds=UNET_KINDS,
)

DENOISER = "unet"  # the denoising network's folder in a diffusers model


def view_cell_bytes(config: Any, itemsize: int) -> int:
    """Rough peak activation bytes per latent cell of one UNet row (``config``: the UNet's, a dict or its config)."""
    # Peak activations of an SD UNet row scale with its first block's width; 128 bytes·channel per latent cell is a
    # rough, conservative fit (≈ 170 MB per 64×64 fp16 row for SD 2).
    return 128 * int(_get(config, "block_out_channels")[0]) * itemsize


def native_cells(config: Any) -> int:
    """The UNet's training resolution in latent cells (its ``sample_size``)."""
    return int(_get(config, "sample_size"))


def cell_px(vae_config: Any, config: Any) -> int:
    """Pixels per latent cell: the VAE's downsampling, 2^(levels − 1) (8)."""
    return 2 ** (len(_get(vae_config, "block_out_channels")) - 1)


def _get(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, dict) else getattr(config, key)


class UNetDenoiser(SamplingDenoiser):
    """A diffusers ``UNet2DConditionModel`` as a :class:`~multidiffusion.core.types.Denoiser`.

    Conditions are text embeddings (N, L, D); the batch's conditions are concatenated in order.
    Input and output are float32; the UNet runs in its own dtype. Sampling never builds an autograd graph;
    ``forward(…, track_grad=True)`` follows the ambient grad mode (SyncDiffusion's gradient).
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet

    def network_inputs(self, x: Tensor, conds: Sequence[Tensor], views: Sequence[View] | None = None) -> dict[str, Any]:
        """The UNet's keyword inputs besides (x, t) for this batch: ``encoder_hidden_states`` (B, L, D) in the
        UNet's dtype. A ControlNet takes the same (:mod:`~multidiffusion.adapters.customise.control`)."""
        embeddings = torch.cat(list(conds)) if len(conds) > 1 else conds[0]
        if embeddings.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"{x.shape[0]} latents but {embeddings.shape[0]} text embeddings; each condition needs one row per "
                "canvas"
            )
        return {"encoder_hidden_states": embeddings}

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        conds: Sequence[Tensor],
        views: Sequence[View] | None = None,
        *,
        track_grad: bool,
        residuals: dict[str, Any] | None = None,
    ) -> Tensor:
        """x: (len(conds)·N, 4, h, w) → ε (or v), float32. ``residuals``: extra UNet inputs from control networks
        (``down_block_additional_residuals``, ``mid_block_additional_residual``,
        ``down_intrablock_additional_residuals``)."""
        inputs = self.network_inputs(x, conds, views)
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            out = self.unet(x.to(self.unet.dtype), t, **inputs, **(residuals or {}), return_dict=False)[0]
        return out.float()


class ClipTextEncoder:
    """Texts → CLIP hidden states (N, 77, D), tokenised as diffusers' Stable Diffusion pipelines do."""

    def __init__(self, tokenizer: Any, text_encoder: torch.nn.Module, dtype: torch.dtype) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.dtype = dtype

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.text_encoder.device)
        hidden = self.text_encoder(tokens.input_ids.to(self.text_encoder.device), attention_mask=mask)[0]
        return hidden.to(self.dtype)


def weighted_prompts(encoder: Any) -> WeightedPrompts | None:
    """CLIP's last hidden states with A1111 weighting and 77-token chunks
    (:mod:`~multidiffusion.adapters.customise.prompt_weighting`); None for an encoder other than
    :class:`ClipTextEncoder`."""
    if not isinstance(encoder, ClipTextEncoder):
        return None
    clip = TextChunks(encoder.tokenizer, encoder.text_encoder, penultimate=False)

    def pad(conditions: Sequence[Tensor]) -> list[Tensor]:
        longest = max(int(c.shape[1]) for c in conditions)
        return [pad_rows(c, longest, clip.empty) for c in conditions]

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> Tensor:
        rows = pad([clip.prompt(parse(text))[0] for text in texts])
        return torch.cat(rows).to(encoder.dtype)

    return WeightedPrompts(encode=encode, same_length=lambda conditions: pad(list(conditions)))


def from_components(
    source: str, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler_config: Any
) -> LoadedModel:
    """Assemble a :class:`LoadedModel` from diffusers / transformers components already in memory."""
    codec = VaeCodec(vae)
    denoiser = UNetDenoiser(unet)
    itemsize = torch.finfo(unet.dtype).bits // 8
    return LoadedModel(
        source=source,
        family=FAMILY.name,
        denoiser=denoiser,
        codec=codec,
        encode_prompts=ClipTextEncoder(tokenizer, text_encoder, unet.dtype),
        scheduler_config=dict(scheduler_config),
        native_window=int(unet.config.sample_size),
        device=unet.device,
        dtype=unet.dtype,
        bytes_per_view_cell=view_cell_bytes(unet.config, itemsize),
        differentiable=differentiable_parts(denoiser, codec.decode_differentiable, unet, vae),
        # Few-step models (SD-Turbo, LCM) run their own scheduler without guidance; others DDIM, as the paper.
        default_scheduler=default_scheduler_for(scheduler_config, "ddim"),
        default_guidance_scale=1.0 if is_few_step_config(scheduler_config) else 7.5,
        components={"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer},
        prompt_limits=(PromptLimit.of("CLIP", tokenizer),),
        # Inpainting UNets (9 input channels) also read the mask and the masked image's latents.
        inpaint_channels=int(unet.config.in_channels) - codec.latent_channels,
        control=UNetControl(denoiser, codec.scale_factor),
        prompt_weighting=weighted_prompts,
    )


def from_pipeline(source: str, pipe: Any, device: torch.device) -> LoadedModel:
    """A loaded ``StableDiffusionPipeline`` as a :class:`LoadedModel` on ``device``."""
    to_device(pipe, device)
    return from_components(source, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config)


def load_pretrained(
    source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
) -> LoadedModel:
    """Load a diffusers-format SD 1.x/2.x model from a hub repo id or a local folder."""
    pipe = load_pretrained_pipeline(
        PIPELINE,
        source,
        dtype,
        allow_pickle=allow_pickle,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return from_pipeline(source, pipe, device)


def load_single_file(path: str, dtype: torch.dtype, device: torch.device, config: str | None = None) -> LoadedModel:
    """Load an original-format SD checkpoint (``.safetensors`` / ``.ckpt``); ``config`` as in
    :func:`~multidiffusion.adapters.loading.diffusers_files.load_single_file_pipeline`."""
    pipe = load_single_file_pipeline(PIPELINE, path, dtype, config, safety_checker=None, requires_safety_checker=False)
    return from_pipeline(path, pipe, device)
