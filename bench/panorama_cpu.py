"""Time our panorama against diffusers' StableDiffusionPanoramaPipeline on the same tiny model (CPU).

Same components, size, scheduler, steps and seed in one process: wall and CPU time (median of --repeats
interleaved turns after a warm-up), UNet rows evaluated, and the max difference of the output latents.
Three tables: canvas sizes (cost growth, with a plot), each speed setting on/off at one size, and the
engine's own overheads (crop/fuse, prompt encoding). Writes docs/performance.md, docs/performance.json
and docs/performance_cpu.png (or into --out-dir).

    python bench/panorama_cpu.py              # the published tables (about 10 minutes on 2 idle cores)
    python bench/panorama_cpu.py --compile    # also time torch.compile (compiling takes minutes per shape)
    python bench/panorama_cpu.py --smoke      # one step, one small size: what CI runs
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers
sys.path.insert(0, str(ROOT / "bench"))

from bench_common import RowCounter, interleaved, machine_line  # noqa: E402

from multidiffusion import ViewSettings  # noqa: E402
from multidiffusion.adapters import make_scheduler  # noqa: E402
from multidiffusion.adapters.families.sd import from_components  # noqa: E402
from multidiffusion.adapters.loading.speed import apply_speed_settings  # noqa: E402
from multidiffusion.core import panorama_tasks  # noqa: E402
from multidiffusion.core.engine.fusion import FusionPlan  # noqa: E402
from multidiffusion.pipeline import MultiDiffusionPipeline  # noqa: E402
from tests.helpers.tiny_models import make_components  # noqa: E402

PROMPT = "a photo of the dolomites"
WINDOW, STRIDE = 64, 8  # latent cells: diffusers' panorama pipeline hard-codes both
SIZES = [(512, 512), (512, 768), (512, 1024), (512, 1536), (512, 2048)]
ABLATION_SIZE = (512, 768)


def n_views(height: int, width: int) -> int:
    """Views of diffusers' layout (window 64, stride 8 latent cells); ours is the same on these sizes."""
    return ((height // 8 - WINDOW) // STRIDE + 1) * ((width // 8 - WINDOW) // STRIDE + 1)


class Setup:
    """Our pipeline on a copy of the components with some speed settings, and a counter of its UNet rows."""

    def __init__(
        self,
        c: dict[str, Any],
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        compile: bool = False,
        classic_attention: bool = False,
    ) -> None:
        unet = c["unet"] if dtype == torch.float32 and not (channels_last or compile or classic_attention) else None
        if unet is None:
            unet = copy.deepcopy(c["unet"]).to(dtype)
            if classic_attention:
                from diffusers.models.attention_processor import AttnProcessor

                unet.set_attn_processor(AttnProcessor())  # explicit softmax(QKᵀ)V instead of SDPA
        model = from_components("tiny", unet, c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"].config)
        self.pipe = MultiDiffusionPipeline(apply_speed_settings(model, channels_last=channels_last, compile=compile))
        self.counter = RowCounter(unet)


def ours_call(setup: Setup, common: dict, **extra: Any) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        out = setup.pipe(
            PROMPT,
            generator=torch.Generator().manual_seed(0),
            # diffusers' weights: the comparison is like for like
            views=ViewSettings(window=WINDOW * 8, stride=STRIDE * 8, weights="uniform"),
            progress=False,
            **common,
            **extra,
        )
        return out.latents

    return run


def diffusers_call(ref: Any, common: dict, view_batch_size: int) -> Callable[[], torch.Tensor]:
    kwargs = {k: v for k, v in common.items() if k != "scheduler"}

    def run() -> torch.Tensor:
        return ref(PROMPT, generator=torch.Generator().manual_seed(0), view_batch_size=view_batch_size, **kwargs).images

    return run


def with_threads(fn: Callable[[], Any], threads: int) -> Callable[[], Any]:
    def run() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def measure(
    methods: dict[str, tuple[Callable[[], Any], RowCounter]], repeats: int, baseline: str, extra: dict
) -> list[dict]:
    """Time the methods interleaved; one row each with its UNet rows per run and the difference from
    ``baseline``'s output."""
    rows_per_run: dict[str, int] = {}

    def counted(name: str, fn: Callable[[], Any], counter: RowCounter) -> Callable[[], Any]:
        def run() -> Any:
            before = counter.rows
            out = fn()
            rows_per_run[name] = counter.rows - before
            return out

        return run

    timings = interleaved({name: counted(name, fn, counter) for name, (fn, counter) in methods.items()}, repeats)
    base = timings[baseline].output.float()
    rows = []
    for name, t in timings.items():
        rows.append(
            {
                **extra,
                "method": name,
                "seconds": round(t.wall_best, 3),
                "cpu_seconds": round(t.cpu_best, 3),
                "seconds_median": round(t.wall, 3),
                "unet_rows": rows_per_run[name],
                "max_abs_diff_vs_ours": float((t.output.float() - base).abs().max()),
            }
        )
        print(rows[-1], flush=True)
    return rows


def bench_sizes(ref: Any, ours: Setup, sizes: list[tuple[int, int]], steps: int, repeats: int) -> list[dict]:
    """Ours against diffusers at its default view batch (1) and with every view in one call, per size."""
    rows = []
    for height, width in sizes:
        views = n_views(height, width)
        common = dict(height=height, width=width, num_inference_steps=steps, guidance_scale=7.5, output_type="latent")
        common["scheduler"] = "ddim"
        methods = {
            "multidiffusion (ours)": (ours_call(ours, common), ours.counter),
            "diffusers, view batch 1 (default)": (diffusers_call(ref, common, 1), ref.counter),
        }
        if views > 1:
            methods[f"diffusers, view batch {views} (all)"] = (diffusers_call(ref, common, views), ref.counter)
        extra = {"table": "sizes", "size": f"{width}x{height}", "views": views, "steps": steps}
        rows += measure(methods, repeats, "multidiffusion (ours)", extra)
    return rows


def bench_settings(
    c: dict, ref: Any, ours: Setup, size: tuple[int, int], steps: int, repeats: int, compile: bool, smoke: bool
) -> list[dict]:
    """Each speed setting on/off at ``size`` (px), against our defaults and diffusers' view batches
    (``smoke``: one setting of each kind, to exercise the code)."""
    height, width = size
    views = n_views(height, width)
    common = dict(height=height, width=width, num_inference_steps=steps, guidance_scale=7.5, output_type="latent")
    common["scheduler"] = "ddim"
    cl, bf16 = Setup(c, channels_last=True), Setup(c, dtype=torch.bfloat16)
    methods: dict[str, tuple[Callable[[], Any], RowCounter]] = {
        f"ours: defaults (float32, {views} views per call, SDPA, NCHW)": (ours_call(ours, common), ours.counter),
        "ours: view batch 1 (views not batched)": (ours_call(ours, common, view_batch_size=1), ours.counter),
        "ours: channels-last": (ours_call(cl, common), cl.counter),
        "ours: bfloat16": (ours_call(bf16, common), bf16.counter),
    }
    if not smoke:
        bf16_cl, classic = Setup(c, dtype=torch.bfloat16, channels_last=True), Setup(c, classic_attention=True)
        methods["ours: view batch 2"] = (ours_call(ours, common, view_batch_size=2), ours.counter)
        methods["ours: bfloat16 + channels-last"] = (ours_call(bf16_cl, common), bf16_cl.counter)
        methods["ours: attention without SDPA (diffusers AttnProcessor)"] = (
            ours_call(classic, common),
            classic.counter,
        )
        if torch.get_num_threads() > 1:
            methods["ours: 1 thread"] = (with_threads(ours_call(ours, common), 1), ours.counter)
    if compile:
        compiled = Setup(c, compile=True)
        start = time.perf_counter()
        ours_call(compiled, common)()  # compiles for this batch shape; timed separately
        print(f"torch.compile: first call {time.perf_counter() - start:.0f} s", flush=True)
        methods["ours: torch.compile"] = (ours_call(compiled, common), compiled.counter)
    for batch in [1] if smoke else sorted({1, 2, views}):
        label = "diffusers, view batch 1 (default)" if batch == 1 else f"diffusers, view batch {batch}"
        methods[label] = (diffusers_call(ref, common, batch), ref.counter)
    extra = {"table": "settings", "size": f"{width}x{height}", "views": views, "steps": steps}
    return measure(methods, repeats, next(iter(methods)), extra)


def bench_overheads(c: dict, ours: Setup, repeats: int, size: tuple[int, int]) -> list[dict]:
    """The engine's own work per step at ``size``: crop + fuse of every view (one gather and one scatter-add)
    against a Python loop of per-view slices (diffusers' way), and one prompt encoding."""
    height, width = size[0] // 8, size[1] // 8
    tasks = panorama_tasks(height, width, WINDOW, STRIDE)
    plan = FusionPlan(tasks, height, width, "cpu")
    canvas = torch.randn(2, 4, height, width)  # a guided canvas: both halves

    def gather_scatter() -> torch.Tensor:
        acc = torch.zeros_like(canvas)
        plan.accumulate(acc, plan.crop(canvas, slice(None)), slice(None))
        return plan.normalise(acc)

    def slice_loop() -> torch.Tensor:
        value, count = torch.zeros_like(canvas), torch.zeros_like(canvas)
        for t in tasks:
            v = t.view
            crop = canvas[:, :, v.top : v.top + v.height, v.left : v.left + v.width]
            value[:, :, v.top : v.top + v.height, v.left : v.left + v.width] += crop
            count[:, :, v.top : v.top + v.height, v.left : v.left + v.width] += 1
        return torch.where(count > 0, value / count, value)

    encode = ours.pipe.model.encode_prompts
    timings = interleaved(
        {"crop + fuse, gather/scatter (ours)": gather_scatter, "crop + fuse, per-view slices": slice_loop}, repeats * 5
    )
    enc = interleaved({"encode": lambda: encode([PROMPT, ""])}, repeats * 5)["encode"]
    rows = [
        {"table": "overheads", "size": f"{size[1]}x{size[0]}", "views": len(tasks), "what": name, "ms": t.wall * 1e3}
        for name, t in timings.items()
    ]
    rows.append(
        {
            "table": "overheads",
            "size": "-",
            "views": 0,
            "what": "prompt + negative prompt encoding (once per call)",
            "ms": enc.wall * 1e3,
        }
    )
    for r in rows:
        print(r, flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> bool:
    """Seconds per step against views (size table); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = [r for r in rows if r["table"] == "sizes"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, key in (
        ("multidiffusion (ours)", "multidiffusion (ours)"),
        ("diffusers, view batch 1 (default)", "diffusers, view batch 1"),
        ("diffusers, all views per call", "(all)"),
    ):
        pts = [(r["views"], r["seconds"] / r["steps"]) for r in sizes if key in r["method"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for r in sizes:
        if r["method"] == "multidiffusion (ours)":
            ax.annotate(
                r["size"],
                (r["views"], r["seconds"] / r["steps"]),
                fontsize=7,
                xytext=(4, -10),
                textcoords="offset points",
            )
    ax.set_xlabel("views per step (window 64, stride 8 latent cells)")
    ax.set_ylabel("wall seconds per step")
    ax.set_title("Tiny random SD components on the CPU (guidance 7.5: 2 UNet rows per view)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _table(rows: list[dict], best: dict[str, float] | None = None) -> list[str]:
    lines = [
        "| size (px) | views | method | steps | wall (s) | CPU (s) | vs diffusers' best (wall) | UNet rows | "
        "max abs diff vs ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['seconds'] / best[r['size']]:.2f}×" if best else ""
        lines.append(
            f"| {r['size']} | {r['views']} | {r['method']} | {r['steps']} | {r['seconds']:.2f} "
            f"| {r['cpu_seconds']:.2f} | {ratio} | {r['unet_rows']} | {r['max_abs_diff_vs_ours']:.1e} |"
        )
    return lines


def diffusers_best(rows: list[dict]) -> dict[str, float]:
    """Size → diffusers' fastest wall time among ``rows`` (its best view batch there)."""
    best: dict[str, float] = {}
    for r in rows:
        if r["method"].startswith("diffusers"):
            best[r["size"]] = min(best.get(r["size"], float("inf")), r["seconds"])
    return best


def write(rows: list[dict], out_dir: Path, machine: str, plotted: bool, compile_note: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "performance.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    sizes = [r for r in rows if r["table"] == "sizes"]
    settings = [r for r in rows if r["table"] == "settings"]
    overheads = [r for r in rows if r["table"] == "overheads"]
    lines = [
        "# Performance",
        "",
        f"Measured with {machine}.",
        "",
        "Regenerate with `python bench/panorama_cpu.py` (CPU, tiny random SD components built in-process: UNet",
        "(16, 32) channels, native 64×64 latent window; window 64, stride 8 latent cells; DDIM; guidance 7.5;",
        "latents out, no decode). Methods run in turns after one warm-up each; times are the best of the",
        "turns (this machine is shared: a burst of load from other processes only ever adds time; the JSON",
        "also has the medians). CPU time is this process' (both threads). UNet rows = views × guidance halves",
        "× steps. GPU rows (an SD 2-size UNet): not measured yet; `python bench/panorama_gpu.py` on a CUDA",
        "machine writes them to docs/performance_gpu.md.",
        "",
        "## Canvas size",
        "",
        *_table(sizes, diffusers_best(sizes)),
    ]
    if plotted:
        lines += ["", "![Seconds per step against views](performance_cpu.png)"]
    lines += [
        "",
        f"## Speed settings on/off ({settings[0]['size'] if settings else ''} px)",
        "",
        *_table(settings, diffusers_best(settings)),
    ]
    lines += ["", compile_note, "", "## The engine's own work per step", ""]
    lines += ["| canvas (px) | views | what | ms |", "|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['views']} | {r['what']} | {r['ms']:.2f} |" for r in overheads]
    (out_dir / "performance.md").write_text("\n".join([*lines, "", *READING]) + "\n")


READING = [
    "## Reading the tables",
    "",
    "- All methods make the same UNet evaluations (same rows, same view crops) and agree to float rounding",
    "  (bfloat16: to its own rounding, 0.3–0.4 on latents of scale tens). Ours against diffusers at its best",
    "  view batch: 0.94–1.07× across sizes, within the noise of this shared machine (the turns of one method",
    "  differ by up to 10 %); against diffusers' default (one view per call): 0.85–0.94× from 5 views up.",
    "  The target of ≤ 0.9× diffusers' is met against its default at the larger sizes, not against its best.",
    "- Why: the time is the UNet's. Our own work per step (one gather and one scatter-add of the crops, one",
    "  scheduler step, prompts encoded once per call) is milliseconds against seconds of UNet per step. On",
    "  this tiny UNet about three quarters of a forward pass is scaled-dot-product attention over the 1,024",
    "  tokens of its 32×32 level with heads of 4 channels, whose cost is the softmax (one exponential per",
    "  score): the same kernel whichever pipeline calls it. The per-row cost is nearly flat in the batch on",
    "  the CPU, so batching views gains little (view batch 1: 1.09× our default time).",
    "- Settings: channels-last 0.95× our default time in this run (within the noise; it acts on the",
    "  convolutions, the smaller part here), bfloat16 1.08× (no gain: this CPU's bfloat16 units speed up",
    "  matrix products, not the softmax), both together 0.99×; attention without SDPA (diffusers'",
    "  `AttnProcessor`, an explicit softmax(QKᵀ)V) 3.2×; one intra-op thread instead of two 1.77× on an idle",
    "  machine (on a loaded one, two threads wait on each other and one thread can be the faster).",
    "- Gathering and scattering all views at once costs more than slicing them one by one on the CPU at",
    "  these sizes (3.4 against 1.7 ms per step at 25 views), a thousandth of the step either way; the",
    "  gather/scatter handles wrap-around with the same code, and on a GPU it is one kernel per batch.",
    "- Left: the one real saving found is the text-independent start of the UNet (its first convolution,",
    "  first resnet and first self-attention see the same input in both guidance halves): computing those",
    "  once per view saved 9 % of a tiny-UNet forward in a prototype, bit-identically. It needs the UNet's",
    "  modules wrapped by type, so it is not in the adapter yet.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one step, one small size (CI)")
    parser.add_argument("--repeats", type=int, default=2, help="timed turns per method after the warm-up")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--from-json", type=Path, help="rewrite the tables and plot from a saved JSON; no timing")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        args.out_dir.mkdir(parents=True, exist_ok=True)
        plotted = plot(saved["rows"], args.out_dir / "performance_cpu.png")
        write(saved["rows"], args.out_dir, saved["machine"], plotted, COMPILE_NOTE)
        return
    from diffusers import StableDiffusionPanoramaPipeline

    c = make_components(Path(tempfile.mkdtemp()), sample_size=64)
    ref = StableDiffusionPanoramaPipeline(
        **dict(c, scheduler=make_scheduler("ddim", c["scheduler"].config)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    ours = Setup(c)
    ref.counter = ours.counter  # diffusers shares the float32 UNet with our default setup
    if args.smoke:
        sizes, steps, repeats, settings_size, overhead_size = [(512, 576)], 1, 1, (512, 576), (512, 576)
    else:
        sizes, steps, repeats, settings_size, overhead_size = (
            SIZES,
            args.steps,
            args.repeats,
            ABLATION_SIZE,
            (512, 2048),
        )
    rows = bench_sizes(ref, ours, sizes, steps, repeats)
    rows += bench_settings(c, ref, ours, settings_size, steps, repeats, args.compile, args.smoke)
    rows += bench_overheads(c, ours, repeats, overhead_size)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plotted = plot(rows, args.out_dir / "performance_cpu.png")
    write(rows, args.out_dir, machine_line(), plotted, COMPILE_NOTE if not args.compile else "")
    print(f"wrote {args.out_dir / 'performance.md'}")


# torch.compile is slow to compile on a CPU, so the published run leaves it out; measured separately on this
# machine (scripts in the session notes: one forward of 10 UNet rows, 1 thread, compiled with inductor).
COMPILE_NOTE = (
    "torch.compile (`compile=True` at loading; `--compile` here): not in this run. Measured separately on the "
    "same machine, one forward of 10 UNet rows on 1 thread: compiling took 159 s wall (27 s CPU in this "
    "process, the rest in inductor's compile workers) for one batch shape, and every new batch shape "
    "compiles again; the compiled forward took 0.96–1.15 s CPU against 1.01–1.05 s eager, no gain beyond "
    "the noise. The attention kernel, which dominates, is the same compiled or not."
)

if __name__ == "__main__":
    main()
