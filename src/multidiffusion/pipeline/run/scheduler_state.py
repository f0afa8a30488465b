"""A diffusers scheduler's state in the middle of a run, as plain data: JSON values plus tensors.

A checkpoint records the scheduler this way instead of pickling the object, so reading one runs no code. The
object itself is never rebuilt from the file: the resumed run builds its own scheduler from the recipe (the
class and config it names, then ``set_timesteps``), and only the recorded attributes are set on it, each
checked: a name the fresh scheduler has (or one its class does not define: state its first step creates), a
value of a plain kind (a tensor, a NumPy array of the fresh one's shape, an int, float, bool or None, a list of
those) of a plausible shape and size.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError

MAX_LIST_ITEMS = 64  # a multistep history holds a few entries (PNDM's is the longest: 4)
TENSOR_PREFIX = "scheduler."


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float)


def _item(value: Any) -> Any:
    """A NumPy scalar as the Python number it stands for; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def config_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """A scheduler config as JSON-ready data (tuples and arrays as lists), for recording and comparing."""

    def default(value: Any) -> Any:
        if isinstance(value, np.ndarray | Tensor):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        return str(value)

    return json.loads(json.dumps(dict(config), default=default, sort_keys=True))


@dataclass(frozen=True)
class SchedulerState:
    """What a scheduler holds after some steps.

    Attributes:
        class_name: Its class's name (compared with the resumed run's; never imported).
        config: Its config (:func:`config_json`).
        values: Attribute name → its encoding: ``{"tensor": key}``, ``{"ndarray": key}``, ``{"value": v}`` or
            ``{"list": [encodings], "tuple": bool}``.
        tensors: Tensor key → tensor (on the CPU), the keys starting with :data:`TENSOR_PREFIX`.
    """

    class_name: str
    config: dict[str, Any]
    values: dict[str, Any]
    tensors: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def capture(cls, scheduler: Any) -> SchedulerState:
        """Copy the state of ``scheduler`` (copies: stepping it further changes nothing recorded). Attributes of
        other kinds (the config object, strings) are left out: the resumed run's fresh scheduler has them."""
        values: dict[str, Any] = {}
        tensors: dict[str, Tensor] = {}

        def encode(key: str, value: Any) -> Any:
            value = _item(value)
            if isinstance(value, Tensor):
                tensors[key] = value.detach().to("cpu", copy=True).contiguous()
                return {"tensor": key}
            if _plain(value):
                return {"value": value}
            return None

        for name, value in vars(scheduler).items():
            if name.startswith("__"):
                continue
            key = TENSOR_PREFIX + name
            if isinstance(value, np.ndarray):
                if value.dtype.kind in "biuf":
                    tensors[key] = torch.from_numpy(np.array(value, copy=True, order="C"))
                    values[name] = {"ndarray": key}
            elif isinstance(value, list | tuple):
                if len(value) <= MAX_LIST_ITEMS:
                    items = [encode(f"{key}.{i}", v) for i, v in enumerate(value)]
                    if all(item is not None for item in items):
                        values[name] = {"list": items, "tuple": isinstance(value, tuple)}
                    else:
                        for i in range(len(value)):
                            tensors.pop(f"{key}.{i}", None)
            else:
                encoded = encode(key, value)
                if encoded is not None:
                    values[name] = encoded
        return cls(type(scheduler).__name__, config_json(scheduler.config), values, tensors)

    def to_json(self) -> dict[str, Any]:
        return {"class": self.class_name, "config": self.config, "state": self.values}

    @classmethod
    def from_json(cls, data: Any, tensors: Mapping[str, Tensor]) -> SchedulerState:
        """The state :meth:`to_json` wrote, with its tensors; checks the structure (not yet the values: see
        :meth:`restore`).

        Raises:
            ValueError: the structure is not one :meth:`to_json` writes.
        """
        if not isinstance(data, dict) or set(data) != {"class", "config", "state"}:
            raise ValueError("scheduler record")
        name, config, state = data["class"], data["config"], data["state"]
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(config, dict):
            raise ValueError("scheduler class or config")
        if not isinstance(state, dict):
            raise ValueError("scheduler state")
        used: set[str] = set()

        def check(encoding: Any, nested: bool) -> None:
            if not isinstance(encoding, dict) or len(encoding) not in (1, 2):
                raise ValueError("scheduler value")
            if "value" in encoding and len(encoding) == 1:
                if not _plain(encoding["value"]):
                    raise ValueError("scheduler value")
            elif ("tensor" in encoding or ("ndarray" in encoding and not nested)) and len(encoding) == 1:
                key = encoding.get("tensor", encoding.get("ndarray"))
                if not isinstance(key, str) or key not in tensors or key in used:
                    raise ValueError("scheduler tensor")
                used.add(key)
            elif set(encoding) == {"list", "tuple"} and not nested:
                items = encoding["list"]
                if (
                    not isinstance(items, list)
                    or len(items) > MAX_LIST_ITEMS
                    or not isinstance(encoding["tuple"], bool)
                ):
                    raise ValueError("scheduler list")
                for item in items:
                    check(item, True)
            else:
                raise ValueError("scheduler value")

        for attribute, encoding in state.items():
            if not attribute.isidentifier() or attribute.startswith("__"):
                raise ValueError("scheduler attribute name")
            check(encoding, False)
        ours = {k: v for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
        if set(ours) != used:
            raise ValueError("scheduler tensors")
        return cls(name, config, dict(state), ours)

    def check_fits(self, fresh: Any, num_steps: int) -> None:
        """Refuse a state of another scheduler than ``fresh``, the resumed run's (its class, its config, its
        number of steps ``num_steps``).

        Raises:
            InvalidInputError: one line.
        """
        theirs = config_json(fresh.config)
        common = {k for k in self.config.keys() & theirs.keys() if not k.startswith("_")}
        timesteps = getattr(fresh, "timesteps", None)
        if (
            type(fresh).__name__ != self.class_name
            or any(self.config[k] != theirs[k] for k in common)
            or timesteps is None
            or len(timesteps) != num_steps
        ):
            raise InvalidInputError("the checkpoint's scheduler does not match the run's")

    def restore(self, fresh: Any, latent_shape: tuple[int, ...], device: torch.device) -> Any:
        """A copy of ``fresh`` (the run's newly built scheduler, timesteps set) with the recorded state set on it.

        Tensors of an attribute ``fresh`` holds as a tensor must have its shape and dtype and go to its device;
        the others (the multistep history, Heun's half step) must be scalars or of the canvas's
        ``latent_shape`` (N, C, h, w), finite, and go to ``device``. Whole numbers are counters: at most the
        number of timesteps (or ``fresh``'s own value). Copies: the state stays reusable.

        Raises:
            InvalidInputError: an attribute ``fresh`` does not have, or a value of the wrong kind or shape.
        """
        own = vars(fresh)
        steps = len(fresh.timesteps)
        scheduler = copy.deepcopy(fresh)

        def bad(name: str, why: str) -> InvalidInputError:
            return InvalidInputError(f"the checkpoint's scheduler state is damaged ({name}: {why})")

        def decode(name: str, encoding: dict[str, Any], current: Any) -> Any:
            if "value" in encoding:
                value = encoding["value"]
                if isinstance(value, bool) or value is None:
                    return value
                if isinstance(value, int) and not (0 <= value <= steps or value == current):
                    raise bad(name, f"counter {value} out of range")
                if isinstance(value, float) and not (math.isfinite(value) or value == current):
                    raise bad(name, "not finite")
                return value
            tensor = self.tensors[encoding.get("tensor", encoding.get("ndarray"))]
            if "ndarray" in encoding:
                if not isinstance(current, np.ndarray) or tuple(tensor.shape) != current.shape:
                    raise bad(name, "array of another shape")
                return tensor.numpy().astype(current.dtype, copy=True)
            if isinstance(current, Tensor):
                if tensor.shape != current.shape or tensor.dtype != current.dtype:
                    raise bad(name, f"shape {tuple(tensor.shape)} {tensor.dtype}, expected {tuple(current.shape)}")
                return tensor.to(current.device, copy=True)
            if tuple(tensor.shape) not in ((), tuple(latent_shape)):
                raise bad(name, f"shape {tuple(tensor.shape)}, expected a scalar or the canvas's {latent_shape}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise bad(name, "not finite")
            return tensor.to(device, copy=True)

        for name, encoding in self.values.items():
            # Some state is created by the first step (Heun's ``sample``): a name the fresh scheduler lacks is
            # set only where it stays plain instance data, never over anything its class defines.
            if name not in own and hasattr(type(fresh), name):
                raise bad(name, f"not an attribute of {type(fresh).__name__}")
            current = own.get(name)
            # The kind an attribute has on the fresh scheduler stays: tables stay tensors, histories lists.
            if isinstance(current, list | tuple) != ("list" in encoding):
                raise bad(name, "a list and a single value swapped")
            if isinstance(current, Tensor | np.ndarray) and "value" in encoding:
                raise bad(name, "not a tensor")
            if "list" in encoding:
                items = [decode(name, item, None) for item in encoding["list"]]
                setattr(scheduler, name, tuple(items) if encoding["tuple"] else items)
            else:
                setattr(scheduler, name, decode(name, encoding, current))
        return scheduler
