"""Memory a run will need, estimated before it starts, against what this machine has free."""

from __future__ import annotations

import os

import torch

from multidiffusion.adapters import LoadedModel
from multidiffusion.core.errors import InvalidInputError

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
    :func:`~multidiffusion.adapters.loading.resolve.config_before_loading`): a canvas too large to decode here is
    refused
    without spending the minutes a large model takes to load. Nothing is checked where no VAE config can be read;
    the check after loading still runs. Tiling is assumed possible in automatic mode (``tiled`` None)."""
    from multidiffusion.adapters.codecs.vae import TILED_ABOVE_PX, decode_bytes_estimate
    from multidiffusion.adapters.loading.resolve import config_before_loading, resolve_device, resolve_dtype

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


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def model_memory_advice(
    weights: int, row: int, free: int, itemsize: int, window_px: int, cell_px: int, where: str
) -> str | None:
    """None when ``weights`` plus one view row's activations (``row``: the smallest batch a run can take) fit in
    ``free`` bytes; else one line with the estimate and the setting that would make it fit: half precision, a
    smaller window, or another device when even the weights do not fit.

    Args:
        weights: Bytes of the weights still to be placed on the device (0 once loaded).
        row: Activation bytes of one denoiser row at ``window_px``.
        free: What the device has free.
        itemsize: Bytes per weight and activation element now (4 for float32).
        window_px: The view size the estimate is for.
        cell_px: Pixels per latent cell (windows are whole cells; a smaller window is suggested in 64-px steps).
        where: The device, for the message (``cuda:0``, ``this machine``).
    """
    need = weights + row
    if need <= free:
        return None
    parts = f"{_gib(weights)} of weights and " if weights else ""
    head = f"this run needs about {_gib(need)} ({parts}{_gib(row)} for one {window_px}-px view) and {where} has "
    head += f"{_gib(free)} free"
    if itemsize == 4 and need // 2 <= free:
        return f"{head}; in half precision it needs about {_gib(need // 2)}: pass --dtype bfloat16 (dtype=)"
    room = free - weights
    if room > 0:
        side = int(window_px * (room / row) ** 0.5) // 64 * 64
        if side >= max(64, 8 * cell_px):
            fits = weights + row * (side / window_px) ** 2
            return f"{head}; a smaller view fits: pass --window {side} (window={side}; about {_gib(fits)})"
    return f"{head}; the weights alone leave no room for one view: use a device with more memory (or --device cpu)"


def check_model_memory_before_loading(
    source: str,
    *,
    config: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    window_px: int | None = None,
) -> None:
    """Refuse, before a model loads, a run whose weights plus one view row's activations exceed the device's free
    memory, with the estimate and the setting that would make it fit (:func:`model_memory_advice`). Needs the model's
    configs on disk unloaded (a diffusers folder, a ``config`` folder, a repo id in the hub cache); nothing is checked
    otherwise, and the pipeline checks the view again once the model is loaded (:func:`check_view_memory`)."""
    from multidiffusion.adapters.families.registry import family_of_pipeline
    from multidiffusion.adapters.loading.resolve import (
        config_before_loading,
        folder_before_loading,
        resolve_device,
        resolve_dtype,
        weights_bytes_before_loading,
    )

    index = config_before_loading(source, "model_index.json", config)
    try:
        module = family_of_pipeline(str(index["_class_name"]), source).adapter() if index else None
    except (InvalidInputError, KeyError, TypeError):
        return  # loading says what is wrong with it
    denoiser = config_before_loading(source, f"{getattr(module, 'DENOISER', '')}/config.json", config)
    vae = config_before_loading(source, "vae/config.json", config)
    if module is None or not denoiser or not vae or not hasattr(module, "view_cell_bytes"):
        return
    target = resolve_device(device)
    itemsize = torch.finfo(resolve_dtype(dtype, target)).bits // 8
    try:
        cell = module.cell_px(vae, denoiser)
        window = window_px or module.native_cells(denoiser) * cell
        row = module.view_cell_bytes(denoiser, itemsize) * (window // cell) ** 2
    except (KeyError, TypeError, ValueError, IndexError):
        return
    folder = folder_before_loading(source, config)
    weights = weights_bytes_before_loading(folder, itemsize) if folder is not None else 0
    where = str(target) if target.type == "cuda" else "this machine"
    advice = model_memory_advice(weights, row, device_free_bytes(target), itemsize, window, cell, where)
    if advice is not None:
        raise InvalidInputError(advice)


def check_view_memory(model: LoadedModel, view_cells: tuple[int, int]) -> None:
    """Refuse, before any step, a view whose single denoiser row cannot fit in the device's free memory (the view
    batch backs off to one row when memory runs out, but no further)."""
    if model.bytes_per_view_cell <= 0:
        return
    height, width = view_cells
    row = model.bytes_per_view_cell * height * width
    cell = model.granularity_px
    itemsize = torch.finfo(model.dtype).bits // 8
    where = str(model.device) if model.device.type == "cuda" else "this machine"
    advice = model_memory_advice(
        0, row, device_free_bytes(model.device), itemsize, max(height, width) * cell, cell, where
    )
    if advice is not None:
        raise InvalidInputError(advice)
