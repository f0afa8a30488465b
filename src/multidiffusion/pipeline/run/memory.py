"""Memory a run will need, estimated before it starts, against what this machine has free."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from multidiffusion.adapters import LoadedModel
from multidiffusion.core.errors import InvalidInputError

IMAGE_BYTES_PER_PX = 3 * 4 + 3  # the decoded float32 image, then its 8-bit copy


def host_available_bytes() -> int:
    """Memory the host can still give this process: the least of Linux's MemAvailable (free plus reclaimable cache),
    what the address-space limit (``RLIMIT_AS``, ``ulimit -v``) leaves above the process's virtual size, and what
    its cgroup's memory limit leaves (its reclaimable file cache counted as free); the free pages where MemAvailable
    cannot be read; 4 GiB if nothing can be read."""
    limits = [b for b in (_meminfo_available(), _address_space_left(), _cgroup_left()) if b is not None]
    if limits:
        return max(0, min(limits))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _read_int(path: str) -> int | None:
    """The integer a one-number file holds (a cgroup's ``max`` reads as None: no limit)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return int(text) if text != "max" else None
    except (OSError, ValueError):
        return None


def _field(path: str, name: str, scale: int = 1) -> int | None:
    """The number after ``name`` in a ``name value`` file (/proc/meminfo, a cgroup's memory.stat), times ``scale``."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].rstrip(":") == name:
                    return int(parts[1]) * scale
    except (OSError, ValueError):
        pass
    return None


def _meminfo_available() -> int | None:
    return _field("/proc/meminfo", "MemAvailable", 1024)


def _address_space_left() -> int | None:
    """``RLIMIT_AS`` minus this process's virtual size (VmSize); None without a limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = _field("/proc/self/status", "VmSize", 1024)
    return soft - (used or 0)


# cgroup v2 (unified) and v1 files: (limit, usage, stat, the stat's reclaimable file cache)
_CGROUPS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        "/sys/fs/cgroup/memory/memory.stat",
        "total_inactive_file",
    ),
)
_NO_CGROUP_LIMIT = 1 << 60  # v1 writes "no limit" as a page-rounded 2⁶³ − 1


def _cgroup_left() -> int | None:
    """The cgroup's memory limit minus its usage less reclaimable cache; None without a limit."""
    for limit_file, usage_file, stat_file, cache_name in _CGROUPS:
        limit = _read_int(limit_file)
        usage = _read_int(usage_file)
        if limit is None or usage is None or limit >= _NO_CGROUP_LIMIT:
            continue
        return limit - max(0, usage - (_field(stat_file, cache_name) or 0))
    return None


