"""Tiny random SDXL components (``StableDiffusionXLPipeline``'s), built in-process with no downloads.

Shaped like diffusers' own SDXL fast tests: a two-block UNet with ``addition_embed_type="text_time"`` whose
cross-attention width is the two CLIP encoders' hidden sizes side by side (16 + 16), and whose added embedding
takes the six time ids (original size, crop top-left, target size; ``addition_time_embed_dim`` each) and the
second encoder's pooled projection: ``projection_class_embeddings_input_dim = 6 · 8 + 16 = 64``. The native
window is 16 latent cells (128 px); the VAE is the suite's 4-block tiny VAE (scale factor 8) with SDXL's
scaling factor and ``force_upcast``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.helpers.tiny_models import tiny_clip_config, tiny_vae, write_tokenizer_files

HIDDEN = 16  # both text encoders' hidden size; the UNet attends to their concatenation (32)
PROJECTION = 16  # text_encoder_2's pooled projection
TIME_EMBED = 8  # addition_time_embed_dim
SAMPLE_SIZE = 16  # latent cells: native window 128 px


SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
"""SDXL base 1.0's ``scheduler/scheduler_config.json``: the keys of compatible schedulers (DDIM's ``clip_sample``,
``set_alpha_to_one``) ride along in the config, so DDIM built from it runs without x̂₀ clipping."""


def sdxl_euler_scheduler() -> Any:
    """EulerDiscreteScheduler as SDXL base 1.0 ships it."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)


def _text_config(tokenizer: Any, **extra: Any) -> Any:
    # 3 layers: hidden_states[-2] (SDXL's penultimate layer) differs from the last one
    return tiny_clip_config(tokenizer, hidden=HIDDEN, heads=2, layers=3, hidden_act="gelu", **extra)


def tiny_sdxl_unet(sample_size: int = SAMPLE_SIZE, time_cond_proj_dim: int | None = None) -> Any:
    """The tiny SDXL UNet; draws from the global RNG, so callers seed it. ``time_cond_proj_dim``: a guidance-
    embedding UNet (as LCM-SDXL's)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED + PROJECTION,
        cross_attention_dim=2 * HIDDEN,
        norm_num_groups=8,
        time_cond_proj_dim=time_cond_proj_dim,
    ).eval()


def make_sdxl_components(tmp: Path, seed: int = 0, sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """unet, vae, text_encoder(_2), tokenizer(_2), scheduler with tiny random weights (seeded, fp32, CPU)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tok_dir = write_tokenizer_files(tmp / "sdxl_tokenizer_files")
    vocab, merges = str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt")
    tokenizer = CLIPTokenizer(vocab, merges, model_max_length=77)
    tokenizer_2 = CLIPTokenizer(vocab, merges, model_max_length=77, pad_token="!")  # SDXL's tokenizer_2 pads with !
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # test helper only: reproducible random weights
        unet = tiny_sdxl_unet(sample_size)
        vae = tiny_vae(channels=8, sample_size=128)
        vae.register_to_config(scaling_factor=0.13025, force_upcast=True)  # SDXL's VAE config
        text_encoder = CLIPTextModel(_text_config(tokenizer))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, projection_dim=PROJECTION))
    finally:
        torch.random.set_rng_state(gen_state)
    for m in (unet, vae, text_encoder, text_encoder_2):
        m.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": sdxl_euler_scheduler(),
    }


def sdxl_pipeline(components: dict[str, Any], **changes: Any) -> Any:
    """A diffusers ``StableDiffusionXLPipeline`` on the components (``changes`` replace some), no watermark."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**{**components, **changes}, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_sdxl_folder(components: dict[str, Any], folder: Path) -> Path:
    """Save the components as a diffusers ``StableDiffusionXLPipeline`` folder (``save_pretrained``)."""
    sdxl_pipeline(components).save_pretrained(folder)
    return folder
