"""Every layout and weight choice on two exact oracles: the short field of docs/theory.md and a harder one.

Usage::

    python scripts/quality_figures.py            # measure, write docs/quality_figures.md and .json
    python scripts/quality_figures.py --smoke    # two layouts, few samples: what CI runs

The harder oracle (docs/quality.md) has a correlation length comparable to the window (ℓ = window/4 and window/2)
plus a long-range component (L = 4 windows, weight ρ = 0.3 per axis), still exact in its eigenbasis
(:mod:`multidiffusion.core.oracle.field`). For each oracle and candidate layout (those of docs/layouts.md), on
unconditional 16 × 128 px panoramas with 16-px windows (DPM++ 2M Karras, 50 steps):

* seams: mean lag-1 correlation at view edges over the interior's, and the worst pair over the median pair;
* variance retained: pixel variance about the known mean over σ²;
* long-range coherence: the correlation at one and two windows' distance (16 and 32 px) over the prior's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

from multidiffusion.core.oracle.stats import column_variance, neighbour_correlation

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

ORACLES = {
    "short (ℓ = 3 px, theory.md)": "toy:ell=3,sigma=0.3",
    "harder, ℓ = window/4 + long range": "toy:ell=4,sigma=0.3,long=64,rho=0.3",
    "harder, ℓ = window/2 + long range": "toy:ell=8,sigma=0.3,long=64,rho=0.3",
}


def _layout_figures():
    """scripts/layout_figures.py as a module (its candidates, seams and sampler settings)."""
    if "layout_figures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("layout_figures", Path(__file__).with_name("layout_figures.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["layout_figures"]


lf = _layout_figures()
tf = lf.tf


def canvas_figures(spec: str, tasks: object, x: torch.Tensor, samples: int, seed: int) -> dict[str, float]:
    """Seams, variance and long-range correlation (the module docstring) of canvases ``x`` made with ``tasks``."""
    model = tf.toy_model(spec)
    field = tf.field_of(model)
    seams = lf.seam_figures(x, lf.layout_edges(tasks, lf.WIDTH, tf.STEPS))
    interior = seams.interior
    if interior != interior:  # NaN: every pair is an edge
        interior = tf.single_window(model, samples, seed=seed).correlation
    figures = {
        "seam_ratio": seams.boundary / interior,
        "worst_ratio": seams.worst / float(seams.per_pair.median()),
        "variance": float(column_variance(x).mean()) / field.variance,
    }
    for windows in (1, 2):
        lag = windows * lf.WINDOW
        figures[f"corr_{windows}w"] = float(neighbour_correlation(x, lag=lag).mean())
        figures[f"prior_{windows}w"] = field.correlation(lag)
    return figures


def figure_cells(f: dict[str, float]) -> str:
    """The shared columns of a table row: seams, variance, and the correlations with the field's own."""
    return (
        f"{f['seam_ratio']:.3f} | {f['worst_ratio']:.3f} | {f['variance']:.3f} | "
        f"{f['corr_1w']:.3f} ({f['prior_1w']:.3f}) | {f['corr_2w']:.3f} ({f['prior_2w']:.3f})"
    )


def table(oracle: str, first: list[str], last: list[str], rows: list[str]) -> list[str]:
    """One oracle's section: heading and table, the figure columns of :func:`figure_cells` between ``first`` and
    ``last``."""
    header = [*first, "edge / interior", "worst / median", "variance / σ²", "corr @ 1 window (prior)"]
    header += ["corr @ 2 windows (prior)", *last]
    return [
        "",
        f"## {oracle} (`{ORACLES[oracle]}`)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *rows,
    ]


def measure(spec: str, recipe: object, samples: int, seed: int) -> dict[str, float]:
    """One oracle × one layout: the figures of the module docstring, from ``samples`` canvases."""
    model = tf.toy_model(spec)
    tasks = recipe.tasks(lf.HEIGHT, lf.WIDTH, lf.WINDOW)
    x = tf.sample_from(model, "", samples, "noise", size=(lf.HEIGHT, lf.WIDTH), seed=seed, tasks=tasks)
    return {"views_per_step": lf.evaluations_per_step(tasks, tf.STEPS), **canvas_figures(spec, tasks, x, samples, seed)}


def render(results: dict[str, dict[str, dict[str, float]]], samples: int, seeds: tuple[int, ...]) -> str:
    lines = [
        "# Layouts and weights on two exact oracles",
        "",
        f"Written by `python scripts/quality_figures.py`: unconditional {lf.HEIGHT} × {lf.WIDTH} px panoramas, "
        f"{lf.WINDOW}-px windows, {tf.SCHEDULER} {tf.STEPS} steps, {samples} samples per seed, seeds "
        f"{', '.join(map(str, seeds))}; figures are means over the seeds. Long-range columns: the measured correlation "
        "at one and two windows' distance, and the prior's (what samples of the field itself have).",
    ]
    for oracle, rows in results.items():
        cells = [f"| {label} | {f['views_per_step']:.2f} | {figure_cells(f)} |" for label, f in rows.items()]
        lines += table(oracle, ["layout", "views / step"], [], cells)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    args = parser.parse_args()
    samples, seeds = (8, (0,)) if args.smoke else (64, (0,))
    candidates = lf.CANDIDATES[:2] if args.smoke else lf.CANDIDATES
    oracles = dict(list(ORACLES.items())[::2]) if args.smoke else ORACLES
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for oracle, spec in oracles.items():
        results[oracle] = {}
        for recipe in candidates:
            runs = [measure(spec, recipe, samples, seed) for seed in seeds]
            results[oracle][recipe.name] = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
            print(oracle, recipe.name, results[oracle][recipe.name], flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quality_figures.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (args.out_dir / "quality_figures.md").write_text(render(results, samples, seeds), encoding="utf-8")


if __name__ == "__main__":
    main()