def device_free_bytes(device: torch.device) -> int:
    """Free memory of ``device`` (CUDA's own count), or of the host for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes()


# The denoising loop's float32 canvases at its peak: the initial canvas (kept for the output), the canvas itself,
# the fused model outputs, the fused crops, and the scheduler step's temporaries (docs/engine.md, "When memory or
# numbers run out", has the measured figures).
CANVAS_COPIES = 8
# Per view cell of a fusion plan (one per distinct layout, all built before the first step): its int64 canvas index
# and float32 weight, and the weights' stacked copy and checks while it is built.
PLAN_BYTES_PER_VIEW_CELL = 20
PLAN_BYTES_PER_CANVAS_CELL = 4 + 1  # the plan's float32 denominator and its coverage check
FIT_MARGIN = 0.95  # of the area the estimate allows, for the canvas size a refusal suggests


@dataclass(frozen=True)
class RunEstimate:
    """Peak bytes of a run, by where they live and whether they grow with the canvas.

    Attributes:
        denoise: The loop's peak on the model's device: ``CANVAS_COPIES`` float32 canvases (N, C, h, w), the fusion
            plans of every distinct layout, and one view row (``row``).
        row: The one view row of ``denoise``: the smallest view batch, which does not grow with the canvas.
        decode: Host bytes while decoding: the initial canvas and the latents, the codec's estimate and the image.
    """

    denoise: int
    row: int
    decode: int


def estimate_run_bytes(
    model: LoadedModel,
    canvas_cells: tuple[int, int, int],
    view_cells: tuple[int, int],
    plan_view_cells: int,
    layouts: int,
    decode: bool,
) -> RunEstimate:
    """The run's peak bytes before anything is drawn.

    Args:
        model: Supplies the codec (latent channels, scale factor, ``decode_bytes`` where it has one) and
            ``bytes_per_view_cell``.
        canvas_cells: (N, h, w): canvases and latent size.
        view_cells: (h, w) of one view, latent cells.
        plan_view_cells: Σ over the run's distinct layouts of tasks × view cells (what the fusion plans index).
        layouts: How many distinct layouts (fusion plans) the run has.
        decode: Whether the latents are decoded (any output but ``latent``).
    """
    n, h, w = canvas_cells
    canvas = n * model.codec.latent_channels * h * w * 4
    row = max(model.bytes_per_view_cell, 0) * view_cells[0] * view_cells[1]
    plans = plan_view_cells * PLAN_BYTES_PER_VIEW_CELL + layouts * h * w * PLAN_BYTES_PER_CANVAS_CELL
    denoise = CANVAS_COPIES * canvas + plans + row
    decoded = 0
    if decode:
        f = model.codec.scale_factor
        estimate = getattr(model.codec, "decode_bytes", None)
        codec = estimate(n, h * f, w * f) if estimate is not None else canvas  # the identity codec's float copy
        decoded = 2 * canvas + codec + n * h * f * w * f * IMAGE_BYTES_PER_PX
    return RunEstimate(denoise, row, decoded)


def check_run_memory(model: LoadedModel, estimate: RunEstimate, canvas_cells: tuple[int, int, int]) -> None:
    """Refuse, before anything is drawn, a run whose estimated peak (:func:`estimate_run_bytes`) exceeds the free
    memory: the denoising loop against the model's device, the decode against the host (one budget on a CPU). The
    one-line message gives the estimate, what is free and about the largest canvas of this shape that fits (every
    part but the one view row grows with the canvas's area)."""
    n, h, w = canvas_cells
    f = model.codec.scale_factor
    host = host_available_bytes()
    if model.device.type == "cuda":
        checks = [(estimate.denoise, estimate.row, device_free_bytes(model.device), f"on {model.device}")]
        checks.append((estimate.decode, 0, host, "here"))
    else:
        checks = [(max(estimate.denoise, estimate.decode), estimate.row, host, "here")]
    for need, fixed, free, where in checks:
        if need <= free:
            continue
        # 5 % of the area to spare: a smaller canvas has relatively more views at its edges (more plan per cell).
        scale = (FIT_MARGIN * (free - fixed) / (need - fixed)) ** 0.5 if free > fixed and need > fixed else 0.0
        fit_h, fit_w = _whole(h * f * scale, model.granularity_px), _whole(w * f * scale, model.granularity_px)
        fits = f"about {fit_w}×{fit_h} px fits" if fit_h and fit_w else "no canvas of this shape fits"
        images = f"{n} canvases of {w * f}×{h * f} px" if n > 1 else f"a {w * f}×{h * f} px canvas"
        hint = "; or ask for latents (output_type='latent') and decode them elsewhere"
        hint = hint if estimate.decode > free and estimate.denoise <= free else ""
        raise InvalidInputError(
            f"{images} needs about {_size(need)} of memory (its canvases, view plans and one view batch while "
            f"denoising, then the decode) and {_size(free)} is available {where}; make the canvas smaller "
            f"({fits}, or a larger stride makes fewer views){hint}"
        )


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


def _whole(px: float, granularity: int) -> int:
    """``px`` rounded down to 64 px, or to the model's granularity below that (0 when less than one)."""
    unit = 64 if px >= 64 else max(1, granularity)
    return int(px) // unit * unit


def _size(n: float) -> str:
    """Bytes in GiB, or in MiB below one GiB."""
    return _gib(n) if n >= 2**30 else f"{n / 2**20:.1f} MiB"


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


WEIGHT_MAP_BYTES_PER_CELL = 4  # each view's float32 weight map (Eq. 5's W_i), one value per latent cell of the view


def check_weight_maps_memory(model: LoadedModel, views: int, window_cells: int) -> None:
    """Refuse, before the layout is built, views whose weight maps (one float32 map per view, built with the tasks
    and before :func:`check_run_memory` can see them) cannot fit in the model's device memory.

    Args:
        model: Its device says where the maps go.
        views: Views per step (:func:`~multidiffusion.pipeline.settings.checks.check_view_count`).
        window_cells: The window's side in latent cells.
    """
    need = views * window_cells * window_cells * WEIGHT_MAP_BYTES_PER_CELL
    free = device_free_bytes(model.device) if model.device.type == "cuda" else host_available_bytes()
    if need > free:
        where = str(model.device) if model.device.type == "cuda" else "here"
        raise InvalidInputError(
            f"the {views:,} views of this canvas need about {_size(need)} for their weight maps alone and "
            f"{_size(free)} is available {where}: use a larger stride (fewer views) or a smaller canvas"
        )


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
