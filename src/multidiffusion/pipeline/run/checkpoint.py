"""Checkpoints of a run in progress: write them every few steps (and on Ctrl-C), finish the run from one later.

A checkpoint holds what the rest of the run depends on: the recipe (the same JSON an image records, so the run
is rebuilt exactly as :meth:`~multidiffusion.pipeline.MultiDiffusionPipeline.reproduce` rebuilds it), the
number of steps taken, the canvas latents after them, the scheduler's state (its multistep history, step
counter, sigmas) and the generator's state (what stochastic schedulers, bootstrapping and any later draw
continue from). Everything else a run holds is rebuilt from the recipe: the initial noise, the bootstrap
colours and noise, the prompt embeddings. Finishing from a checkpoint gives the image the uninterrupted run
gives, bit for bit, on the same weights, dtype, device type and view batch size.

File format (version :data:`VERSION`, docs/engine.md): one safetensors file. Its tensors are the latents, the
generator state and the scheduler's tensors; its header's ``__metadata__`` holds ``format`` (:data:`FORMAT`),
``version`` and ``checkpoint``, a JSON text of the recipe, the step counts and the scheduler's class name,
config and other state (:class:`~multidiffusion.pipeline.run.scheduler_state.SchedulerState`). Reading one runs
no code: the header is checked (its size, each tensor's dtype, shape and extent) before any tensor is read,
and the scheduler is the resumed run's own, with only the recorded values set on it. Checkpoints of the first
version (the line :data:`LEGACY_MAGIC`, then a pickle) are refused unless ``allow_pickle`` is given, since
unpickling can run code. Files are written atomically (a temporary file beside it, readable by its owner
only, then a rename), so an interruption or a full disk while writing leaves the previous checkpoint whole.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError, OutputError
from multidiffusion.pipeline.files.atomic import write_atomically
from multidiffusion.pipeline.run.scheduler_state import SchedulerState

FORMAT = "multidiffusion checkpoint"
VERSION = 2
LEGACY_MAGIC = b"multidiffusion checkpoint 1\n"  # version 1: this line, then a torch.save (pickle) archive
DEFAULT_EVERY = 1  # a step costs far more than writing the latents and scheduler state (kilobytes to a few MB)
# A 16384² canvas of a 16-channel latent model is 256 MiB of float32 latents; with a multistep history of
# up to five canvases that is 1.5 GiB. Anything larger is not a checkpoint of this tool.
MAX_CHECKPOINT_BYTES = 4 * 2**30
MAX_HEADER_BYTES = 64 * 2**20  # the recipe (region masks compress to kB) and the scheduler's config
MAX_STEPS = 100_000
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_GENERATOR_BYTES = torch.Generator().get_state().numel()  # resumed runs draw from a CPU generator (reproduce)
# Recipe fields that may differ between the run that wrote a checkpoint and the one that finishes it: a newer
# package version or another device type (both warned about, as for reproduce), and the local model's recorded
# name (the weights hash decides when there is one).
_MAY_DIFFER = ("version", "device")


@dataclass(frozen=True)
class CheckpointSettings:
    """Where and how often a run writes its checkpoint.

    Attributes:
        path: The checkpoint file (replaced each time, atomically); its folder must exist.
        every: Write after every ``every``-th step (default 1: every step), after the last step, and on
            Ctrl-C (the last finished step).
    """

    path: Path
    every: int = DEFAULT_EVERY

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise InvalidInputError(f"the checkpoint interval must be a whole number of steps ≥ 1, got {self.every!r}")
        folder = self.path.parent
        if self.path.is_dir():
            raise InvalidInputError(f"checkpoint {str(self.path)!r} is a folder; give a file name")
        if not folder.is_dir():
            raise InvalidInputError(f"checkpoint folder {str(folder)!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InvalidInputError(f"checkpoint folder {str(folder)!r} is not writable")

    @classmethod
    def of(cls, value: CheckpointSettings | str | os.PathLike[str] | None) -> CheckpointSettings | None:
        """``value`` as settings: a path means every step."""
        if value is None or isinstance(value, CheckpointSettings):
            return value
        return cls(Path(value))


@dataclass(frozen=True)
class Checkpoint:
    """A run stopped after ``step`` of ``num_steps`` steps.

    Attributes:
        recipe: The run's recipe (:meth:`GenerationMetadata.to_dict`).
        step: Steps taken.
        num_steps: Steps of the whole run (the scheduler's timesteps).
        latents: The canvas after ``step`` steps, (N, C, h, w) float32, finite.
        scheduler: The scheduler's state after those steps.
        generator_state: ``generator.get_state()`` after those steps (a CPU generator's, uint8).
    """

    recipe: dict[str, Any]
    step: int
    num_steps: int
    latents: Tensor
    scheduler: SchedulerState
    generator_state: Tensor

    @classmethod
    def of_run(
        cls,
        recipe: dict[str, Any],
        step: int,
        num_steps: int,
        latents: Tensor,
        scheduler: Any,
        generator_state: Tensor,
    ) -> Checkpoint:
        """The checkpoint of a live run: copies of its latents and of ``scheduler``'s state."""
        return cls(
            recipe,
            step,
            num_steps,
            latents.detach().to("cpu", torch.float32, copy=True).contiguous(),
            SchedulerState.capture(scheduler),
            generator_state.detach().to("cpu", copy=True).contiguous(),
        )

    def to_bytes(self) -> bytes:
        """The file (see the module docstring)."""
        from safetensors.torch import save

        record = {
            "recipe": self.recipe,
            "step": self.step,
            "num_steps": self.num_steps,
            "scheduler": self.scheduler.to_json(),
        }
        tensors = {"latents": self.latents, "generator_state": self.generator_state, **self.scheduler.tensors}
        metadata = {"format": FORMAT, "version": str(VERSION), "checkpoint": json.dumps(record, sort_keys=True)}
        return save(tensors, metadata=metadata)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to ``path`` atomically (readable by its owner only).

        Raises:
            OutputError: it could not be written (a full disk): one line; a file already there is unchanged.
        """
        target = Path(path).expanduser()
        try:
            write_atomically(target, self.to_bytes(), sync=True)
        except OSError as exc:
            raise OutputError(f"cannot write checkpoint {str(path)!r} ({_reason(exc)})") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str], allow_pickle: bool = False) -> Checkpoint:
        """Read a checkpoint file; nothing in it is executed (see the module docstring).

        Args:
            path: The file.
            allow_pickle: Also read a checkpoint of the first version (a pickle, which can run code when read):
                only for files you wrote yourself.

        Raises:
            InvalidInputError: the file is missing, unreadable, too large, not a checkpoint, damaged, of the
                first version without ``allow_pickle``, or holds non-finite latents: one line.
        """
        label = str(path)
        data = _read(Path(path).expanduser(), label)
        if data.startswith(LEGACY_MAGIC):
            if not allow_pickle:
                raise InvalidInputError(
                    f"{label!r} is a checkpoint in the old pickle format, which can run code when read; finish it "
                    "with the version that wrote it, or add --allow-pickle (Python: allow_pickle=True) if you "
                    "wrote it yourself"
                )
            checkpoint = _from_legacy(data[len(LEGACY_MAGIC) :], label)
        else:
            checkpoint = _from_safetensors(data, label)
        checkpoint._check(label)
        return checkpoint

    def _check(self, label: str) -> None:
        """What every checkpoint must hold, whichever version it was read from."""
        if not 0 <= self.step <= self.num_steps or self.latents.ndim != 4 or self.latents.dtype != torch.float32:
            raise InvalidInputError(f"checkpoint {label!r} is damaged (bad step or latents)")
        prompts = self.recipe.get("prompt")  # a panorama's canvases: one per (repeated) prompt; regions: one
        images = len(prompts) if isinstance(prompts, list) and self.recipe.get("mode") != "regions" else 1
        if self.latents.shape[0] != images:
            raise InvalidInputError(
                f"checkpoint {label!r} is damaged (its latents hold {self.latents.shape[0]} canvases, its recipe "
                f"{images})"
            )
        state = self.generator_state
        if state.dtype != torch.uint8 or state.ndim != 1 or state.numel() != _GENERATOR_BYTES:
            raise InvalidInputError(
                f"checkpoint {label!r} holds no CPU random generator state; resume runs whose generator was a "
                "CPU one (the command line's always is)"
            )
        if not bool(torch.isfinite(self.latents).all()):
            raise InvalidInputError(
                f"checkpoint {label!r} holds non-finite latents (NaN or inf) after step {self.step}: the run it "
                "records cannot give an image; start it again"
            )

    def check_run(self, recipe: Mapping[str, Any], latent_shape: tuple[int, ...], scheduler: Any) -> None:
        """Refuse to continue a run other than the one that wrote this checkpoint.

        Args:
            recipe: The recipe of the run about to continue.
            latent_shape: Its canvas latents' shape.
            scheduler: Its freshly built scheduler (with timesteps set).

        Raises:
            InvalidInputError: naming what differs (another model's weights, other settings, another canvas).
        """
        from multidiffusion.pipeline.settings.recipe import as_used

        mine, theirs = as_used(self.recipe), as_used(recipe)  # a small canvas's window: as used, old and new alike
        if mine.get("model_sha256") and theirs.get("model_sha256"):
            if mine["model_sha256"] != theirs["model_sha256"]:
                raise InvalidInputError(
                    f"the checkpoint was written with other weights (sha256 {str(mine['model_sha256'])[:12]}…) than "
                    f"this model's ({str(theirs['model_sha256'])[:12]}…)"
                )
            mine.pop("model", None), theirs.pop("model", None)
        for key in _MAY_DIFFER:
            mine.pop(key, None), theirs.pop(key, None)
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differ:
            what = "model" if "model" in differ else ", ".join(differ)
            verb = "differs" if what == "model" or len(differ) == 1 else "differ"
            raise InvalidInputError(f"the checkpoint belongs to another run: its {what} {verb}")
        if tuple(self.latents.shape) != tuple(latent_shape):
            raise InvalidInputError(
                f"the checkpoint's canvas {tuple(self.latents.shape)} does not fit this model's {tuple(latent_shape)}"
            )
        self.scheduler.check_fits(scheduler, self.num_steps)

    def check_model(self, model: Any) -> None:
        """Refuse a model other than the one the checkpoint was written with (by weights hash, else by name).

        Raises:
            InvalidInputError: naming both.
        """
        recorded, digest = self.recipe.get("model"), self.recipe.get("model_sha256")
        if digest and model.weights_sha256:
            same = digest == model.weights_sha256
        else:
            same = recorded == model.name and not digest and not model.weights_sha256
        if not same:
            raise InvalidInputError(
                f"the checkpoint was written with the model {recorded!r}, not with {model.name!r}; "
                "give the model it was written with (--model)"
            )

    def scheduler_for(self, fresh: Any, device: torch.device) -> Any:
        """``fresh``, the run's newly built scheduler, with the checkpoint's state set on a copy of it (the
        checkpoint stays reusable); the tensors go to the devices ``fresh`` keeps them on (the multistep
        history: ``device``).

        Raises:
            InvalidInputError: the recorded state does not fit ``fresh`` (see :meth:`SchedulerState.restore`).
        """
        return self.scheduler.restore(fresh, tuple(self.latents.shape), device)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _read(source: Path, label: str) -> bytes:
    """The whole file, after checking that it is a regular file of at most :data:`MAX_CHECKPOINT_BYTES`."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused as not a regular file)
        with os.fdopen(os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInputError(f"{label!r} is not a multidiffusion checkpoint (not a regular file)")
            if info.st_size > MAX_CHECKPOINT_BYTES:
                raise InvalidInputError(
                    f"{label!r} is {info.st_size / 2**30:.1f} GiB, more than a checkpoint can be "
                    f"({MAX_CHECKPOINT_BYTES // 2**30} GiB)"
                )
            data = f.read(MAX_CHECKPOINT_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read checkpoint {label!r}: {_reason(exc)}") from exc
    if len(data) > MAX_CHECKPOINT_BYTES:  # it grew while being read
        raise InvalidInputError(f"{label!r} is more than a checkpoint can be ({MAX_CHECKPOINT_BYTES // 2**30} GiB)")
    return data


def _header(data: bytes, label: str) -> dict[str, Any]:
    """The safetensors header of ``data``, checked: its length, the format and version, and every tensor's
    dtype, shape and extent (inside the file, the bytes its shape needs), before anything is read."""
    not_one = InvalidInputError(f"{label!r} is not a multidiffusion checkpoint")
    if len(data) < 8:
        raise not_one
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise not_one
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError) as exc:
        raise not_one from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise not_one
    if meta.get("version") != str(VERSION):
        raise InvalidInputError(
            f"checkpoint {label!r} is of format version {str(meta.get('version'))[:20]!r}; this version of "
            f"multidiffusion reads version {VERSION}"
        )
    damaged = InvalidInputError(f"checkpoint {label!r} is damaged (its tensor table)")
    room = len(data) - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in _ITEM_BYTES:
            raise damaged
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or len(shape) > 8 or not isinstance(offsets, list) or len(offsets) != 2:
            raise damaged
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, *offsets]):
            raise damaged
        size = _ITEM_BYTES[entry["dtype"]]
        for extent in shape:
            size *= extent
            if size > room:
                raise damaged
        if not offsets[0] <= offsets[1] <= room or offsets[1] - offsets[0] != size:
            raise damaged
    return meta


def _from_safetensors(data: bytes, label: str) -> Checkpoint:
    meta = _header(data, label)
    try:
        from safetensors.torch import load

        tensors = load(data)
        record = json.loads(meta["checkpoint"])
        if not isinstance(record, dict) or set(record) != {"recipe", "step", "num_steps", "scheduler"}:
            raise ValueError("record")
        recipe, step, num_steps = record["recipe"], record["step"], record["num_steps"]
        if not isinstance(recipe, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_STEPS for v in (step, num_steps)
        ):
            raise ValueError("recipe or steps")
        return Checkpoint(
            recipe=recipe,
            step=step,
            num_steps=num_steps,
            latents=tensors["latents"],
            scheduler=SchedulerState.from_json(record["scheduler"], tensors),
            generator_state=tensors["generator_state"],
        )
    except Exception as exc:  # a truncated or altered file: whatever the parsers raise
        raise InvalidInputError(f"checkpoint {label!r} is damaged ({type(exc).__name__})") from exc


def _from_legacy(payload: bytes, label: str) -> Checkpoint:
    """A checkpoint of the first version (unpickles: only with ``allow_pickle``)."""
    try:
        data = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)  # allowed by the caller
        return Checkpoint.of_run(
            json.loads(data["recipe"]),
            int(data["step"]),
            int(data["num_steps"]),
            data["latents"],
            data["scheduler"],
            data["generator_state"],
        )
    except Exception as exc:  # a truncated or altered file
        raise InvalidInputError(f"checkpoint {label!r} is damaged ({type(exc).__name__})") from exc


class Recorder:
    """Keeps the latest finished step of a run and writes it as a checkpoint when due and on interruption.

    Args:
        settings: Where and how often.
        recipe: The run's recipe.
        scheduler: The run's scheduler (stepped in place by the engine).
        generator: The run's generator.
        num_steps: Steps of the whole run.
    """

    def __init__(
        self,
        settings: CheckpointSettings,
        recipe: dict[str, Any],
        scheduler: Any,
        generator: torch.Generator,
        num_steps: int,
    ) -> None:
        self.settings, self.recipe, self.scheduler, self.generator = settings, recipe, scheduler, generator
        self.num_steps = num_steps
        self.latest: bytes | None = None
        self.written = True
        self.steps_done = 0
        self.steps_written: int | None = None

    def step(self, steps_done: int, latents: Tensor) -> None:
        """Record the state after ``steps_done`` steps (called right after the step, before any later draw);
        write it when due.

        Raises:
            OutputError: the write failed (see :meth:`write`).
        """
        self.steps_done = steps_done
        self.latest = Checkpoint.of_run(
            self.recipe, steps_done, self.num_steps, latents, self.scheduler, self.generator.get_state()
        ).to_bytes()
        self.written = False
        if steps_done % self.settings.every == 0 or steps_done == self.num_steps:
            self.write()

    def write(self) -> None:
        """Write the latest recorded state if it is not on disk yet.

        Raises:
            OutputError: it could not be written (a full disk): one line naming the step the file still
                holds; the file is left as it was.
        """
        if self.latest is None or self.written:
            return
        try:
            write_atomically(self.settings.path, self.latest, sync=True)
        except OSError as exc:
            kept = (
                f"it still holds step {self.steps_written}: free some space, then finish the run with resume"
                if self.steps_written is not None
                else "the file, if any, is left as it was"
            )
            raise OutputError(
                f"cannot write checkpoint {str(self.settings.path)!r} after step {self.steps_done} "
                f"({_reason(exc)}); {kept}"
            ) from exc
        self.written = True
        self.steps_written = self.steps_done
