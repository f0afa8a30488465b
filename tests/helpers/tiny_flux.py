"""Tiny random Flux components (``FluxPipeline``'s), built in-process (no downloads), for tests.

The transformer is diffusers' own test configuration (1 double- and 1 single-stream block, 2 heads of 16,
RoPE axes 4 + 4 + 8) with Flux's 64 input channels; ``guidance_embeds`` makes it dev-style. The VAE has
Flux's 16 latent channels, scaling and shift factors and no quant convs, with 4 blocks (scale factor 8, so a
token is 16 px). CLIP uses the character-level BPE of ``tiny_models``; T5 a character-level unigram
vocabulary wrapped as transformers' ``T5Tokenizer`` (the tokenizers-backed class that ``T5TokenizerFast``
names), so ``save_pretrained`` / ``from_pretrained`` round-trip. The schedulers are FLUX.1 dev's and
schnell's FlowMatchEuler configs (dev: dynamic shifting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.helpers.tiny_models import tiny_clip_config, tiny_t5_tokenizer, tiny_vae, write_tokenizer_files

T5_MAX_LENGTH = 16
"""The tiny T5 tokenizer's ``model_max_length``: the adapter's default ``max_sequence_length`` for it."""

DEV_SCHEDULER = {  # black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
SCHNELL_SCHEDULER = {**DEV_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}  # FLUX.1-schnell's


def t5_tokenizer(max_length: int = T5_MAX_LENGTH) -> Any:
    """The suite's character-level T5 tokenizer with ``model_max_length`` = ``max_length``."""
    return tiny_t5_tokenizer(max_length)


def flux_vae() -> Any:
    """A random AutoencoderKL with Flux's 16 latent channels, scaling/shift factors and no quant convs."""
    return tiny_vae(
        channels=8,
        sample_size=128,
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def make_flux_components(tmp: Path, *, guidance_embeds: bool, seed: int = 0) -> dict[str, Any]:
    """Every ``FluxPipeline`` component with tiny random weights (seeded, fp32, CPU); dev-style with
    ``guidance_embeds`` (and the dev scheduler), else schnell-style."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    tok_dir = write_tokenizer_files(tmp / "clip_tokenizer_files")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    tokenizer_2 = t5_tokenizer()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # test helper only: reproducible random weights
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=[4, 4, 8],
        )
        vae = flux_vae()
        text_encoder = CLIPTextModel(tiny_clip_config(tokenizer, hidden=32, heads=4, layers=2, projection_dim=32))
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=16,
                feed_forward_proj="gated-gelu",
                dropout_rate=0.0,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            )
        )
    finally:
        torch.random.set_rng_state(state)
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval()
    scheduler = FlowMatchEulerDiscreteScheduler(**(DEV_SCHEDULER if guidance_embeds else SCHNELL_SCHEDULER))
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler,
    }


def flux_pipeline(components: dict[str, Any]) -> Any:
    """diffusers' ``FluxPipeline`` of the components (progress bar off)."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_flux_folder(components: dict[str, Any], folder: Path) -> Path:
    """Save the components as a diffusers ``FluxPipeline`` folder (``save_pretrained``)."""
    flux_pipeline(components).save_pretrained(folder)
    return folder


def loaded_flux(components: dict[str, Any], source: str = "tiny-flux", **kwargs: Any) -> Any:
    """The components as our :class:`~multidiffusion.adapters.model.loaded.LoadedModel` (``kwargs`` to
    ``from_components``: e.g. ``position_ids``)."""
    from multidiffusion.adapters.families.flux import from_components

    c = components
    return from_components(
        source,
        c["transformer"],
        c["vae"],
        c["text_encoder"],
        c["tokenizer"],
        c["text_encoder_2"],
        c["tokenizer_2"],
        {"_class_name": type(c["scheduler"]).__name__, **c["scheduler"].config},
        **kwargs,
    )
