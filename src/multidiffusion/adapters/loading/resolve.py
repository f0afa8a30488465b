"""Resolve what the user named (repo id, folder, checkpoint file) to a model adapter."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.errors import InvalidInputError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")  # torch.save files: loading them can run code


ALLOW_PICKLE_HINT = "or pass --allow-pickle (allow_pickle=True) if you trust where it comes from"


def pickled_parts(folder: Path) -> list[str]:
    """The parts (subfolders) of a diffusers folder whose weights exist only as pickle files."""
    parts = []
    for part in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [f.name for f in part.iterdir() if f.is_file()]
        pickled = any(name.endswith(PICKLE_SUFFIXES) for name in files)
        if pickled and not any(name.endswith(".safetensors") for name in files):
            parts.append(part.name)
    return parts


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:N`` and ``mps`` where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None → CUDA when available (under ``torchrun``, this process's GPU: ``cuda:LOCAL_RANK``), else CPU. Raises for
    devices this machine does not have (naming those it has); ``meta`` and other devices without memory are
    refused."""
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK")
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and local is not None and local.isdigit():
            return torch.device("cuda", int(local) % torch.cuda.device_count())
        return torch.device("cuda")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"unknown device {device!r}; devices here: {', '.join(available_devices())}") from exc
    here = available_devices()
    if dev.type == "cpu" or (dev.type == "cuda" and dev.index is None and torch.cuda.is_available()):
        return dev
    if str(dev) not in here:
        cuda_missing = dev.type == "cuda" and not torch.cuda.is_available()
        what = "CUDA is not available" if cuda_missing else "it is not available"
        raise InvalidInputError(f"device {str(device)!r} asked for, but {what} here; devices here: {', '.join(here)}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None → float16 on CUDA, float32 elsewhere. Names: float32, float16, bfloat16 (fp32/fp16/bf16)."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InvalidInputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPE_NAMES)}")
    return DTYPES[dtype]


def warn_slow_dtype(dtype: torch.dtype, device: torch.device) -> None:
    """Warn once that half precision on a CPU runs but slowly (diffusers says it "cannot run": it can)."""
    if device.type == "cpu" and dtype == torch.float16:
        warnings.warn(
            "float16 on the CPU runs, but several times slower than float32 and less precise; "
            "float32 is the CPU default (--dtype float32)",
            UserWarning,
            stacklevel=3,
        )


def looks_like_repo_id(source: str) -> bool:
    """``owner/name`` as on the Hugging Face hub (and not a relative path like ``./x`` or ``a/../b``)."""
    return bool(_REPO_ID.match(source)) and ".." not in source


def check_model_source(source: str, config: str | None = None, allow_pickle: bool = False) -> None:
    """Cheap checks before loading: an existing folder with a model (a ``model_index.json`` object naming a
    pipeline run here), a checkpoint file, a repo id, or a spec string that a family claims (the Gaussian-field
    model's ``toy`` / ``toy:ell=3,sigma=0.3``, whose options the family checks here); ``config`` only with a
    checkpoint file, and naming a model folder or repo id. Without ``allow_pickle``, a pickled checkpoint file or a
    folder with a part stored only as pickle files is refused."""
    from multidiffusion.adapters.families.registry import family_claiming, family_of_model
    from multidiffusion.adapters.loading.diffusers_files import check_config_source

    if config is not None:
        if not Path(source).expanduser().is_file():
            raise InvalidInputError(
                "--config describes a single-file checkpoint; --model here is not a .safetensors/.ckpt file"
            )
        check_config_source(config)

    claimed = family_claiming(source)
    if claimed is not None:
        claimed.adapter().check_spec(source)
        return
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InvalidInputError(f"model folder {source!r} holds no diffusers model (no model_index.json)")
        family_of_model(source)  # a model_index.json that is no JSON object, or names no pipeline run here
        pickled = [] if allow_pickle else pickled_parts(path)
        if pickled:
            raise InvalidInputError(
                f"model folder {source!r} stores {', '.join(pickled)} only as pickle files, which can run code when "
                f"they are loaded; convert them to .safetensors, {ALLOW_PICKLE_HINT}"
            )
    elif path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise InvalidInputError(
                f"model file {source!r} is not a checkpoint; expected one of: {', '.join(CHECKPOINT_SUFFIXES)}"
            )
        if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise InvalidInputError(
                f"model file {source!r} is a pickle file, which can run code when it is loaded; convert it to "
                f".safetensors, {ALLOW_PICKLE_HINT}"
            )
    elif not looks_like_repo_id(source):
        raise InvalidInputError(
            f"model path {source!r} does not exist; give a diffusers folder, a .safetensors/.ckpt file, a hub "
            "owner/name, or 'toy' for the weightless demo model"
        )
    else:  # a hub id not fully cached and not offline: seconds, not a minute of retries, when there is no network
        from multidiffusion.adapters.loading.hub_network import check_hub_reachable

        check_hub_reachable(source)


MAX_CONFIG_BYTES = 2**20  # a diffusers component config is a few kB


