"""Initial noise, drawn as diffusers' ``randn_tensor`` draws it so a seed means the same image in both."""

from __future__ import annotations

import torch
from torch import Tensor


def initial_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> Tensor:
    """Standard normal noise of ``shape``.

    Like ``diffusers.utils.torch_utils.randn_tensor`` for one generator: a CPU generator draws on the
    CPU in ``dtype`` and the result moves to ``device``; a generator on another device draws there.
    """
    device = torch.device(device)
    rand_device = device
    if generator is not None and generator.device.type != device.type:
        if generator.device.type != "cpu":
            raise ValueError(f"cannot draw {device.type} noise from a {generator.device.type} generator")
        rand_device = torch.device("cpu")
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)
