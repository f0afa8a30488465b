"""Fifty consecutive generations in one process (what a UI or a batch does) leave memory flat."""

from __future__ import annotations

import gc
import os

import pytest
import torch

from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline import MultiDiffusionPipeline

RUNS = 50
WARM_UP = 10  # allocator pools, caches and lazily built plans settle in the first runs
# Resident memory may move by a few MB between runs (allocator pools); a leak of even one small canvas, its
# latents or a tiny model's activations per run would add more than this over 40 runs. Measured growth:
# 0.3 MB (toy) and 1–3 MB (tiny SD) over runs 10–50 on an x86 CPU.
MAX_GROWTH_MB = 48


def _rss_mb() -> float:
    """This process's resident memory, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _soak(pipe: MultiDiffusionPipeline, size: int, steps: int) -> list[float]:
    readings = []
    for i in range(RUNS):
        generator = torch.Generator().manual_seed(i)
        common = dict(num_inference_steps=steps, generator=generator, progress=False)
        if i % 3 == 0:
            pipe("sky", height=size, width=4 * size, **common)
        elif i % 3 == 1:
            box = (0, 0, size, size)
            pipe.regions([Region("red", box=box)], background="sky", height=size, width=4 * size, **common)
        else:
            pipe("sky", height=size, width=2 * size, sync=True, sync_loss="builtin", **common)
        gc.collect()
        readings.append(_rss_mb())
    return readings


@pytest.mark.heavy
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from Linux /proc")
@pytest.mark.parametrize("which", ["toy", "tiny SD"])
def test_memory_stays_flat_over_fifty_generations(which, small_pipe, one_thread):
    pipe = MultiDiffusionPipeline.from_pretrained("toy") if which == "toy" else small_pipe
    readings = _soak(pipe, size=64 if which == "toy" else 128, steps=4 if which == "toy" else 2)
    growth = readings[-1] - readings[WARM_UP - 1]
    print(f"{which}: resident memory, MB, every 5th run: {[round(r, 1) for r in readings[::5]]}")
    assert growth < MAX_GROWTH_MB, f"{which}: resident memory grew {growth:.1f} MB over runs {WARM_UP}–{RUNS}"
