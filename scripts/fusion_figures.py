"""Fusion beyond the paper, measured on the exact oracles against the default, on the same seeds (docs/fusion.md).

Usage::

    python scripts/fusion_figures.py            # measure, write docs/fusion_figures.md and .json
    python scripts/fusion_figures.py --smoke    # one oracle, few samples and rows: what CI runs
    python scripts/fusion_figures.py --plot     # only docs/fusion_correlation.png (needs matplotlib)

Variants, each on the oracles of docs/quality.md (unconditional 16 × 128 px panoramas, 16-px windows, stride
window/8 with uniform weights unless a row says otherwise; the same x_T and generator per seed):

* **default**: the engine: fuse the model outputs (Eq. 5), step once on the canvas, stochastic schedulers draw their
  noise once for the canvas;
* **x̂₀ fusion** (SyncTweedies): convert each view's output to x̂₀, fuse those, convert back, step once;
* **per-view stepping** (the paper's code, diffusers): step every view (its own noise, its own multistep history),
  then fuse the stepped views;
* **per-view noise, variance-corrected**: as per-view stepping, but the fused noise is divided by
  sqrt(Σ W_i²) / Σ W_i so each cell's noise has unit variance again;
* **global view** ω, until: :class:`~multidiffusion.core.features.global_view.GlobalView`; the oracle's global view is
exact for   the pooled field (:class:`~multidiffusion.core.oracle.field.PooledField`).

Figures as scripts/quality_figures.py: seam (edge / interior, worst / median), variance retained, correlation at one
and two windows against the field's own.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from multidiffusion.adapters.schedulers.names import make_scheduler
from multidiffusion.core.engine.crop import paste_add
from multidiffusion.core.engine.foresee import foresee_x0, output_from_x0
from multidiffusion.core.engine.fusion import FusionPlan
from multidiffusion.core.engine.guidance import ClassifierFreeGuidance, GuidedCondition
from multidiffusion.core.engine.sampling import sample, scale_model_input
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.layouts.named import LayoutRecipe
from multidiffusion.core.oracle.stats import neighbour_correlation

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _quality_figures():
    """scripts/quality_figures.py as a module (its oracles, and through it the layout and theory scripts)."""
    if "quality_figures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("quality_figures", Path(__file__).with_name("quality_figures.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["quality_figures"]


qf = _quality_figures()
lf, tf = qf.lf, qf.tf
DEFAULT_LAYOUT = LayoutRecipe("stride window/8, uniform", Fraction(1, 8), "uniform")
FEATHERED_LAYOUT = LayoutRecipe("stride window/8, feathered", Fraction(1, 8), "feathered")
GAUSSIAN_LAYOUT = LayoutRecipe("stride window/8, gaussian", Fraction(1, 8), "gaussian")
CHEAP_LAYOUT = LayoutRecipe("stride window/2, gaussian", Fraction(1, 2), "gaussian")


@dataclass(frozen=True)
class Variant:
    """One row: a label, how to fuse, the scheduler, and the layout."""

    label: str
    mode: str  # "engine", "x0", "per-view", "per-view-corrected"
    scheduler: str
    layout: LayoutRecipe = DEFAULT_LAYOUT
    global_view: GlobalView | None = None


DETERMINISTIC = "dpmpp_2m_karras"
STOCHASTIC = ("ddpm", "euler_a")


def variants(smoke: bool) -> list[Variant]:
    """The rows of the tables (a few in smoke mode)."""
    rows = [
        Variant("default (ε fusion)", "engine", DETERMINISTIC),
        Variant("x̂₀ fusion (SyncTweedies)", "x0", DETERMINISTIC),
        Variant("per-view stepping (paper's code)", "per-view", DETERMINISTIC),
        Variant("global view ω=1, first half", "engine", DETERMINISTIC, global_view=GlobalView(1.0, 0.5)),
        Variant("global view ω=1, all steps", "engine", DETERMINISTIC, global_view=GlobalView(1.0, 1.0)),
        Variant("global view ω=4, first half", "engine", DETERMINISTIC, global_view=GlobalView(4.0, 0.5)),
        Variant("global view ω=4, all steps", "engine", DETERMINISTIC, global_view=GlobalView(4.0, 1.0)),
        Variant("global view ω=16, all steps", "engine", DETERMINISTIC, global_view=GlobalView(16.0, 1.0)),
        Variant("feathered weights", "engine", DETERMINISTIC, FEATHERED_LAYOUT),
        Variant("gaussian weights", "engine", DETERMINISTIC, GAUSSIAN_LAYOUT),
        Variant(
            "gaussian weights + global view ω=4, all steps", "engine", DETERMINISTIC, GAUSSIAN_LAYOUT, GlobalView()
        ),
        Variant("cheap layout (stride window/2, gaussian)", "engine", DETERMINISTIC, CHEAP_LAYOUT),
        Variant(
            "cheap layout + global view ω=4, all steps",
            "engine",
            DETERMINISTIC,
            CHEAP_LAYOUT,
            GlobalView(4.0, 1.0),
        ),
    ]
    for name in STOCHASTIC:
        rows += [
            Variant(f"{name}: default (canvas noise)", "engine", name),
            Variant(f"{name}: x̂₀ fusion", "x0", name),
            Variant(f"{name}: per-view stepping (paper's code)", "per-view", name),
            Variant(f"{name}: per-view noise, variance-corrected", "per-view-corrected", name),
            Variant(f"{name}: global view ω=4, all steps", "engine", name, global_view=GlobalView(4.0, 1.0)),
        ]
    if smoke:
        rows = [rows[0], rows[1], rows[6], rows[13], rows[15], rows[16]]
    return rows


@contextlib.contextmanager
def _recording_noise(scheduler: object, zero: bool) -> Iterator[list[torch.Tensor]]:
    """Patch the scheduler module's ``randn_tensor``: draw zeros (``zero``) or record what it draws."""
    module = sys.modules[type(scheduler).__module__]
    original = module.randn_tensor
    drawn: list[torch.Tensor] = []

    def patched(shape, *args, **kwargs):
        z = torch.zeros(shape) if zero else original(shape, *args, **kwargs)
        drawn.append(z)
        return z

    module.randn_tensor = patched
    try:
        yield drawn
    finally:
        module.randn_tensor = original


