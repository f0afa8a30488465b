"""Live painting's throughput (docs/live.md): frames per second and edit-to-frame latency of a stream (a frame started
every tick, all frames in flight in one model call) against regenerating from scratch (one frame at a time, a
LiveCanvas with in_flight=1), on the toy model and on tiny random SD components, on this machine's CPU.

    python bench/live.py            # the table in docs/live.md
    python bench/live.py --smoke    # a few frames: a check that the script runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiffusion.core.features.regions import Region  # noqa: E402
from multidiffusion.pipeline import MultiDiffusionPipeline  # noqa: E402
from multidiffusion.pipeline.modes.live import LiveCanvas, LiveScene  # noqa: E402


def measure(pipe: Any, scene: LiveScene, in_flight: int | None, frames: int) -> dict[str, float]:
    """Frames per second over ``frames`` frames after a warm-up, and the edit-to-frame latency: from an update (a
    region's prompt changed) to the first frame that draws it, in seconds and in model calls (ticks)."""
    live = LiveCanvas(pipe, scene, in_flight=in_flight)
    warm = scene.num_inference_steps + 2
    stream = live.frames()
    for _ in range(warm):
        next(stream)
    start, calls = time.perf_counter(), live.stats.calls
    for _ in range(frames):
        next(stream)
    seconds = time.perf_counter() - start
    fps = frames / seconds
    ticks_per_frame = (live.stats.calls - calls) / frames
    edited = (Region("blue", box=scene.regions[0].box),)
    asked, asked_calls = time.perf_counter(), live.stats.calls
    version = live.update(regions=edited)
    for frame in stream:
        if frame is not None and frame.version == version:
            latency, latency_calls = time.perf_counter() - asked, frame.finished - asked_calls
            break
    live.close()
    return {
        "fps": fps,
        "ticks_per_frame": ticks_per_frame,
        "latency_s": latency,
        "latency_ticks": latency_calls,
        "widest": live.stats.widest,
    }


def tiny_sd() -> Any:
    """The facade on tiny random SD components (tests/helpers/tiny_models.py): a real UNet, VAE and text encoder."""
    from tests.helpers.tiny_models import loaded, make_components

    with tempfile.TemporaryDirectory() as tmp:
        return MultiDiffusionPipeline(loaded(make_components(Path(tmp), sample_size=16, seed=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few frames, small canvases")
    args = parser.parse_args()
    frames = 4 if args.smoke else 40
    rows = []
    models = [("toy", MultiDiffusionPipeline.from_pretrained("toy"), (64, 128) if args.smoke else (128, 256), "lcm")]
    if not args.smoke:
        models.append(("tiny SD", tiny_sd(), (128, 256), "lcm"))
    for name, pipe, (height, width), scheduler in models:
        box = (0, 0, width // 2, height)
        scene = LiveScene((Region("red", box=box),), "green", height, width, num_inference_steps=4, scheduler=scheduler)
        stream = measure(pipe, scene, None, frames)
        scratch = measure(pipe, scene, 1, max(2, frames // 4))
        rows.append((name, height, width, stream, scratch))
        print(name, "stream", stream, "scratch", scratch, file=sys.stderr)
    print("| model | canvas | mode | frames/s | model calls per frame | edit → frame, s | edit → frame, calls |")
    print("|---|---|---|---|---|---|---|")
    for name, height, width, stream, scratch in rows:
        for label, r in (("stream (5 in flight)", stream), ("from scratch", scratch)):
            print(
                f"| {name} | {width} × {height} | {label} | {r['fps']:.1f} | {r['ticks_per_frame']:.2f} | "
                f"{r['latency_s']:.2f} | {r['latency_ticks']} |"
            )
        print(
            f"| {name} | | **stream ÷ scratch** | **{stream['fps'] / scratch['fps']:.2f}×** | | "
            f"**{stream['latency_s'] / scratch['latency_s']:.2f}×** | |"
        )


if __name__ == "__main__":
    main()
