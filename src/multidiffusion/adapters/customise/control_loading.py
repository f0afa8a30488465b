"""Loading ControlNets and T2I-Adapters (diffusers folders or hub ids), checked before anything heavy loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters.customise.control import CONTROLNET, FLUX_CONTROLNET, SD3_CONTROLNET, T2I_ADAPTER
from multidiffusion.adapters.loading.hub import explain_load_error
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.adapters.loading.resolve import ALLOW_PICKLE_HINT, PICKLE_SUFFIXES, looks_like_repo_id
from multidiffusion.core.errors import InvalidInputError

CONTROL_CLASSES = {  # config.json _class_name → kind
    "ControlNetModel": CONTROLNET,
    "T2IAdapter": T2I_ADAPTER,
    "SD3ControlNetModel": SD3_CONTROLNET,
    "FluxControlNetModel": FLUX_CONTROLNET,
}


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
        if name not in CONTROL_CLASSES:
            raise InvalidInputError(
                f"control network folder {source!r} holds a {name!r}; supported: {', '.join(CONTROL_CLASSES)}"
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
        return CONTROL_CLASSES[name]
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
    """(network, kind): a ``ControlNetModel``, ``T2IAdapter``, ``SD3ControlNetModel`` or ``FluxControlNetModel`` from a
    folder or hub id, on ``device`` in ``dtype``."""
    import diffusers

    kind = control_kind(source, allow_pickle)
    classes = {
        CONTROLNET: diffusers.ControlNetModel,
        T2I_ADAPTER: diffusers.T2IAdapter,
        SD3_CONTROLNET: diffusers.SD3ControlNetModel,
        FLUX_CONTROLNET: diffusers.FluxControlNetModel,
    }
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
