"""LoRA files on a loaded model, and switching which of them are active (per run, or per group of canvas regions).

Each distinct file loads once, as its own named adapter, through diffusers' ``load_lora_weights`` on the family's
pipeline (:func:`~multidiffusion.adapters.customise.host.diffusers_host`): into the denoising network and, where the
file has weights for them, the text encoders, with diffusers' conversions of the common formats (diffusers/peft, kohya,
A1111). Switching is diffusers' too: ``set_adapters`` with per-adapter scales, ``disable_lora`` for none (peft's
LoRA layers then return their base layer's output untouched, so the model computes exactly what it computed before
any LoRA was loaded), and ``unload_lora_weights`` to take them out again.

A scale s multiplies the LoRA's update: W x + s · (α / r) · B A x for every adapted layer (peft's scaling), the same
s in the denoiser and the text encoders, as ``set_adapters(name, adapter_weights=s)`` and the pipelines'
``cross_attention_kwargs={"scale": s}`` apply it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from multidiffusion.adapters.customise.host import check_weights_file, diffusers_host, host_family
from multidiffusion.adapters.loading.hub import first_line
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.adapters.loading.resolve import PICKLE_SUFFIXES
from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.errors import InvalidInputError


def takes_lora(pipeline_class: type) -> bool:
    """Whether a diffusers pipeline class loads LoRA files."""
    return hasattr(pipeline_class, "load_lora_weights")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA file and the scale it runs at.

    Attributes:
        path: The file (``.safetensors``; ``.ckpt``, ``.pt``, ``.pth``, ``.bin`` only with ``allow_pickle``).
        scale: s in W x + s · ΔW x; 1 is the LoRA as trained, 0 turns it off; finite, may be negative.
    """

    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.path:
            raise InvalidInputError("empty LoRA path; give PATH or PATH:SCALE")
        if not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise InvalidInputError(f"LoRA scale must be a finite number, got {self.scale!r} for {self.path!r}")
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``PATH`` or ``PATH:SCALE``: the scale is what follows the last colon if it reads as a number (so
        ``C:\\loras\\x.safetensors`` and ``a:b.safetensors`` are paths), and must then be finite."""
        head, sep, tail = text.rpartition(":")
        scale = _number(tail) if sep else None
        return cls(text) if scale is None else cls(head, scale)

    @property
    def label(self) -> str:
        """For metadata: the file's name (never its folder) and the scale, ``name.safetensors:0.7``."""
        return f"{Path(self.path).name}:{self.scale!r}"


