"""Optional speed settings of a loaded model's networks: channels-last memory format and ``torch.compile``.

Both change how the networks run, not what they compute (outputs agree to float rounding), and both are
off by default; docs/performance.md has what each does on a CPU. They apply to the torch modules among the
model's ``components`` (``unet`` or ``transformer``, and ``vae``; only the denoiser is compiled, since the codec
runs once per image); a model without networks (the Gaussian-field model) is left as it is.
"""

from __future__ import annotations

import torch

from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.adapters.model.state import SpeedSettings

NETWORK_KEYS: tuple[str, ...] = ("unet", "transformer", "vae")
DENOISER_KEYS: tuple[str, ...] = ("unet", "transformer")


def networks(model: LoadedModel) -> list[torch.nn.Module]:
    """The torch modules of ``model`` that the speed settings act on (UNet or transformer, VAE), in that order."""
    found = (model.components.get(key) for key in NETWORK_KEYS)
    return [m for m in found if isinstance(m, torch.nn.Module)]


def apply_speed_settings(model: LoadedModel, *, channels_last: bool = False, compile: bool = False) -> LoadedModel:
    """Set the networks' memory format and compile them, in place; returns ``model``.

    Args:
        model: A loaded model.
        channels_last: Store convolution weights as NHWC (``torch.channels_last``). oneDNN (CPU) and cuDNN
            (tensor cores) run NHWC convolutions without the layout conversions NCHW needs; activations
            follow the weights' layout, so inputs need no change.
        compile: Wrap the denoiser network's forward in ``torch.compile`` (inductor). The first call at
            each batch shape compiles (minutes on a CPU, where a C++ compiler must be installed); later
            calls reuse it.
    """
    for module in networks(model):
        if channels_last:
            module.to(memory_format=torch.channels_last)
        if compile and any(module is model.components.get(key) for key in DENOISER_KEYS):
            module.compile()
    model.state.speed = SpeedSettings(channels_last=channels_last, compile=compile)
    return model
