"""Tiny random feature extractors for the ``eval`` tests, built in-process (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from tests.helpers.tiny_models import write_tokenizer_files


class TinyFeatures(nn.Module):
    """A random conv feature extractor: uint8 (N, 3, 32, 32) → (N, 8) (mean-pooled ReLU features plus the mean
    colour, so a colour shift moves the features). TorchScript-able."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.input_size = 32  # an instance attribute, so TorchScript keeps it
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 5, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.5)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator) * 0.1)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0
        pooled = torch.relu(self.conv(x)).mean((2, 3))
        return torch.cat([pooled, x.mean((2, 3))], dim=1)


def save_features(path: Path) -> Path:
    """:class:`TinyFeatures` saved as TorchScript (``torch.jit.save``), the file ``--features`` takes."""
    torch.jit.save(torch.jit.script(TinyFeatures().eval()), str(path))
    return path


def tiny_clip_folder(folder: Path, seed: int = 1) -> Path:
    """A random CLIP (text and vision towers of width 32, 32-px images) with a character tokenizer, saved with
    ``save_pretrained``, and a ``preprocessor_config.json`` with mean 0.5 / std 0.25 (read by ``load_clip``)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tok_dir = write_tokenizer_files(folder / "tokenizer_files")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    }
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # test helper only: reproducible random weights
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    return folder


def smooth_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random RGB image: bilinearly upsampled 4 × 4 colour noise (reference-like)."""
    small = Image.fromarray(rng.integers(40, 215, (4, 4, 3), dtype=np.uint8))
    return small.resize((width, height), Image.Resampling.BILINEAR)


def noise_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Uniform per-pixel RGB noise (unlike any smooth reference)."""
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