def _reference_sample(variant: Variant, denoiser: Callable, sched, x: torch.Tensor, tasks, condition, generator):
    """The non-engine rows: x̂₀ fusion, per-view stepping and its variance-corrected form (module docstring)."""
    plan = FusionPlan(tasks, x.shape[2], x.shape[3], x.device)
    square = torch.zeros_like(plan.denominator)
    paste_add(square, plan.weights[:, None] ** 2, plan.index)
    correction = plan.denominator / square.sqrt()  # Σ W / sqrt(Σ W²): unit-variance noise after the weighted mean
    kwargs = {"generator": generator} if "generator" in inspect.signature(sched.step).parameters else {}
    for t in sched.timesteps:
        crops = plan.crop(x, slice(None))
        out = denoiser(scale_model_input(sched, crops, t), t, [condition] * len(plan), views=[k.view for k in tasks])
        if variant.mode == "x0":
            fused = torch.zeros_like(x)
            plan.accumulate(fused, foresee_x0(sched, out, crops, t), slice(None))
            x0 = plan.normalise(fused)
            x = sched.step(output_from_x0(sched, x0, x, t), t, x, **kwargs).prev_sample
            continue
        if variant.mode == "per-view":
            stepped = sched.step(out, t, crops, **kwargs).prev_sample  # one call: every view its own noise
            fused = torch.zeros_like(x)
            plan.accumulate(fused, stepped, slice(None))
            x = plan.normalise(fused)
            continue
        mean_sched = copy.deepcopy(sched)
        with _recording_noise(mean_sched, zero=True):
            mean = mean_sched.step(out, t, crops, **kwargs).prev_sample
        stepped = sched.step(out, t, crops, **kwargs).prev_sample
        fused_mean, fused_noise = torch.zeros_like(x), torch.zeros_like(x)
        plan.accumulate(fused_mean, mean, slice(None))
        plan.accumulate(fused_noise, stepped - mean, slice(None))
        x = plan.normalise(fused_mean) + plan.normalise(fused_noise) * correction
    return x


def run(spec: str, variant: Variant, samples: int, seed: int) -> torch.Tensor:
    """Canvases (samples, 3, H, W) of one variant on one oracle."""
    model = tf.toy_model(spec)
    sched = make_scheduler(variant.scheduler, model.scheduler_config)
    sched.set_timesteps(tf.STEPS)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(samples, 3, lf.HEIGHT, lf.WIDTH, generator=g) * sched.init_noise_sigma
    condition = GuidedCondition(positive=model.encode_prompts([""] * samples))
    tasks = variant.layout.tasks(lf.HEIGHT, lf.WIDTH, lf.WINDOW)
    denoiser = ClassifierFreeGuidance(model.denoiser)
    if variant.mode == "engine":
        return sample(denoiser, sched, x_T, tasks, [condition], generator=g, global_view=variant.global_view)
    with torch.no_grad():
        return _reference_sample(variant, denoiser, sched, x_T, tasks, condition, g)


