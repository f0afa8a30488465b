"""Helpers shared by the benchmark scripts: UNet row counting and interleaved timing.

Timing on a shared machine: every method is warmed up once, then the methods run in turns (round-robin),
so a burst of load from another process hits all of them alike. Each method keeps the median and the
best (minimum) of its turns, in wall time and in the process' CPU time; on a machine other processes
load, the best turn is the one least disturbed (a burst only ever adds time).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class RowCounter:
    """Counts UNet batch rows (one row = one view evaluated for one guidance half)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.rows = 0
        unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.rows += int(sample.shape[0])


@dataclass(frozen=True)
class Timing:
    """Seconds of a method's timed turns (median and best, wall and CPU), and what its last run returned."""

    wall: float
    cpu: float
    wall_best: float
    cpu_best: float
    runs: int
    output: Any


def interleaved(methods: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """Warm every method up once, then run them in turns ``repeats`` times; median wall / CPU seconds each."""
    outputs = {name: fn() for name, fn in methods.items()}  # warm-up (first-call allocations, caches)
    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[name] = fn()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {
        name: Timing(
            statistics.median(walls[name]),
            statistics.median(cpus[name]),
            min(walls[name]),
            min(cpus[name]),
            repeats,
            outputs[name],
        )
        for name in methods
    }


def machine_line() -> str:
    """Threads, torch version and the 1-minute load average: what a reader needs to weigh the timings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} when the run ended"
    )