_UNEXPECTED = "Loading adapter weights from state_dict led to unexpected keys"  # diffusers' warning, peft_utils


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_loading() -> Iterator[list[str]]:
    """diffusers' and peft's chatter off while LoRAs load (their errors too: ours say it in one line), yielding
    the warnings diffusers' ``peft_utils`` logs, which name LoRA tensors that matched no layer of the model."""
    records = _Records()
    keys = logging.getLogger("diffusers.utils.peft_utils")
    saved = (keys.level, keys.propagate)
    with library_chatter_off(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for name in ("diffusers", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # library_chatter_off restores them
        keys.setLevel(logging.WARNING)
        keys.propagate = False
        keys.addHandler(records)
        try:
            yield records.messages
        finally:
            keys.removeHandler(records)
            keys.setLevel(saved[0])
            keys.propagate = saved[1]


def _explain(path: str, family: str, exc: BaseException) -> str:
    text = first_line(exc)
    if "Invalid LoRA checkpoint" in text:
        return f"{path!r} is not a LoRA file (its tensor names have no 'lora'); give a LoRA .safetensors file"
    if any(s in text for s in ("size mismatch", "mismatched_sizes", "not found in the base model")):
        return f"LoRA file {path!r} does not fit this {family} model (is it for another model family?)"
    return f"could not load LoRA file {path!r} into this {family} model: {text}"


class LoraSwitch:
    """LoRA files loaded into ``model``, each its own adapter, any set of them active at a time.

    Every file is checked (it exists; pickle files only with ``allow_pickle``) before any is loaded; a file that
    fails to load leaves the model as it was. After loading none is active; :meth:`activate` picks a set, and
    :meth:`close` (or leaving a ``with`` block) unloads them all, so the model is back to its own weights.

    Args:
        model: A loaded model of a family with networks (not the Gaussian-field model).
        specs: The LoRAs; their scales do not matter here (:meth:`activate` takes them), only their files, and a
            file named twice loads once.
        allow_pickle: Allow pickled files (they can run code when loaded).

    Attributes:
        switches: How many times :meth:`activate` changed the active set (repeats of the active set don't count).
    """

    def __init__(self, model: LoadedModel, specs: Sequence[LoraSpec], *, allow_pickle: bool = False) -> None:
        family = host_family(model, "LoRA files", takes_lora).name
        files: dict[Path, str] = {}
        for spec in specs:
            file = check_weights_file(spec.path, "LoRA", allow_pickle).resolve()
            files.setdefault(file, f"lora{len(files)}")
        if model.state.lora_switch is not None:
            raise RuntimeError("this model already has LoRAs loaded by another LoraSwitch; close that one first")
        self.model = model
        self.host = diffusers_host(model)
        self._files = files
        self._names = {spec.path: files[Path(spec.path).expanduser().resolve()] for spec in specs}
        self._active: dict[str, float] = {}
        self.switches = 0
        model.state.lora_switch = self  # one per model at a time: its LoRAs are in the model's networks
        try:
            for file, name in files.items():
                self._load(file, name, family)
            if files:
                with _quiet_loading():
                    self.host.disable_lora()
        except BaseException:
            self.close()
            raise

    def _load(self, file: Path, name: str, family: str) -> None:
        pickled = file.suffix.lower() in PICKLE_SUFFIXES
        try:
            with _quiet_loading() as warned:
                self.host.load_lora_weights(str(file), adapter_name=name, use_safetensors=None if pickled else True)
        except Exception as exc:  # diffusers, peft and safetensors raise many types; all mean "not loadable here"
            raise InvalidInputError(_explain(str(file), family, exc)) from exc
        loaded = {adapter for adapters in self.host.get_list_adapters().values() for adapter in adapters}
        if name not in loaded:
            raise InvalidInputError(f"LoRA file {str(file)!r} has no weights for any layer of this {family} model")
        if any(message.startswith(_UNEXPECTED) for message in warned):
            raise InvalidInputError(
                f"LoRA file {str(file)!r} does not fit this {family} model (is it for another model family?): some of "
                "its layers are not in the model"
            )

    @property
    def active(self) -> dict[str, float]:
        """The active adapters' names → scales (empty: none)."""
        return dict(self._active)

    def adapter_of(self, spec: LoraSpec) -> str:
        """The adapter name that ``spec``'s file was loaded as."""
        name = self._names.get(spec.path) or self._files.get(Path(spec.path).expanduser().resolve())
        if name is None:
            loaded = ", ".join(repr(path) for path in self._names) or "none"
            raise InvalidInputError(f"LoRA {spec.path!r} is not among those loaded ({loaded})")
        return name

    def activate(self, key: tuple[LoraSpec, ...]) -> None:
        """Make exactly the LoRAs of ``key`` active, at their scales; ``()``: none (the model as without any LoRA).

        The order of ``key`` does not matter; a file named twice runs at the sum of its scales, and one at scale 0
        is left out. A no-op when that set is already active.
        """
        if self.model.state.lora_switch is not self:
            raise RuntimeError("this LoraSwitch is closed: its LoRAs are unloaded")
        wanted: dict[str, float] = {}
        for spec in key:
            name = self.adapter_of(spec)
            wanted[name] = wanted.get(name, 0.0) + spec.scale
        wanted = {name: scale for name, scale in sorted(wanted.items()) if scale != 0.0}
        if wanted == self._active:
            return
        with library_chatter_off():
            if not wanted:
                self.host.disable_lora()
            else:
                if not self._active:
                    self.host.enable_lora()
                self.host.set_adapters(list(wanted), adapter_weights=list(wanted.values()))
        self._active = wanted
        self.switches += 1

    def close(self) -> None:
        """Unload every LoRA: the model computes what it did before they were loaded. Safe to call twice."""
        if self.model.state.lora_switch is not self:
            return
        if self._files:
            with library_chatter_off():
                self.host.unload_lora_weights()
        self._active = {}
        self.model.state.lora_switch = None

    def __enter__(self) -> LoraSwitch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoraSwitch({len(set(self._names.values()))} files, active={self._active}, switches={self.switches})"


def lora_labels(specs: Sequence[LoraSpec]) -> list[str]:
    """What metadata records for ``specs``: :attr:`LoraSpec.label` of each, in order."""
    return [spec.label for spec in specs]
