"""Measure cheaper layouts on the exact Gaussian-field model; regenerate the table of docs/layouts.md.

Usage::

    python scripts/layout_figures.py            # measure, write the table into docs/layouts.md
    python scripts/layout_figures.py --print    # print the table, write nothing

For every candidate layout (stride as a fraction of the window × weights, and shifted non-overlapping
tiles) it samples unconditional panoramas with the engine and reports the seam figures of
:mod:`multidiffusion.core.metrics.seams` and the denoiser evaluations per step. tests/oracle/test_toy_layouts.py imports
:func:`measure` with the same settings, so the tested figures are the documented ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.layouts.named import LAYOUTS, LayoutRecipe, evaluations_per_step
from multidiffusion.core.metrics.seams import SeamFigures, edge_pairs, seam_figures
from multidiffusion.core.oracle.stats import column_variance

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BEGIN, END = "<!-- layout-table:begin -->", "<!-- layout-table:end -->"


def _theory_figures():
    """scripts/theory_figures.py as a module: its sampler, settings and single-window reference."""
    if "theory_figures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("theory_figures", Path(__file__).with_name("theory_figures.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["theory_figures"]


tf = _theory_figures()

# The settings of docs/theory.md (16-px window, ℓ = 3 px, DPM++ 2M Karras, 50 steps) on a wider canvas, so
# each layout has many view edges and an interior: 16 × 128 px, 64 samples per seed.
WINDOW = tf.WINDOW
HEIGHT = tf.HEIGHT
WIDTH = 128
SAMPLES = 64
SEEDS = (0, 1, 2)
THRESHOLD = 0.95

# What the table compares: the defaults (stride window / 8 for Stable Diffusion, window / 4 for the toy
# model), larger strides with each weight kind, shifted tiles with each weight kind, and plain tiles.
CANDIDATES: tuple[LayoutRecipe, ...] = (
    LayoutRecipe("stride window/8, uniform (SD default)", Fraction(1, 8), "uniform"),
    LayoutRecipe("stride window/4, uniform (toy default)", Fraction(1, 4), "uniform"),
    *(
        LayoutRecipe(f"stride {label}, {kind}", frac, kind)
        for label, frac in (("window/2", Fraction(1, 2)), ("3/4 window", Fraction(3, 4)))
        for kind in ("uniform", "feathered", "gaussian")
    ),
    *(LayoutRecipe(f"shifted tiles, {kind}", None, kind) for kind in ("uniform", "feathered", "gaussian")),
    LayoutRecipe("fixed tiles (stride = window), uniform", Fraction(1), "uniform"),
)

# Canvases whose cost the table lists besides the measured one: (label, height, width, window) in latent cells.
COST_CANVASES = (
    ("toy 16×128, window 16", HEIGHT, WIDTH, WINDOW),
    ("SD 512×2048 px", 64, 256, 64),
    ("SD 512×4608 px", 64, 576, 64),
    ("SD 1024×2048 px", 128, 256, 64),
)


@dataclass(frozen=True)
class LayoutFigures:
    """A layout measured on the exact model.

    Attributes:
        recipe: The layout.
        evaluations: Denoiser evaluations per step and canvas (views), mean over the steps.
        seams: Per-pair correlations; the edges are the pairs a view edge separates at any step.
        reference: Lag-1 correlation of single-window samples (no view edge anywhere), same sampler.
        variance: Pixel variance about the known mean, pooled.
    """

    recipe: LayoutRecipe
    evaluations: float
    seams: SeamFigures
    reference: float
    variance: float

    @property
    def ratio(self) -> float:
        """Mean correlation at view edges / interior. The interior is the pairs no view edge separates, or,
        when every pair is an edge at some step (shifted tiles), the single-window reference."""
        interior = self.seams.interior if math.isfinite(self.seams.interior) else self.reference
        return self.seams.boundary / interior

    @property
    def worst_ratio(self) -> float:
        """Lowest correlation of any column pair / the median pair's: the deepest dip below the canvas' own
        level, wherever the layout put it (a seam that moves from step to step can leave one anywhere)."""
        return self.seams.worst / float(self.seams.per_pair.median())

    @property
    def holds(self) -> bool:
        """Both figures at ≥ THRESHOLD."""
        return self.ratio >= THRESHOLD and self.worst_ratio >= THRESHOLD


def layout_edges(tasks, width: int, steps: int) -> tuple[int, ...]:
    """Column pairs that a view edge separates at any of the ``steps`` steps."""
    if not isinstance(tasks, TaskSchedule):
        return edge_pairs((t.view for t in tasks), width)
    return tuple(sorted({c for k in range(steps) for c in edge_pairs((t.view for t in tasks.tasks_at(k)), width)}))


def reference_correlation(model: LoadedModel, samples: int = 256, seed: int = tf.SEED) -> float:
    """Lag-1 correlation inside single WINDOW × WINDOW samples (the sampler's own, with no view edge)."""
    return tf.single_window(model, samples, seed=seed).correlation


def measure(
    model: LoadedModel,
    recipe: LayoutRecipe,
    *,
    width: int = WIDTH,
    samples: int = SAMPLES,
    seed: int = tf.SEED,
    reference: float | None = None,
) -> LayoutFigures:
    """Unconditional HEIGHT × ``width`` panoramas with ``recipe``: seam figures and evaluations per step."""
    tasks = recipe.tasks(HEIGHT, width, WINDOW)
    x = tf.sample_from(model, "", samples, "noise", size=(HEIGHT, width), seed=seed, tasks=tasks)
    ref = reference_correlation(model) if reference is None else reference
    return LayoutFigures(
        recipe=recipe,
        evaluations=evaluations_per_step(tasks, tf.STEPS),
        seams=seam_figures(x, layout_edges(tasks, width, tf.STEPS)),
        reference=ref,
        variance=float(column_variance(x).mean()),
    )


def cost(recipe: LayoutRecipe, height: int, width: int, window: int) -> float:
    """Evaluations per step of ``recipe`` on a canvas, latent cells (mean over 50 steps for shifted tiles)."""
    return evaluations_per_step(recipe.tasks(height, width, window), 50)


def render(results: dict[str, list[LayoutFigures]], reference: float) -> str:
    """The markdown block between the table markers of docs/layouts.md."""
    default = CANDIDATES[0]
    lines = [
        BEGIN,
        f"Settings: Gaussian field ℓ = 3 px, σ = 0.3; window {WINDOW} px; canvas {HEIGHT}×{WIDTH} px; "
        f"{tf.SCHEDULER} {tf.STEPS} steps; {SAMPLES} samples per seed, seeds {', '.join(map(str, SEEDS))}; "
        f"single-window reference correlation {reference:.4f}. Figures are the lowest over the seeds.",
        "",
        "| layout | views / step | edge / interior | worst pair / median pair | variance / σ² | ≥ 0.95 | named |",
        "|---|---|---|---|---|---|---|",
    ]
    named = {(r.stride, r.weights): name for name, r in LAYOUTS.items()}
    sigma2 = tf.field_of(tf.toy_model()).variance
    for label, runs in results.items():
        f0 = runs[0]
        ratio = min(f.ratio for f in runs)
        worst = min(f.worst_ratio for f in runs)
        variance = min(f.variance for f in runs) / sigma2
        holds = all(f.holds for f in runs)
        name = named.get((f0.recipe.stride, f0.recipe.weights), "")
        lines.append(
            f"| {label} | {f0.evaluations:.2f} | {ratio:.3f} | {worst:.3f} | {variance:.3f} | "
            f"{'yes' if holds else 'no'} | {f'`{name}`' if name else ''} |"
        )
    lines += [
        "",
        "Evaluations per step (views per canvas and guidance half; shifted tiles: mean over 50 steps), and "
        "relative to the SD default (stride window / 8, uniform):",
        "",
        "| layout | " + " | ".join(label for label, *_ in COST_CANVASES) + " |",
        "|---|" + "---|" * len(COST_CANVASES),
    ]
    recipes = [default, *LAYOUTS.values()]
    base = [cost(default, h, w, win) for _, h, w, win in COST_CANVASES]
    for recipe in recipes:
        cells = []
        for b, (_, h, w, win) in zip(base, COST_CANVASES, strict=True):
            c = cost(recipe, h, w, win)
            cells.append(f"{c:.1f} ({c / b:.2f}×)")
        label = recipe.name if recipe is default else f"`{recipe.name}`"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table only; write nothing")
    parser.add_argument("--out", type=Path, default=DOCS / "layouts.md", help="the doc holding the table block")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(1)  # small tensors gain nothing from more threads
    start = time.perf_counter()
    model = tf.toy_model()
    reference = reference_correlation(model)
    results = {
        recipe.name: [measure(model, recipe, seed=seed, reference=reference) for seed in SEEDS] for recipe in CANDIDATES
    }
    for label, runs in results.items():
        print(label, [f"{f.ratio:.3f}/{f.worst_ratio:.3f}" for f in runs], file=sys.stderr)
    block = render(results, reference)
    print(block)
    if not args.print:
        tf.update_doc(block, args.out, BEGIN, END)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
