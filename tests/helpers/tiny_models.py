"""Tiny random Stable Diffusion components, built in-process (no downloads), for tests and benchmarks.

The VAE has 4 blocks (scale factor 8), as diffusers' panorama pipeline assumes; the UNet's native size
is 64 latent cells, the window diffusers' panorama pipeline hard-codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_tokenizer_files(folder: Path) -> Path:
    """A character-level CLIP BPE vocabulary (no merges) with ``model_max_length=77``."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def tiny_t5_tokenizer(max_length: int | None = None) -> Any:
    """A character-level T5 unigram tokenizer (pad 0, eos 1, unk 2; ▁-prefixed letters for word starts) that
    survives ``save_pretrained`` / ``from_pretrained``; ``max_length``: its ``model_max_length``."""
    import string

    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in chars] + [("▁" + c, -1.5) for c in string.ascii_letters]
    extra = {} if max_length is None else {"model_max_length": max_length}
    return T5Tokenizer(vocab=vocab, extra_ids=0, **extra)


def tiny_vae(channels: int, sample_size: int, latent_channels: int = 4, **config: Any) -> Any:
    """A random SD-style VAE with 4 blocks (scale factor 8) of ``channels`` each; ``config`` adds to it (SD 3's and
    Flux's 16 latent channels come with scaling and shift factors and no quant convs). Draws from the global RNG,
    so callers seed it (as :func:`make_components` does)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(channels,) * 4,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=channels // 2,
        sample_size=sample_size,
        **config,
    )


def tiny_clip_config(tokenizer: Any, hidden: int, heads: int, layers: int, **extra: Any) -> Any:
    """A tiny CLIP text encoder's config for ``tokenizer`` (77 positions); ``extra`` adds to it."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        **extra,
    )


def make_components(tmp: Path, seed: int = 0, sample_size: int = 64) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, scheduler with tiny random weights (seeded, fp32, CPU)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tok_dir = write_tokenizer_files(tmp / "tokenizer_files")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # test helper only: reproducible random weights
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = tiny_vae(channels=8, sample_size=128)
        text_encoder = CLIPTextModel(tiny_clip_config(tokenizer, hidden=32, heads=4, layers=2))
    finally:
        torch.random.set_rng_state(gen_state)
    scheduler = sd_ddim_scheduler()
    for m in (unet, vae, text_encoder):
        m.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def sd_ddim_scheduler() -> Any:
    """DDIM with Stable Diffusion's configuration (x̂₀ clipping off: it is not linear)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def save_model_folder(components: dict[str, Any], folder: Path) -> Path:
    """Save the components as a diffusers ``StableDiffusionPipeline`` folder (``save_pretrained``)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    return folder


def loaded(components: dict[str, Any], source: str = "tiny") -> Any:
    """The SD adapter's ``LoadedModel`` of :func:`make_components`' parts, built without saving them."""
    from multidiffusion.adapters.families.sd import from_components

    c = components
    return from_components(source, c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"].config)
