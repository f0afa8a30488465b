"""Weight-backed image-quality metrics: CLIP score, FID, KID and a GIQA-style KNN score.

What each needs:

* CLIP score: a CLIP model that transformers' ``CLIPModel.from_pretrained`` and ``CLIPTokenizer`` read from a local
  folder or the local Hugging Face cache (never downloaded). Default ``openai/clip-vit-large-patch14``.
* FID, KID, GIQA: an image feature extractor (:class:`torch.nn.Module`, uint8 images (N, 3, S, S) in 0…255 →
  features (N, D)). Either the FID Inception of torch-fidelity (needs the ``torch-fidelity`` package and its
  weights file, :data:`INCEPTION_WEIGHTS`, in torch's hub cache or given by path), or any TorchScript module saved
  with ``torch.jit.save`` (:func:`load_torchscript_features`). The extractor's ``input_size`` attribute, when
  present, is S (default 299).

Anything missing raises :class:`MetricUnavailable` with one line saying what to pass; the command prints the
metric as ``n/a``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from multidiffusion.adapters.loading.hub import first_line
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.core.errors import InvalidInputError

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception (pt_inception)
DEFAULT_INPUT_SIZE = 299  # the FID Inception's input side, px
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation, used when the folder has none
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MetricUnavailable(InvalidInputError):
    """A metric cannot be computed here: its weights or package are missing. One line saying what to pass."""


def to_uint8(images: Tensor) -> Tensor:
    """Images (N, 3, H, W) in [−1, 1] → uint8 (N, 3, H, W) in 0…255 (rounded)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Images (N, 3, H, W) in [−1, 1] → uint8 (N, 3, size, size), resized with PIL's bicubic filter."""
    from PIL import Image

    out = []
    for image in to_uint8(images):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
    return torch.stack(out)


# ---- CLIP score ----------------------------------------------------------------------------------------------


@dataclass
class ClipScorer:
    """A CLIP model, its tokenizer and its image normalisation (mean, std per channel; side ``size`` px)."""

    model: Any
    tokenizer: Any
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    size: int = 224

    def pixel_values(self, images: Tensor) -> Tensor:
        """Square images (N, 3, s, s) in [−1, 1] → CLIP's input (N, 3, size, size): PIL bicubic resize to
        ``size``, scaled to [0, 1], normalised with ``mean`` / ``std`` (no torchvision needed)."""
        x = resize_uint8(images, self.size).float() / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def scores(self, images: Tensor, prompt: str, batch: int = 16) -> Tensor:
        """CLIP score of each image (N, 3, s, s) in [−1, 1] against ``prompt``: 100 · max(cos, 0), shape (N,).

        The same formula as torchmetrics' ``CLIPScore``; it is computed here rather than through torchmetrics so
        that the image preprocessing is PIL-only and the model can be any in-memory ``CLIPModel``. The prompt is
        truncated to the tokenizer's length (77 tokens for CLIP).
        """
        with torch.no_grad():
            tokens = self.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt")
            text = _as_tensor(self.model.get_text_features(**tokens))
            text = text / text.norm(dim=-1, keepdim=True)
            out = []
            for k in range(0, len(images), batch):
                pixels = self.pixel_values(images[k : k + batch]).to(self.model.dtype)
                feats = _as_tensor(self.model.get_image_features(pixel_values=pixels))
                feats = feats / feats.norm(dim=-1, keepdim=True)
                out.append(100.0 * (feats.float() @ text.float().T).reshape(-1).clamp(min=0))
        return torch.cat(out)


def _as_tensor(features: Any) -> Tensor:
    """transformers' ``get_*_features`` return a tensor, or (in some versions) an output whose pooled field is it."""
    if isinstance(features, Tensor):
        return features
    return features.pooler_output


def load_clip(source: str) -> ClipScorer:
    """The CLIP model at ``source`` (a folder, or a repo id already in the local Hugging Face cache), frozen.

    Raises:
        MetricUnavailable: it is not there (nothing is downloaded), or it is not a CLIP model.
    """
    from transformers import CLIPModel, CLIPTokenizer

    hint = f"pass --clip with a local CLIP folder (the default {DEFAULT_CLIP} must be in the Hugging Face cache)"
    try:
        with library_chatter_off():
            model = CLIPModel.from_pretrained(source, local_files_only=True).eval()
            tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        raise MetricUnavailable(f"the CLIP score needs CLIP model {source!r} ({first_line(exc)}); {hint}") from exc
    for p in model.parameters():
        p.requires_grad_(False)
    mean, std = CLIP_MEAN, CLIP_STD
    config = Path(source) / "preprocessor_config.json"
    if config.is_file():
        pre = json.loads(config.read_text())
        mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
    return ClipScorer(model, tokenizer, mean, std, int(model.config.vision_config.image_size))  # type: ignore[arg-type]


