"""Loading ControlNets and T2I-Adapters (diffusers folders or hub ids), checked before anything heavy loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters.families.registry import control_kinds
from multidiffusion.adapters.loading.hub import explain_load_error
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.adapters.loading.resolve import ALLOW_PICKLE_HINT, PICKLE_SUFFIXES, looks_like_repo_id
from multidiffusion.core.errors import InvalidInputError


def control_classes() -> dict[str, str]:
    """``config.json``'s ``_class_name`` → kind name, for every kind a registered family takes (in registry order)."""
    return {kind.class_name: kind.name for kind in control_kinds()}


def control_kind(source: str, allow_pickle: bool = False) -> str | None:
    """Cheap checks of a control network's source; its kind for a local folder, None for a hub repo id.

    A local source must be a diffusers folder (``config.json`` naming a ControlNet or T2I-Adapter, and
    ``.safetensors`` weights unless ``allow_pickle``). A single checkpoint file is refused: its config would have
    to come from the hub.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        config = path / "config.json"
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
        except (OSError, ValueError, AttributeError):
            raise InvalidInputError(f"control network folder {source!r} has no readable config.json") from None
        classes = control_classes()
        if name not in classes:
            raise InvalidInputError(
                f"control network folder {source!r} holds a {name!r}; supported: {', '.join(classes)}"
            )
        files = [f.name for f in path.iterdir() if f.is_file()]
        if not any(f.endswith(".safetensors") for f in files):
            pickled = any(f.endswith(PICKLE_SUFFIXES) for f in files)
            if not pickled:
                raise InvalidInputError(f"control network folder {source!r} has no weights file")
            if not allow_pickle:
                raise InvalidInputError(
                    f"control network {source!r} has only pickled weights, which can run code when they are loaded; "
                    f"convert them to .safetensors, {ALLOW_PICKLE_HINT}"
                )
        return classes[name]
    if path.is_file():
        raise InvalidInputError(
            f"control network {source!r} is a single file; give its diffusers folder (config.json and "
            "diffusion_pytorch_model.safetensors) or a hub repo id"
        )
    if looks_like_repo_id(source):
        return None
    raise InvalidInputError(f"control network {source!r} does not exist (give a diffusers folder or a hub repo id)")


def load_control_network(
    source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
) -> tuple[Any, str]:
    """(network, kind name): a network of a kind some family takes (``ControlNetModel``, ``T2IAdapter``,
    ``SD3ControlNetModel``, ``FluxControlNetModel``) from a folder or hub id, on ``device`` in ``dtype``."""
    import diffusers

    kind = control_kind(source, allow_pickle)
    classes = {k.name: getattr(diffusers, k.class_name) for k in control_kinds()}
    kinds = [kind] if kind is not None else list(classes)
    error: Exception | None = None
    for candidate in kinds:  # a hub id names no class until its config is read: try each
        try:
            with library_chatter_off():
                network = classes[candidate].from_pretrained(
                    source, dtype=dtype, use_safetensors=None if allow_pickle else True
                )
            return network.to(device).eval(), candidate
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
            error = exc
    assert error is not None
    message = explain_load_error(source, error).replace("model ", "control network ", 1)
    raise InvalidInputError(message) from error