PLOT_ROWS = (
    Variant("the paper's uniform weights", "engine", DETERMINISTIC),
    Variant("Gaussian weights (the default)", "engine", DETERMINISTIC, GAUSSIAN_LAYOUT),
    Variant("the default + --global-view (ω = 4)", "engine", DETERMINISTIC, GAUSSIAN_LAYOUT, GlobalView()),
)


def plot(path: Path, samples: int = 64, seed: int = 0) -> None:
    """Correlation against distance on the harder ℓ = window/2 oracle: the field's own and :data:`PLOT_ROWS`'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle, spec = list(qf.ORACLES.items())[-1]
    field = tf.field_of(tf.toy_model(spec))
    lags = list(range(1, 3 * lf.WINDOW + 1))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.plot(lags, [field.correlation(d) for d in lags], color="black", linestyle=":", label="the field itself")
    for variant in PLOT_ROWS:
        x = run(spec, variant, samples, seed)
        ax.plot(lags, [float(neighbour_correlation(x, lag=d).mean()) for d in lags], label=variant.label)
    for windows in (1, 2, 3):
        ax.axvline(windows * lf.WINDOW, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"distance (px); grey lines at 1, 2 and 3 windows of {lf.WINDOW} px")
    ax.set_ylabel("correlation of two pixels (row-wise)")
    ax.set_title(
        f"{oracle}: {lf.HEIGHT} × {lf.WIDTH} px panoramas, {samples} samples, DPM++ 2M Karras {tf.STEPS} steps"
    )
    ax.set_ylim(-0.1, 1.02)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(results: dict, differences: dict, samples: int, seeds: tuple[int, ...]) -> str:
    lines = [
        "# Fusion variants on the exact oracles",
        "",
        f"Written by `python scripts/fusion_figures.py`: unconditional {lf.HEIGHT} × {lf.WIDTH} px panoramas, "
        f"{lf.WINDOW}-px windows, {tf.STEPS} steps, {samples} samples per seed, seeds {', '.join(map(str, seeds))} "
        "(the same x_T and generator for every row); figures are means over the seeds. Layout: stride window/8 with "
        "uniform weights unless the row names another. Deterministic rows use DPM++ 2M Karras. Long-range columns: "
        "the measured correlation at one and two windows' distance, and the prior's (the field's own) in parentheses. "
        "**max |Δ| vs default**: the largest difference of any canvas value from the default row of the same "
        "scheduler (same seeds), in units of σ.",
    ]
    for oracle, rows in results.items():
        cells = [f"| {label} | {qf.figure_cells(f)} | {differences[oracle][label]:.2g} |" for label, f in rows.items()]
        lines += qf.table(oracle, ["variant"], ["max abs Δ vs default / σ"], cells)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--plot", action="store_true", help="only draw fusion_correlation.png")
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    args = parser.parse_args()
    if args.plot:
        plot(args.out_dir / "fusion_correlation.png")
        return
    samples, seeds = (8, (0,)) if args.smoke else (64, (0, 1))
    oracles = dict(list(qf.ORACLES.items())[-1:]) if args.smoke else qf.ORACLES
    rows = variants(args.smoke)
    results: dict[str, dict[str, dict[str, float]]] = {}
    differences: dict[str, dict[str, float]] = {}
    for oracle, spec in oracles.items():
        results[oracle], differences[oracle] = {}, {}
        sigma = tf.field_of(tf.toy_model(spec)).sigma
        defaults: dict[str, list[torch.Tensor]] = {}
        for variant in rows:
            canvases = [run(spec, variant, samples, seed) for seed in seeds]
            tasks = variant.layout.tasks(lf.HEIGHT, lf.WIDTH, lf.WINDOW)
            runs = [qf.canvas_figures(spec, tasks, x, samples, seed) for x, seed in zip(canvases, seeds, strict=True)]
            results[oracle][variant.label] = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
            base = defaults.setdefault(variant.scheduler, canvases)
            delta = max(float((a - b).abs().max()) for a, b in zip(canvases, base, strict=True)) / sigma
            differences[oracle][variant.label] = delta
            print(oracle, variant.label, results[oracle][variant.label], f"max|Δ|/σ={delta:.2g}", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"results": results, "max_abs_difference_over_sigma": differences, "samples": samples, "seeds": seeds}
    (args.out_dir / "fusion_figures.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    (args.out_dir / "fusion_figures.md").write_text(render(results, differences, samples, seeds), encoding="utf-8")


if __name__ == "__main__":
    main()