# ---- features for FID / KID / GIQA ---------------------------------------------------------------------------


def load_torchscript_features(path: str) -> nn.Module:
    """A feature extractor saved with ``torch.jit.save`` (uint8 (N, 3, S, S) → (N, D)); TorchScript loading runs
    no pickled Python code.

    Raises:
        InvalidInputError: the file is missing or not a TorchScript module.
    """
    if not Path(path).is_file():
        raise InvalidInputError(f"--features {path!r} does not exist")
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except Exception as exc:
        raise InvalidInputError(
            f"--features {path!r} is not a TorchScript module saved with torch.jit.save ({first_line(exc)})"
        ) from exc


def default_inception_path() -> str:
    """Where torch-fidelity caches its FID Inception weights: torch's hub folder, ``checkpoints/``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS)


def load_inception(path: str | None = None) -> nn.Module:
    """The FID Inception-v3 (torch-fidelity's, 2048 pool features) from ``path`` or the default cache file.

    The file is first read with ``weights_only=True`` (tensors only, no pickled code).

    Raises:
        MetricUnavailable: torch-fidelity is not installed, or the weights file is absent or unreadable.
    """
    hint = "install torch-fidelity and pass --inception PATH to its FID Inception .pth, or pass --features"
    weights = path or default_inception_path()
    if not Path(weights).is_file():
        raise MetricUnavailable(f"FID, KID and GIQA need the FID Inception weights ({weights}, not found); {hint}")
    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MetricUnavailable(f"cannot read Inception weights {weights!r} ({first_line(exc)}); {hint}") from exc
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights
        ).eval()
    except Exception as exc:  # torch-fidelity missing, or an incompatible file
        raise MetricUnavailable(f"the FID Inception cannot be built ({first_line(exc)}); {hint}") from exc


def image_features(extractor: nn.Module, images: Tensor, batch: int = 16) -> Tensor:
    """Features (N, D) float64 of images (N, 3, s, s) in [−1, 1], resized to the extractor's ``input_size``."""
    size = int(getattr(extractor, "input_size", DEFAULT_INPUT_SIZE))
    with torch.no_grad():
        chunks = [extractor(resize_uint8(images[k : k + batch], size)) for k in range(0, len(images), batch)]
    return torch.cat([c.reshape(c.shape[0], -1) for c in chunks]).double()


class _Precomputed(nn.Module):
    """The identity on features (N, D): lets torchmetrics' FID/KID take features already extracted once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def fid(fake: Tensor, real: Tensor) -> float:
    """Fréchet distance between feature sets fake (N, D) and real (M, D), N, M ≥ 2 (torchmetrics' FID)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Precomputed(fake.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


KID_SUBSET = 50  # the subset size used; with fewer images the unbiased estimate's variance swamps it (it can be < 0)


def kid(fake: Tensor, real: Tensor, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the kernel inception distance over 100 subsets of min(50, N, M) features (torchmetrics' KID;
    polynomial kernel of degree 3). The subsets are drawn from torch's RNG, seeded with ``seed`` and restored."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(KID_SUBSET, len(fake), len(real))
    if size < KID_SUBSET:
        warnings.warn(
            f"KID on {size} samples per set is unreliable (it is estimated on subsets of {KID_SUBSET}; on fewer its "
            f"mean can even be negative): give at least {KID_SUBSET} generated and {KID_SUBSET} reference crops",
            UserWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():  # "will save all extracted features in buffer": they are already in memory
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(fake.shape[1]), subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def knn_distance(fake: Tensor, real: Tensor, k: int = 5) -> Tensor:
    """GIQA-style KNN score of each feature in fake (N, D): its mean Euclidean distance to its min(k, M) nearest
    features in real (M, D), shape (N,). Lower is closer to the reference set (feature units)."""
    distances = torch.cdist(fake.double(), real.double())
    return distances.topk(min(k, real.shape[0]), dim=1, largest=False).values.mean(1)