def config_before_loading(
    source: str, name: str, config: str | None = None, *, fetch: bool = False
) -> dict[str, Any] | None:
    """``name`` (e.g. ``scheduler/scheduler_config.json``, ``vae/config.json``) of a model without loading it, or
    None where it cannot be read cheaply: read from ``config`` (the folder or repo id that describes a single-file
    checkpoint) or ``source``, a local folder, or the hub cache for a repo id. A repo id's file missing from the
    cache is downloaded only with ``fetch`` and ``HF_HUB_OFFLINE`` unset (``name`` is then a small JSON file, never
    weights); any failure to get it gives None. A file over :data:`MAX_CONFIG_BYTES` is not read."""
    import json

    where = source if config is None else config
    folder = Path(where).expanduser()
    path: str | Path | None = folder / name
    if not folder.is_dir():
        if folder.exists() or where.count("/") != 1:  # a checkpoint file, or not a repo id
            return None
        path = _hub_file(where, name, fetch and name.endswith(".json"))
        if path is None:
            return None
    try:
        if Path(path).stat().st_size > MAX_CONFIG_BYTES:
            return None
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _hub_file(repo_id: str, name: str, fetch: bool) -> str | None:
    """The path of a repo's file in the hub cache, downloaded there first when missing and ``fetch`` (unless the
    hub is offline); None where it is not to be had."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, name)
    except ValueError:  # not a valid repo id
        return None
    if isinstance(path, str):
        return path
    if not fetch or constants.HF_HUB_OFFLINE:
        return None
    from huggingface_hub import hf_hub_download

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return str(hf_hub_download(repo_id, name))
    except Exception:  # huggingface_hub raises many types (no network, gated, no such file): the load says which
        return None


def folder_before_loading(source: str, config: str | None = None) -> Path | None:
    """The diffusers folder of a model without loading it: ``config`` or ``source`` when it is a local folder, or
    the hub cache's snapshot of a repo id whose ``model_index.json`` was downloaded (never the network); else None."""
    where = source if config is None else config
    folder = Path(where).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists() or where.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(where, "model_index.json")
    except ValueError:
        return None
    return Path(path).parent if isinstance(path, str) else None


def weights_bytes_before_loading(folder: Path, itemsize: int) -> int:
    """Bytes the weights in a diffusers folder take once loaded with floating-point tensors of ``itemsize`` bytes,
    read from the ``.safetensors`` headers (no tensor is read). A part with several weight files counts its plain
    ones, not its ``.fp16``-style variants; pickled parts are not counted (their headers cannot be read safely)."""
    from safetensors import safe_open

    total = 0
    for part in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(part.glob("*.safetensors"))
        plain = [f for f in files if len(f.name.split(".")) == 2]
        for file in plain or files[:1]:
            try:
                with safe_open(str(file), framework="pt") as handle:
                    for key in handle.keys():
                        piece = handle.get_slice(key)
                        count = math.prod(piece.get_shape())
                        floating = piece.get_dtype() in ("F64", "F32", "F16", "BF16")
                        total += count * (itemsize if floating else _STORED_BYTES.get(piece.get_dtype(), 4))
            except (OSError, RuntimeError, ValueError):  # unreadable: loading will say why
                continue
    return total


_STORED_BYTES = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def scheduler_config_before_loading(source: str, config: str | None = None) -> dict[str, Any] | None:
    """The scheduler config of a model without loading it (see :func:`config_before_loading`); for a spec string,
    the config its family gives it."""
    from multidiffusion.adapters.families.registry import family_claiming

    claimed = family_claiming(source)
    if claimed is not None:
        return dict(claimed.adapter().spec_scheduler_config(source))
    return config_before_loading(source, "scheduler/scheduler_config.json", config)


def load_model(
    source: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    channels_last: bool = False,
    compile: bool = False,
    config: str | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a model: a diffusers folder or repo id, a single-file checkpoint, or a spec string such as ``toy[:…]``.

    The family (:data:`~multidiffusion.adapters.families.registry.REGISTRY`: SD 1.x/2.x, SDXL, SD 3/3.5, Flux, the
    Gaussian-field model) is the one whose ``claims`` accepts a spec string, else the one read from the folder's or
    repo's ``model_index.json``, or from a checkpoint's tensor names; its module loads it.

    ``channels_last`` and ``compile`` are speed settings of the networks (see
    :func:`~multidiffusion.adapters.loading.speed.apply_speed_settings`); they do not change the results beyond
    float rounding. ``config`` is, for a single-file checkpoint only, a diffusers model folder or repo id
    whose configs describe it (needed offline). A local model's weights are hashed (cached) for the
    metadata. Weights are read from ``.safetensors`` only, unless ``allow_pickle`` (pickled ``.ckpt``, ``.pt``,
    ``.pth`` and ``.bin`` files can run code when they are loaded).
    """
    from multidiffusion.adapters.families.registry import family_claiming, family_of_checkpoint, family_of_model
    from multidiffusion.adapters.loading.fingerprint import weights_sha256
    from multidiffusion.adapters.loading.speed import apply_speed_settings

    check_model_source(source, config, allow_pickle)
    dev = resolve_device(device)
    claimed = family_claiming(source)
    if claimed is not None:  # no files: no weights to hash, no networks to speed up
        return claimed.adapter().load(source, device=dev, dtype=None if dtype is None else resolve_dtype(dtype, dev))
    dt = resolve_dtype(dtype, dev)
    warn_slow_dtype(dt, dev)
    path = Path(source).expanduser()
    if path.is_file():
        model = family_of_checkpoint(str(path)).adapter().load_single_file(str(path), dt, dev, config=config)
    else:
        where = str(path) if path.is_dir() else source
        model = family_of_model(where).adapter().load_pretrained(where, dt, dev, allow_pickle=allow_pickle)
    if path.exists():
        model.weights_sha256 = weights_sha256(path)
    return apply_speed_settings(model, channels_last=channels_last, compile=compile)
