"""Live painting on the toy model (pipeline/modes/live.py): frames streamed with one model call per tick are the
ordinary region runs of their scene and seed, bit for bit, and an edit is drawn by the next frame that starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.modes.live import LiveCanvas, LiveScene

MODEL = "toy:sigma=0.15"  # little texture: a pixel's colour names its region
RED = (Region("red", box=(0, 0, 32, 64)),)
SCENE = LiveScene(RED, "green", height=64, width=96, seed=5, num_inference_steps=4, scheduler="lcm")


@pytest.fixture(scope="module")
def pipe() -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline.from_pretrained(MODEL)


def _ordinary(pipe, scene: LiveScene, seed: int) -> np.ndarray:
    out = pipe.regions(
        list(scene.regions),
        scene.background,
        scene.height,
        scene.width,
        num_inference_steps=scene.num_inference_steps,
        scheduler=scene.scheduler,
        generator=torch.Generator().manual_seed(seed),
        progress=False,
    )
    return np.asarray(out.images[0])


@pytest.mark.parametrize("vary_seed", [False, True])
def test_a_stream_without_edits_is_the_ordinary_runs_bit_for_bit(pipe, vary_seed):
    scene = LiveScene(**{**SCENE.__dict__, "vary_seed": vary_seed})
    live = LiveCanvas(pipe, scene)
    frames = list(live.frames(count=6))
    assert [f.index for f in frames] == list(range(6))
    for frame in frames:
        assert np.array_equal(np.asarray(frame.image), _ordinary(pipe, scene, frame.seed)), frame.index
        assert json.loads(frame.output.metadata.to_json(0))["seed"] == frame.seed
    # one frame started per tick, 4 in flight: 6 frames of 4 steps in 6 + 3 ticks (24 calls one at a time)
    assert live.stats.calls == 9
    assert live.stats.widest == 4


def test_an_edit_is_drawn_by_the_next_frame_that_starts(pipe):
    live = LiveCanvas(pipe, SCENE)
    seen, ticks = [], {}
    for frame in live.frames(count=10):
        seen.append(frame)
        if frame.index == 2:
            ticks["before"] = live.stats.calls
            live.update(regions=(Region("blue", box=(0, 0, 32, 64)),))
            ticks["after"] = live.stats.calls
    blue = LiveScene(**{**SCENE.__dict__, "regions": (Region("blue", box=(0, 0, 32, 64)),)})
    versions = [f.version for f in seen]
    assert versions == sorted(versions) and versions[:3] == [0, 0, 0] and versions[-1] == 1
    # frames in flight at the edit finish with their own scene; the first frame started after it draws the edit
    first = next(f for f in seen if f.version == 1)
    assert ticks["before"] <= first.started <= ticks["after"] + 1
    assert all(f.started < first.started for f in seen if f.version == 0)
    for frame in seen:
        scene = blue if frame.version else SCENE
        assert np.array_equal(np.asarray(frame.image), _ordinary(pipe, scene, SCENE.seed)), frame.index
    left = np.asarray(first.image)[:, :32].astype(float).mean(axis=(0, 1))
    assert left[2] > left[0]  # the left box is now blue


def test_drop_stale_stops_the_frames_in_flight(pipe):
    live = LiveCanvas(pipe, SCENE, drop_stale=True)
    seen = []
    for frame in live.frames(count=4):
        seen.append(frame)
        if len(seen) == 1:
            live.update(seed=9)
    assert [f.version for f in seen] == [0, 1, 1, 1]
    assert all(np.array_equal(np.asarray(f.image), _ordinary(pipe, SCENE, 9)) for f in seen[1:])


def test_bad_scenes_and_settings_are_one_line_each(pipe):
    with pytest.raises(InvalidInputError, match="in_flight must be in 1…64"):
        LiveCanvas(pipe, SCENE, in_flight=0)
    live = LiveCanvas(pipe, SCENE)
    with pytest.raises(InvalidInputError, match="unknown scene field"):
        live.update(colour="red")
    with pytest.raises(InvalidInputError, match="must satisfy"):
        live.update(regions=(Region("red", box=(0, 0, 500, 64)),))
    assert live.version == 0  # a refused edit changes nothing


def test_two_canvases_share_the_model_and_neither_sees_the_other(pipe):
    """Two live canvases on one stream batcher (two browser tabs): their frames go through shared model calls, and
    each frame is its own scene's ordinary run."""
    import threading

    from multidiffusion.core.engine.stream import StreamBatcher

    batcher = StreamBatcher(pipe.model.denoiser)
    blue = LiveScene(**{**SCENE.__dict__, "regions": (Region("blue", box=(64, 0, 96, 64)),), "seed": 2})
    canvases = {"red": LiveCanvas(pipe, SCENE, batcher=batcher), "blue": LiveCanvas(pipe, blue, batcher=batcher)}
    frames: dict[str, list] = {}

    def draw(name: str) -> None:
        frames[name] = list(canvases[name].frames(count=5))

    threads = [threading.Thread(target=draw, args=(name,)) for name in canvases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert batcher.stats.widest > 4  # frames of both canvases in one call
    for name, scene in (("red", SCENE), ("blue", blue)):
        assert len(frames[name]) == 5
        for frame in frames[name]:
            assert np.array_equal(np.asarray(frame.image), _ordinary(pipe, scene, scene.seed)), (name, frame.index)


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.heavy
def test_memory_stays_flat_over_500_frames(pipe):
    live = LiveCanvas(pipe, LiveScene(**{**SCENE.__dict__, "vary_seed": True}))
    sizes = []
    for frame in live.frames(count=500):
        if frame.index in (100, 499):
            sizes.append(_rss_bytes())
    growth = sizes[1] - sizes[0]
    assert growth < 16 * 2**20, f"resident memory grew {growth / 2**20:.1f} MiB from frame 100 to 500"
    assert live.stats.calls == 500 + 3  # one frame started every tick, 4 in flight
