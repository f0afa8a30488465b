"""Loading a diffusers pipeline of any family, with one clear line when it fails.

Every family adapter loads its parts through diffusers' own loaders (``from_pretrained`` for folders and
hub ids, ``from_single_file`` for original checkpoints) and then takes the components it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters.loading.hub import explain_load_error, first_line
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.core.errors import InvalidInputError


def pipeline_class(name: str) -> Any:
    """The diffusers pipeline class called ``name``."""
    import diffusers

    return getattr(diffusers, name)


def load_pretrained_pipeline(
    class_name: str, source: str, dtype: torch.dtype, *, allow_pickle: bool = False, **kwargs: Any
) -> Any:
    """``<class_name>.from_pretrained(source, dtype=dtype, **kwargs)``; failures as one line (InvalidInputError).

    Weights are read from ``.safetensors`` files only (``use_safetensors=True``) unless ``allow_pickle``: pickled
    weights (``.bin``, ``.ckpt``) can run code when they are loaded."""
    try:
        with library_chatter_off():
            return pipeline_class(class_name).from_pretrained(
                source, dtype=dtype, use_safetensors=None if allow_pickle else True, **kwargs
            )
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        message = explain_load_error(source, exc)
        if not allow_pickle and "safetensors" in str(exc).lower():
            message = (
                f"model {source!r} has no .safetensors weights for some part; pickled weights can run code when they "
                "are loaded: pass --allow-pickle (allow_pickle=True) if you trust where it comes from"
            )
        raise InvalidInputError(message) from exc


def load_single_file_pipeline(
    class_name: str, path: str, dtype: torch.dtype, config: str | None = None, **kwargs: Any
) -> Any:
    """``<class_name>.from_single_file(path, …)``: an original-format checkpoint.

    ``config`` is a diffusers model folder or repo id whose configs describe the checkpoint; without it
    diffusers infers one and may need the hub to fetch it.
    """
    if not Path(path).is_file():
        raise InvalidInputError(f"model file {path!r} does not exist")
    if config is not None:
        check_config_source(config)
        kwargs["config"] = config
    try:
        with library_chatter_off():
            return pipeline_class(class_name).from_single_file(path, dtype=dtype, **kwargs)
    except Exception as exc:  # diffusers raises many types here; all mean "not a usable checkpoint"
        message = explain_load_error(config or path, exc)
        if config is None and message.startswith("model "):  # it went to the hub for a config
            message = (
                f"checkpoint {path!r} needs a config to describe it and the hub cannot be reached; "
                "give --config with a diffusers model folder (or repo id) of the same architecture"
            )
        elif not message.startswith("model "):
            message = f"could not load checkpoint {path!r}: {first_line(exc)}"
        raise InvalidInputError(message) from exc


def to_device(pipe: Any, device: torch.device) -> Any:
    """Move a pipeline to ``device`` (diffusers warns that float16 "cannot run" on a CPU; it can, slowly)."""
    with library_chatter_off():
        pipe.to(device)
    return pipe


def check_config_source(config: str) -> None:
    """``config`` of a single-file load: a diffusers model folder (with model_index.json) or a repo id."""
    from multidiffusion.adapters.loading.resolve import looks_like_repo_id

    folder = Path(config).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise InvalidInputError(f"config folder {config!r} holds no diffusers model (no model_index.json)")
    elif not looks_like_repo_id(config):
        raise InvalidInputError(f"config {config!r} is neither a diffusers model folder nor an owner/name repo id")
