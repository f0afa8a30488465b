"""Tiny random Stable Diffusion 3 components (``StableDiffusion3Pipeline``'s), built in-process with no downloads.

Shaped like diffusers' own SD3 fast tests, kept as small: a one-block MMDiT (``SD3Transformer2DModel``, patch 2,
4 heads of 8 = 32 wide) over a 16-channel VAE (4 blocks, scale factor 8, SD3's scaling and shift factors, no
quant convs), so a canvas cell is one 2 × 2 patch of 64 channels and 16 px. ``sample_size`` 32 VAE cells makes the
native window 16 canvas cells (256 px); the positional table covers 48 × 48 patches (768 px), SD3's 192 scaled
down. The text side keeps the real model's arithmetic with small widths: CLIP-L (hidden 8) and CLIP-G (hidden 16),
three layers each so the penultimate hidden state differs from the last; their hidden states side by side (24)
are zero-padded to the T5 width (``joint_attention_dim`` 32, as 2048 is padded to 4096 in SD3), and their pooled
projections (32 + 32) make ``pooled_projection_dim`` 64. The T5 tokenizer is a character-level Unigram model
(``T5Tokenizer`` from a vocabulary list) that round-trips through ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.helpers.tiny_models import tiny_clip_config, tiny_t5_tokenizer, tiny_vae, write_tokenizer_files

SAMPLE_SIZE = 32  # VAE latent cells: the native window is 16 canvas cells = 256 px
POS_EMBED_MAX_SIZE = 48  # patches: views up to 768 px
JOINT = 32  # T5 width = the transformer's joint_attention_dim
PROJECTION = 32  # each CLIP's pooled projection; the transformer's pooled_projection_dim is twice this
SHIFT = 3.0  # FlowMatchEuler shift, SD3's


def sd3_scheduler(**changes: Any) -> Any:
    """FlowMatchEulerDiscreteScheduler as SD3 medium ships it (``shift`` 3.0); ``changes`` override the config."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**{"num_train_timesteps": 1000, "shift": SHIFT, **changes})


def _clip_config(tokenizer: Any, hidden: int) -> Any:
    # 3 layers: hidden_states[-2], SD3's penultimate layer, differs from the last one
    return tiny_clip_config(tokenizer, hidden=hidden, heads=2, layers=3, hidden_act="gelu", projection_dim=PROJECTION)


def make_sd3_components(tmp: Path, seed: int = 0, with_t5: bool = True) -> dict[str, Any]:
    """transformer, vae, text_encoder(_2, _3), tokenizer(_2, _3), scheduler with tiny random weights (seeded,
    float32, CPU). ``with_t5=False``: text_encoder_3 and tokenizer_3 are None (the pipeline then uses zeros)."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel

    tok_dir = write_tokenizer_files(tmp / "sd3_tokenizer_files")
    vocab, merges = str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt")
    tokenizer = CLIPTokenizer(vocab, merges, model_max_length=77)
    tokenizer_2 = CLIPTokenizer(vocab, merges, model_max_length=77, pad_token="!")  # SD3's tokenizer_2 pads with !
    tokenizer_3 = tiny_t5_tokenizer() if with_t5 else None
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # test helper only: reproducible random weights
        transformer = SD3Transformer2DModel(
            sample_size=SAMPLE_SIZE,
            patch_size=2,
            in_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=JOINT,
            pooled_projection_dim=2 * PROJECTION,
            out_channels=16,
            pos_embed_max_size=POS_EMBED_MAX_SIZE,
        )
        vae = tiny_vae(
            channels=8,
            sample_size=256,
            latent_channels=16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=1.5305,  # SD3's VAE config
            shift_factor=0.0609,
        )
        text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, 8))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, 16))
        text_encoder_3 = None
        if with_t5:
            text_encoder_3 = T5EncoderModel(
                T5Config(
                    vocab_size=len(tokenizer_3),
                    d_model=JOINT,
                    d_kv=8,
                    d_ff=37,
                    num_layers=2,
                    num_heads=4,
                    relative_attention_num_buckets=8,
                    pad_token_id=0,
                    eos_token_id=1,
                    decoder_start_token_id=0,
                )
            )
    finally:
        torch.random.set_rng_state(gen_state)
    for m in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        if m is not None:
            m.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "tokenizer_3": tokenizer_3,
        "scheduler": sd3_scheduler(),
    }


def sd3_pipeline(components: dict[str, Any], **changes: Any) -> Any:
    """A diffusers ``StableDiffusion3Pipeline`` on the components (``changes`` replace some)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**{**components, **changes})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_sd3_folder(components: dict[str, Any], folder: Path) -> Path:
    """Save the components as a diffusers ``StableDiffusion3Pipeline`` folder (``save_pretrained``)."""
    sd3_pipeline(components).save_pretrained(folder)
    return folder
