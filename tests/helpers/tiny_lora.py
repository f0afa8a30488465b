"""Tiny LoRA and textual-inversion files with random weights, built in-process (no downloads), for tests.

LoRA files are made the way diffusers' training scripts make them: peft ``LoraConfig`` adapters added to copies of
the tiny networks (so the models themselves stay untouched), their ``lora_A``/``lora_B`` weights drawn at random
(peft starts ``lora_B`` at zero, which would make the LoRA a no-op), and the pipeline class's ``save_lora_weights``
writing a ``.safetensors`` file with the adapters' configs as metadata (so ``lora_alpha`` ≠ rank survives).

Embedding files are a (k, D) set of random vectors under one key, as A1111 saves them (``emb_params``) or
diffusers does (``{"<token>": …}``); SDXL files hold one set per encoder under ``clip_l`` (D₁) and ``clip_g`` (D₂).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DENOISER_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
RANK = 4
ALPHA = 8  # scaling α / r = 2: a file whose metadata were lost would load with the wrong scaling


def _lora_layers(module: torch.nn.Module, targets: Sequence[str], generator: torch.Generator, std: float) -> Any:
    """(diffusers-format LoRA state dict, the LoraConfig as a dict) of a random LoRA on a copy of ``module``."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights=False, target_modules=list(targets))
    twin = inject_adapter_in_model(config, copy.deepcopy(module))
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(twin)), config.to_dict()


def save_lora(
    pipeline_class: Any,
    components: dict[str, Any],
    path: Path,
    *,
    seed: int = 0,
    text_encoders: Sequence[str] = ("text_encoder",),
    std: float = 0.3,
) -> Path:
    """A random LoRA on ``components``' denoiser (``unet`` or ``transformer``: its attention projections) and on the
    ``text_encoders`` named, saved by ``pipeline_class.save_lora_weights`` as ``path`` (a ``.safetensors`` file);
    returns ``path``."""
    generator = torch.Generator().manual_seed(seed)
    denoiser = "unet" if "unet" in components else "transformer"
    layers, meta = _lora_layers(components[denoiser], DENOISER_TARGETS, generator, std)
    kwargs: dict[str, Any] = {f"{denoiser}_lora_layers": layers, f"{denoiser}_lora_adapter_metadata": meta}
    for name in text_encoders:
        layers, meta = _lora_layers(components[name], TEXT_TARGETS, generator, std)
        kwargs[f"{name}_lora_layers"] = layers
        kwargs[f"{name}_lora_adapter_metadata"] = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(path.parent, weight_name=path.name, safe_serialization=True, **kwargs)
    return path


def save_embedding(
    path: Path, vectors: int, dim: int | Sequence[int], *, seed: int = 0, key: str = "emb_params"
) -> Path:
    """A random textual-inversion file at ``path`` (``.safetensors``): (``vectors``, ``dim``) under ``key``, or for
    ``dim = (D₁, D₂)`` SDXL's two sets under ``clip_l`` and ``clip_g``; returns ``path``."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    if isinstance(dim, int):
        tensors = {key: torch.randn(vectors, dim, generator=generator)}
    else:
        tensors = {
            name: torch.randn(vectors, d, generator=generator)
            for name, d in zip(("clip_l", "clip_g"), dim, strict=True)
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def family_model_with_lora(family: str, tmp: Path) -> tuple[Any, Path]:
    """(model, a LoRA file for it) for sd3 and flux, built in ``tmp``."""
    if family == "sd3":
        from diffusers import StableDiffusion3Pipeline

        from multidiffusion.adapters.families.sd3 import from_components, named_config
        from tests.helpers.tiny_sd3 import make_sd3_components

        c = make_sd3_components(tmp, with_t5=False)
        keys = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
        model = from_components("tiny-sd3", *(c[k] for k in keys), None, None, named_config(c["scheduler"]))
        return model, save_lora(StableDiffusion3Pipeline, c, tmp / "sd3.safetensors", text_encoders=("text_encoder",))
    from diffusers import FluxPipeline

    from tests.helpers.tiny_flux import loaded_flux, make_flux_components

    c = make_flux_components(tmp, guidance_embeds=False)
    return loaded_flux(c), save_lora(FluxPipeline, c, tmp / "flux.safetensors", text_encoders=("text_encoder",))
