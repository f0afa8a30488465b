"""Checkpoints of a run in progress: write them every few steps (and on Ctrl-C), finish the run from one later.

A checkpoint holds what the rest of the run depends on: the recipe (the same JSON an image records, so the run
is rebuilt exactly as :meth:`~multidiffusion.pipeline.MultiDiffusionPipeline.reproduce` rebuilds it), the
number of steps taken, the canvas latents after them, the scheduler (its multistep history, step counter,
sigmas) and the generator's state (what stochastic schedulers, bootstrapping and any later draw continue
from). Everything else a run holds is rebuilt from the recipe: the initial noise, the bootstrap colours and
noise, the prompt embeddings. Finishing from a checkpoint gives the image the uninterrupted run gives, bit for
bit, on the same weights, dtype, device type and view batch size.

File format: the line :data:`MAGIC`, then a ``torch.save`` archive. Loading it unpickles the scheduler
(``torch.load(weights_only=False)``), which can run code: load only checkpoints this tool wrote, never one
from someone else. The magic line is checked first, so a file that is not a checkpoint is refused before
anything is unpickled. Files are written atomically (a temporary file beside it, then a rename), so an
interruption while writing leaves the previous checkpoint whole.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError

MAGIC = b"multidiffusion checkpoint 1\n"
DEFAULT_EVERY = 1  # a step costs far more than writing the latents and scheduler state (kilobytes to a few MB)
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
        num_steps: Steps of the whole run.
        latents: The canvas after ``step`` steps, (N, C, H, W) float32.
        scheduler: The scheduler object after those steps.
        generator_state: ``generator.get_state()`` after those steps.
    """

    recipe: dict[str, Any]
    step: int
    num_steps: int
    latents: Tensor
    scheduler: Any
    generator_state: Tensor

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        torch.save(
            {
                "recipe": json.dumps(self.recipe, sort_keys=True),
                "step": self.step,
                "num_steps": self.num_steps,
                "latents": self.latents.detach().cpu(),
                "scheduler": self.scheduler,
                "generator_state": self.generator_state,
            },
            buffer,
        )
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to ``path`` atomically."""
        write_atomically(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read a checkpoint this tool wrote (see the module docstring: it unpickles).

        Raises:
            InvalidInputError: the file is missing, unreadable, or not a checkpoint of this tool.
        """
        source = Path(path).expanduser()
        try:
            with source.open("rb") as f:
                head = f.read(len(MAGIC))
                if head != MAGIC:
                    raise InvalidInputError(f"{str(path)!r} is not a multidiffusion checkpoint")
                payload = io.BytesIO(f.read())
        except OSError as exc:
            raise InvalidInputError(f"cannot read checkpoint {str(path)!r}: {exc.strerror or exc}") from exc
        try:
            data = torch.load(payload, map_location="cpu", weights_only=False)  # our own file: see the docstring
            checkpoint = cls(
                recipe=json.loads(data["recipe"]),
                step=int(data["step"]),
                num_steps=int(data["num_steps"]),
                latents=data["latents"],
                scheduler=data["scheduler"],
                generator_state=data["generator_state"],
            )
        except Exception as exc:  # a truncated or altered file
            raise InvalidInputError(f"checkpoint {str(path)!r} is damaged ({type(exc).__name__})") from exc
        if not 0 <= checkpoint.step <= checkpoint.num_steps or checkpoint.latents.ndim != 4:
            raise InvalidInputError(f"checkpoint {str(path)!r} is damaged (bad step or latents)")
        return checkpoint

    def check_run(self, recipe: Mapping[str, Any], latent_shape: tuple[int, ...], scheduler: Any) -> None:
        """Refuse to continue a run other than the one that wrote this checkpoint.

        Args:
            recipe: The recipe of the run about to continue.
            latent_shape: Its canvas latents' shape.
            scheduler: Its freshly built scheduler (with timesteps set).

        Raises:
            InvalidInputError: naming what differs (another model's weights, other settings, another canvas).
        """
        mine, theirs = dict(self.recipe), dict(recipe)
        if mine.get("model_sha256") and theirs.get("model_sha256"):
            if mine["model_sha256"] != theirs["model_sha256"]:
                raise InvalidInputError(
                    f"the checkpoint was written with other weights (sha256 {mine['model_sha256'][:12]}…) than "
                    f"this model's ({theirs['model_sha256'][:12]}…)"
                )
            mine.pop("model"), theirs.pop("model")
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
        theirs_steps = getattr(self.scheduler, "timesteps", None)
        if type(self.scheduler) is not type(scheduler) or theirs_steps is None or len(theirs_steps) != self.num_steps:
            raise InvalidInputError("the checkpoint's scheduler does not match the run's")

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
        """A copy of the checkpoint's scheduler (the checkpoint stays reusable) with its tensors on the devices
        ``fresh``, the run's newly built scheduler, keeps them on (the multistep history: ``device``)."""
        scheduler = copy.deepcopy(self.scheduler)
        for name, value in vars(scheduler).items():
            if isinstance(value, Tensor):
                target = getattr(fresh, name, None)
                setattr(scheduler, name, value.to(target.device if isinstance(target, Tensor) else device))
            elif isinstance(value, list | tuple) and any(isinstance(v, Tensor) for v in value):
                moved = [v.to(device) if isinstance(v, Tensor) else v for v in value]
                setattr(scheduler, name, type(value)(moved))
        return scheduler


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    def step(self, steps_done: int, latents: Tensor) -> None:
        """Record the state after ``steps_done`` steps (called right after the step, before any later draw);
        write it when due."""
        self.steps_done = steps_done
        self.latest = Checkpoint(
            self.recipe, steps_done, self.num_steps, latents, self.scheduler, self.generator.get_state()
        ).to_bytes()
        self.written = False
        if steps_done % self.settings.every == 0 or steps_done == self.num_steps:
            self.write()

    def write(self) -> None:
        """Write the latest recorded state if it is not on disk yet."""
        if self.latest is not None and not self.written:
            write_atomically(self.settings.path, self.latest)
            self.written = True
