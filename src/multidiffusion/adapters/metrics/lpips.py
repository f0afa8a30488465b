"""LPIPS (Zhang et al. 2018, VGG backbone) through the optional ``lpips`` package, imported lazily.

SyncDiffusion's perceptual loss and the coherence metrics intra-LPIPS / intra-Style need it. It needs
the ``lpips`` package, torchvision, and the VGG16 ImageNet weights (torchvision downloads them on first
use into its cache). Install with ``pip install 'multidiffusion[lpips]'``. Anything missing raises
:class:`LpipsUnavailable` with one line saying what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.loading.hub import first_line, hub_offline
from multidiffusion.core.errors import InvalidInputError

INSTALL_HINT = (
    "install lpips and a torchvision that matches your torch as docs/sync.md shows (the VGG16 weights download once)"
)
VGG16_WEIGHTS = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 file, which lpips.LPIPS(net="vgg") loads


class LpipsUnavailable(InvalidInputError):
    """LPIPS cannot be used here: the package, torchvision or the VGG16 weights are missing."""


def _import_lpips() -> Any:
    """The ``lpips`` module, or :class:`LpipsUnavailable` saying why it cannot be imported."""
    try:
        import lpips
    except Exception as exc:  # ImportError, or torchvision failing inside the import
        raise LpipsUnavailable(f"LPIPS is not available ({first_line(exc)}); {INSTALL_HINT}") from exc
    return lpips


def check_lpips_available() -> None:
    """Cheap check, before any model loads, that :func:`load_lpips_model` can work here.

    Imports ``lpips`` (and so torchvision) and looks for the VGG16 weights in torch's hub cache; when the
    file is absent it must be downloadable, which an offline run (``HF_HUB_OFFLINE=1``) rules out.

    Raises:
        LpipsUnavailable: the package or torchvision cannot be imported, or the weights are not cached and
            the run is offline.
    """
    import os

    _import_lpips()
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", VGG16_WEIGHTS)
    if hub_offline() and not os.path.isfile(cached):
        raise LpipsUnavailable(f"LPIPS needs the VGG16 weights ({cached}), which are not cached; {INSTALL_HINT}")


def load_lpips_model(device: torch.device | str = "cpu") -> Any:
    """The ``lpips.LPIPS(net="vgg")`` module on ``device``, frozen, in eval mode.

    Raises:
        LpipsUnavailable: the package or torchvision cannot be imported, or the weights cannot be loaded.
    """
    lpips = _import_lpips()
    try:
        model = lpips.LPIPS(net="vgg", verbose=False)
    except Exception as exc:  # no network for the VGG16 weights, a broken torchvision, …
        raise LpipsUnavailable(f"LPIPS could not load its VGG16 weights ({first_line(exc)}); {INSTALL_HINT}") from exc
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lpips_loss(device: torch.device | str = "cpu") -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS-VGG as a :data:`~multidiffusion.core.features.sync.PerceptualLoss`: images in [−1, 1] → distances (B,)."""
    model = load_lpips_model(device)

    def loss(images: Tensor, targets: Tensor) -> Tensor:
        return model(images, targets, normalize=False).reshape(images.shape[0])

    return loss


def gram_matrices(model: Any, images: Tensor) -> list[Tensor]:
    """Gram matrices of the LPIPS VGG16 features (relu1_2 … relu5_3) of ``images`` in [−1, 1].

    Each (B, C_l, C_l), normalised by C_l · H_l · W_l (Gatys et al. 2016's style representation).
    """
    scaled = model.scaling_layer(images)
    grams = []
    for f in model.net(scaled):
        b, c, h, w = f.shape
        flat = f.reshape(b, c, h * w)
        grams.append(flat @ flat.transpose(1, 2) / (c * h * w))
    return grams
