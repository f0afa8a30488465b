"""Stable Diffusion 1.x / 2.x adapter: CLIP text encoding, the UNet as a Denoiser, the VAE codec."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.errors import InvalidInputError
from .base import Differentiable, LoadedModel
from .hub import explain_load_error, first_line
from .quiet import library_chatter_off
from .vae import VaeCodec

FAMILY = "stable-diffusion"


class UNetDenoiser:
    """A diffusers ``UNet2DConditionModel`` as a :class:`~multidiffusion.core.types.Denoiser`.

    Conditions are text embeddings (N, L, D); the batch's conditions are concatenated in order.
    Input and output are float32; the UNet runs in its own dtype.

    Args:
        unet: The UNet.
        track_grad: False (sampling): never build an autograd graph. True: follow the ambient grad mode,
            for gradients with respect to the input (SyncDiffusion).
    """

    def __init__(self, unet: torch.nn.Module, track_grad: bool = False) -> None:
        self.unet = unet
        self.track_grad = track_grad

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Tensor]) -> Tensor:
        embeddings = torch.cat(list(conds)) if len(conds) > 1 else conds[0]
        if embeddings.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} latents but {embeddings.shape[0]} text embeddings")
        with torch.set_grad_enabled(self.track_grad and torch.is_grad_enabled()):
            out = self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=embeddings, return_dict=False)[0]
        return out.float()


def differentiable_parts(unet: Any, codec: VaeCodec) -> Differentiable:
    """The UNet and the VAE decoder as differentiable functions (gradients w.r.t. their inputs only)."""
    vae = codec.vae

    def decode(latents: Tensor) -> Tensor:
        z = latents / codec.scaling_factor + codec.shift_factor
        return vae.decode(z.to(vae.dtype), return_dict=False)[0].float()

    def set_checkpointing(on: bool) -> None:
        for module in (unet, vae):
            if hasattr(module, "enable_gradient_checkpointing"):
                module.enable_gradient_checkpointing() if on else module.disable_gradient_checkpointing()

    return Differentiable(UNetDenoiser(unet, track_grad=True), decode, set_checkpointing)


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


def from_components(
    source: str, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler_config: Any
) -> LoadedModel:
    """Assemble a :class:`LoadedModel` from diffusers / transformers components already in memory."""
    codec = VaeCodec(vae)
    itemsize = torch.finfo(unet.dtype).bits // 8
    return LoadedModel(
        source=source,
        family=FAMILY,
        denoiser=UNetDenoiser(unet),
        codec=codec,
        encode_prompts=ClipTextEncoder(tokenizer, text_encoder, unet.dtype),
        scheduler_config=dict(scheduler_config),
        native_window=int(unet.config.sample_size),
        device=unet.device,
        dtype=unet.dtype,
        # Peak activations of an SD UNet row scale with its first block's width; 128 bytes·channel per
        # latent cell is a rough, conservative fit (≈ 170 MB per 64×64 fp16 row for SD 2).
        bytes_per_view_cell=128 * int(unet.config.block_out_channels[0]) * itemsize,
        differentiable=differentiable_parts(unet, codec),
        extra={"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer},
    )


def _from_pipeline(source: str, pipe: Any, device: torch.device) -> LoadedModel:
    with library_chatter_off():  # diffusers warns that float16 "cannot run" on a CPU; it can (slowly)
        pipe.to(device)
    return from_components(source, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config)


def load_pretrained(source: str, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    """Load a diffusers-format SD 1.x/2.x model from a hub repo id or a local folder."""
    from diffusers import StableDiffusionPipeline

    try:
        with library_chatter_off():
            pipe = StableDiffusionPipeline.from_pretrained(
                source, dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InvalidInputError(explain_load_error(source, exc)) from exc
    return _from_pipeline(source, pipe, device)


def load_single_file(path: str, dtype: torch.dtype, device: torch.device, config: str | None = None) -> LoadedModel:
    """Load an original-format SD checkpoint (``.safetensors`` / ``.ckpt``).

    ``config`` is a diffusers model folder or repo id whose configs describe the checkpoint; without
    it diffusers infers one and may need the hub to fetch it.
    """
    from diffusers import StableDiffusionPipeline

    if not Path(path).is_file():
        raise InvalidInputError(f"model file {path!r} does not exist")
    if config is not None:
        check_config_source(config)
    kwargs: dict[str, Any] = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
    if config is not None:
        kwargs["config"] = config
    try:
        with library_chatter_off():
            pipe = StableDiffusionPipeline.from_single_file(path, **kwargs)
    except Exception as exc:  # diffusers raises many types here; all mean "not a usable checkpoint"
        message = explain_load_error(config or path, exc)
        if config is None and message.startswith("model "):  # it went to the hub for a config
            message = (
                f"checkpoint {path!r} needs a config to describe it and the hub cannot be reached; "
                "give --config with a diffusers model folder (or repo id) of the same architecture"
            )
        elif not message.startswith("model "):
            message = f"could not load checkpoint {path!r}: {first_line(exc)}"
        raise InvalidInputError(message) from exc
    return _from_pipeline(path, pipe, device)


def check_config_source(config: str) -> None:
    """``config`` of a single-file load: a diffusers model folder (with model_index.json) or a repo id."""
    from .loading import looks_like_repo_id

    folder = Path(config).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise InvalidInputError(f"config folder {config!r} holds no diffusers model (no model_index.json)")
    elif not looks_like_repo_id(config):
        raise InvalidInputError(f"config {config!r} is neither a diffusers model folder nor an owner/name repo id")
