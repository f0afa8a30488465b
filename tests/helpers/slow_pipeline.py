"""A stand-in pipeline call that takes many slow steps and records them, for the UI's stop-on-disconnect tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

STEPS = 10_000  # more than any test waits for: a run ends only when it is stopped


@dataclass
class StepStateStub:
    step_index: int
    num_steps: int
    latents: Any = None
    denoised: Any = None


class SlowPipeline:
    """A pipeline call of :data:`STEPS` steps of ``step_s`` seconds each that records the steps it took."""

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.steps: list[int] = []
        self.started = threading.Event()

    def __call__(self, callback_on_step_end: Any, progress: bool, **kwargs: Any) -> Any:
        self.started.set()
        for i in range(STEPS):
            time.sleep(self.step_s)
            self.steps.append(i)
            if callback_on_step_end(StepStateStub(i, STEPS)):
                break
        return None  # a stopped run writes nothing, so its result is never read


def steps_once_still(pipe: SlowPipeline, timeout: float) -> int:
    """Wait until ``pipe`` takes no more steps; the number it took (AssertionError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        if len(pipe.steps) == seen:
            return seen
        seen = len(pipe.steps)
        time.sleep(10 * pipe.step_s)
    raise AssertionError(f"the run still steps after {timeout} s ({len(pipe.steps)} steps)")
