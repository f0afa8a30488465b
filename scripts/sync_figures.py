"""Measure SyncDiffusion: coherence on the exact mixture model, and its time and memory cost on tiny SD.

Writes docs/sync_figures.md (tables included by docs/sync.md) and docs/sync_figures.json.

    python scripts/sync_figures.py            # the published tables (about 5 minutes on 2 CPU cores)
    python scripts/sync_figures.py --smoke    # a few seconds: what CI runs

Part 1, coherence. The Gaussian-field model with the prompt "red or blue" (two fields with equal odds,
docs/design.md §9): 16 × 256 px canvas, window 16, stride 4, DDIM 50 steps, one seed per row of the mean.
Per run: the fraction of 16-px crops whose colour (red channel above 0) differs from the centre crop's,
and the colour spread (core/metrics/coherence.py), seed-averaged as sqrt(mean variance); the theory column is the
spread of one exact sample of a single-colour field (core/oracle/stats.py, expected_crop_colour_variance), and
"colour error" is the distance of the panorama's mean colour from the nearer of the two prompt colours.

Part 2, cost. Tiny random SD components (tests/helpers/tiny_models.py), 128 × 512 px, window 128, stride 64,
DDIM 4 steps, every step synchronised. Each configuration runs in a fresh process: wall time (median of
3 after a warm-up) and the growth of the peak resident memory during the runs (ru_maxrss after − before).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers

from multidiffusion import SyncSettings, ViewSettings  # noqa: E402
from multidiffusion.core.metrics.coherence import colour_spread, crop_grid  # noqa: E402
from multidiffusion.core.oracle.field import GaussianField  # noqa: E402
from multidiffusion.core.oracle.prompts import prompt_colour  # noqa: E402
from multidiffusion.core.oracle.stats import expected_crop_colour_variance  # noqa: E402
from multidiffusion.pipeline import MultiDiffusionPipeline  # noqa: E402

H, W, WINDOW, STRIDE, CROP = 16, 256, 16, 4, 16


def toy_row(pipe, prompt: str, seeds: int, steps: int, **kw) -> dict:
    images, start = [], time.perf_counter()
    for seed in range(seeds):
        r = pipe(
            prompt,
            height=H,
            width=W,
            views=ViewSettings(window=WINDOW, stride=STRIDE),
            num_inference_steps=steps,
            output_type="pt",
            progress=False,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )
        images.append(r.latents[0])
    seconds = (time.perf_counter() - start) / seeds
    centre = W // 2 // CROP
    disagree = []
    for x in images:
        red = crop_grid(x, CROP).mean((2, 3))[:, 0] > 0
        disagree.append(float((red != red[centre]).float().mean()))
    spread = (sum(colour_spread(crop_grid(x, CROP)) ** 2 for x in images) / seeds) ** 0.5
    parts = [torch.tensor(prompt_colour(p)) for p in prompt.split(" or ")]
    error = statistics.mean(min(float((x.mean((1, 2)) - c).abs().max()) for c in parts) for x in images)
    return {"disagree": statistics.mean(disagree), "spread": spread, "colour_error": error, "seconds": seconds}


def coherence_table(seeds: int, steps: int, stops: list[int | None], weights: list[float]) -> list[dict]:
    pipe = MultiDiffusionPipeline.from_pretrained("toy", device="cpu")
    rows = [{"run": "red (one colour), plain", **toy_row(pipe, "red", seeds, steps)}]
    rows.append({"run": "red or blue, plain", **toy_row(pipe, "red or blue", seeds, steps)})
    for w in weights:
        for stop in stops:
            sync = SyncSettings(loss="builtin", weight=w, stop_step=stop)
            row = toy_row(pipe, "red or blue", seeds, steps, sync=sync)
            rows.append({"run": f"red or blue, sync w={w:g}, stop={stop if stop is not None else 'all'}", **row})
    theory = expected_crop_colour_variance(GaussianField(3.0, 0.3), H, W, CROP) ** 0.5
    for row in rows:
        row["spread_vs_theory"] = row["spread"] / theory
    return rows


CONFIGS: dict[str, dict | None] = {  # the SyncSettings fields of each configuration (None: no sync)
    "plain": None,
    "sync": {},
    "sync, chunk 1": dict(chunk_size=1),
    "sync, checkpointing": dict(checkpointing=True),
    "sync, chunk 1, checkpointing": dict(chunk_size=1, checkpointing=True),
}


def child(config: str, steps: int, repeats: int) -> dict:
    """One configuration, in this (fresh) process: time and peak-memory growth."""
    from tests.helpers.tiny_models import loaded, make_components

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = MultiDiffusionPipeline(loaded(make_components(Path(tmp), sample_size=16, seed=1)))
    fields = CONFIGS[config]
    kw = dict(
        height=128,
        width=512,
        views=ViewSettings(window=128, stride=64),
        num_inference_steps=steps,
        output_type="latent",
        progress=False,
        sync=None if fields is None else SyncSettings(loss="builtin", stop_step=None, **fields),
    )

    def run() -> torch.Tensor:
        return pipe("a photo of the dolomites", generator=torch.Generator().manual_seed(0), **kw).latents

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"config": config, "seconds": statistics.median(times), "peak_mib": (after - before) / 1024}


def cost_table(steps: int, repeats: int, configs: list[str]) -> list[dict]:
    rows = []
    for config in configs:
        out = subprocess.run(
            [sys.executable, __file__, "--child", config, "--steps", str(steps), "--repeats", str(repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds"] / base["seconds"]
    return rows


def write(coherence: list[dict], cost: list[dict], out_dir: Path, command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sync_figures.json").write_text(json.dumps({"coherence": coherence, "cost": cost}, indent=2))
    lines = [
        f"<!-- generated by `{command}`; do not edit -->",
        "",
        "### Coherence on the exact mixture model",
        "",
        "| run | crops disagreeing with the centre | colour spread | spread / one-field theory "
        "| colour error | s per run |",
        "|---|---|---|---|---|---|",
    ]
    for r in coherence:
        lines.append(
            f"| {r['run']} | {r['disagree']:.3f} | {r['spread']:.3f} | {r['spread_vs_theory']:.2f} "
            f"| {r['colour_error']:.3f} | {r['seconds']:.2f} |"
        )
    lines += [
        "",
        "### Cost on tiny SD components (CPU, every step synchronised)",
        "",
        "| configuration | s per run | × plain | peak memory growth, MiB |",
        "|---|---|---|---|",
    ]
    for r in cost:
        lines.append(f"| {r['config']} | {r['seconds']:.2f} | {r['time_ratio']:.2f} | {r['peak_mib']:.0f} |")
    (out_dir / "sync_figures.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps, args.repeats)))
        return
    torch.set_num_threads(1)
    if args.smoke:
        coherence = coherence_table(seeds=1, steps=4, stops=[2], weights=[20.0])
        cost = cost_table(steps=1, repeats=1, configs=["plain", "sync"])
        command = "python scripts/sync_figures.py --smoke"
    else:
        coherence = coherence_table(seeds=12, steps=50, stops=[1, 2, 5, 10, 20, None], weights=[5.0, 20.0])
        cost = cost_table(steps=4, repeats=3, configs=list(CONFIGS))
        command = "python scripts/sync_figures.py"
    write(coherence, cost, args.out_dir, command)
    print((args.out_dir / "sync_figures.md").read_text())


if __name__ == "__main__":
    main()
