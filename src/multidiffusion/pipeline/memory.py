"""Memory a run will need, estimated before it starts, against what this machine has free."""

from __future__ import annotations

import os

import torch

from ..adapters import LoadedModel
from ..core.errors import InvalidInputError

IMAGE_BYTES_PER_PX = 3 * 4 + 3  # the decoded float32 image, then its 8-bit copy


def host_available_bytes() -> int:
    """Memory the host can still give this process: Linux's MemAvailable (free plus reclaimable cache), else the
    free pages; 4 GiB if neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def device_free_bytes(device: torch.device) -> int:
    """Free memory of ``device`` (CUDA's own count), or of the host for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes()


def check_decode_memory(model: LoadedModel, images: int, height_px: int, width_px: int) -> None:
    """Refuse, before any denoising, a canvas whose decode would need more host memory than is available.

    The estimate is the codec's (``decode_bytes``: the whole decode's activations, or the tiled decode's canvases
    parked between tiles, which live on the host) plus the decoded image itself; codecs without an estimate (the
    toy model's) are not checked. The message gives the estimate, what is free and the largest canvas of this
    shape that fits.
    """
    estimate = getattr(model.codec, "decode_bytes", None)
    if estimate is None:
        return
    _refuse_past_free(estimate(images, height_px, width_px), images, height_px, width_px)


def check_decode_memory_before_loading(
    source: str,
    images: int,
    height_px: int,
    width_px: int,
    *,
    config: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    tiled: bool | None = None,
) -> None:
    """The same refusal before a model loads, from its VAE config where that is on disk unloaded (a diffusers folder,
    the ``config`` folder of a checkpoint file, a repo id in the hub cache; see
    :func:`~multidiffusion.adapters.loading.config_before_loading`): a canvas too large to decode here is refused
    without spending the minutes a large model takes to load. Nothing is checked where no VAE config can be read;
    the check after loading still runs. Tiling is assumed possible in automatic mode (``tiled`` None)."""
    from ..adapters.loading import config_before_loading, resolve_device, resolve_dtype
    from ..adapters.vae import TILED_ABOVE_PX, decode_bytes_estimate

    vae = config_before_loading(source, "vae/config.json", config)
    try:
        channels = int(vae["block_out_channels"][0]) if vae else 0
    except (KeyError, TypeError, ValueError, IndexError):
        return
    if channels <= 0:
        return
    weights = resolve_dtype(dtype, resolve_device(device))
    upcast = bool(vae.get("force_upcast", False)) and weights == torch.float16  # such VAEs decode in float32
    itemsize = 4 if upcast else torch.finfo(weights).bits // 8
    tiles = tiled if tiled is not None else images * height_px * width_px > TILED_ABOVE_PX
    need = decode_bytes_estimate(images, height_px, width_px, channels, itemsize, tiles)
    _refuse_past_free(need, images, height_px, width_px)


def _refuse_past_free(decode_bytes: int, images: int, height_px: int, width_px: int) -> None:
    """Raise when the decode's estimate plus the decoded image exceed the host's available memory."""
    need = decode_bytes + images * height_px * width_px * IMAGE_BYTES_PER_PX
    free = host_available_bytes()
    if need <= free:
        return
    scale = (free / need) ** 0.5
    fit_h = max(1, int(height_px * scale) // 64 * 64)
    fit_w = max(1, int(width_px * scale) // 64 * 64)
    raise InvalidInputError(
        f"decoding {images} image(s) of {width_px}×{height_px} px needs about {need / 2**30:.1f} GiB of memory and "
        f"{free / 2**30:.1f} GiB is available here; make the canvas smaller (about {fit_w}×{fit_h} px fits), or ask "
        "for latents (output_type='latent') and decode them elsewhere"
    )
