"""Measure MultiDiffusion on the exact Gaussian-field model; regenerate the table and plot of docs/theory.md.

Usage::

    python scripts/theory_figures.py             # table into docs/theory.md, plot docs/neighbour_correlation.png
    python scripts/theory_figures.py --no-plot   # table only (no matplotlib needed)
    python scripts/theory_figures.py --print     # print the table, write nothing

The measurement functions are also the conformance suite's (tests/oracle/test_toy_conformance.py imports them with
the same settings and seeds), so the documented figures are the tested ones. matplotlib is imported only
by :func:`plot` (``pip install matplotlib``); nothing else needs it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from multidiffusion import ViewSettings
from multidiffusion.adapters import SCHEDULER_NAMES, load_model, make_scheduler
from multidiffusion.adapters.families.toy import NoiseLevels
from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, layout_views, panorama_tasks, sample
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.metrics.seams import edge_pairs, seam_figures
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.oracle.prompts import prompt_colour
from multidiffusion.core.oracle.stats import column_variance, neighbour_correlation
from multidiffusion.core.types import ViewTask
from multidiffusion.pipeline import MultiDiffusionPipeline

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BEGIN, END = "<!-- theory-table:begin -->", "<!-- theory-table:end -->"

# The settings of every figure (docs/design.md §9): 16-px windows, ℓ = 3 px, σ = 0.3, DPM++ 2M with Karras
# sigmas, 20 steps. Pixels are latent cells for this model (scale factor 1).
SPEC = "toy"
WINDOW = 16
HEIGHT = 16
PANORAMA_WIDTH = 64
STRIDE = 4
SCHEDULER = "dpmpp_2m_karras"
STEPS = 50
SINGLE_SAMPLES = 256
PANORAMA_SAMPLES = 32
COLOUR_SAMPLES = 32
COLOUR_PROMPT = "sky"
COLOUR_SIZE = (16, 64)
SEED = 0


@dataclass(frozen=True)
class WindowStats:
    """Pixel variance and lag-1 horizontal correlation of samples about their known mean."""

    variance: float
    correlation: float


@dataclass(frozen=True)
class PanoramaStats:
    """Statistics of a panorama's samples.

    Attributes:
        variance: Pixel variance about the known mean, pooled over the canvas.
        boundary: Mean lag-1 correlation over the column pairs (c, c + 1) that a view edge separates.
        interior: Mean lag-1 correlation over the other column pairs.
        per_column: Lag-1 correlation of every column pair, (W − 1,).
        boundaries: The pairs' left columns c counted as boundary.
    """

    variance: float
    boundary: float
    interior: float
    per_column: Tensor
    boundaries: tuple[int, ...]

    @property
    def ratio(self) -> float:
        """boundary / interior correlation."""
        return self.boundary / self.interior


def toy_model(spec: str = SPEC) -> LoadedModel:
    """The Gaussian-field model on the CPU."""
    return load_model(spec, device="cpu")


def field_of(model: LoadedModel) -> GaussianField:
    """The model's field (ℓ, σ)."""
    return model.components["field"]


def sample_canvases(
    model: LoadedModel,
    prompts: list[str],
    *,
    height: int,
    width: int,
    stride: int,
    weights: str = "uniform",
    scheduler: str = SCHEDULER,
    steps: int = STEPS,
    guidance: float = 1.0,
    seed: int = SEED,
) -> Tensor:
    """N = len(prompts) canvases through the pipeline (pure-noise start), window ``WINDOW``: (N, 3, H, W)."""
    out = MultiDiffusionPipeline(model)(
        prompts,
        height=height,
        width=width,
        views=ViewSettings(window=WINDOW, stride=stride, weights=weights),
        scheduler=scheduler,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        progress=False,
    )
    return out.latents


def single_window(
    model: LoadedModel,
    samples: int = SINGLE_SAMPLES,
    *,
    scheduler: str = SCHEDULER,
    steps: int = STEPS,
    seed: int = SEED,
) -> WindowStats:
    """Unconditional samples of one WINDOW × WINDOW view: variance and lag-1 correlation (theory σ², e^{−1/2ℓ²})."""
    x = sample_canvases(
        model, [""] * samples, height=WINDOW, width=WINDOW, stride=WINDOW, scheduler=scheduler, steps=steps, seed=seed
    )
    return WindowStats(float(column_variance(x).mean()), float(neighbour_correlation(x).mean()))


def ddim_closed_form(model: LoadedModel, steps: int = 50, size: int = WINDOW) -> WindowStats:
    """Variance and lag-1 correlation that unconditional DDIM (η = 0) samples of one window must have.

    DDIM on the exact denoiser multiplies each eigen-coordinate of x_t by (α′ α λ + s′ s) / (α² λ + s²) per
    step, so from x_T ~ N(0, I) the output's covariance is diagonal in the eigenbasis with the squared
    product of those factors; pixel statistics follow from the eigenvectors.
    """
    field = field_of(model)
    sched = make_scheduler("ddim", model.scheduler_config)
    sched.set_timesteps(steps)
    abar = sched.alphas_cumprod.to(torch.float64)
    u_h, u_w, lam = field.eigenbasis(size, size)
    variance = torch.ones_like(lam)  # per eigen-coordinate, x_T ~ N(0, I)
    ts = [int(t) for t in sched.timesteps]
    for i, t in enumerate(ts):
        prev = abar[ts[i + 1]] if i + 1 < len(ts) else sched.final_alpha_cumprod.to(torch.float64)
        a, s, a2, s2 = abar[t].sqrt(), (1 - abar[t]).sqrt(), prev.sqrt(), (1 - prev).sqrt()
        variance = variance * ((a2 * a * lam + s2 * s) / (a * a * lam + s * s)) ** 2
    pixel = torch.einsum("ri,cj,ij->rc", u_h**2, u_w**2, variance)  # Var of pixel (r, c)
    lag1 = torch.einsum("ri,cj,ij->rc", u_h**2, u_w[:-1] * u_w[1:], variance)  # Cov of (r, c), (r, c + 1)
    return WindowStats(float(pixel.mean()), float(lag1.sum() / (pixel[:, :-1].sum() * pixel[:, 1:].sum()).sqrt()))


def boundary_pairs(width: int, window: int, stride: int) -> tuple[int, ...]:
    """Left columns c of the pairs (c, c + 1) that a view edge separates (a view ends at c or starts at c + 1)."""
    return edge_pairs(layout_views(window, width, window, stride), width)


def panorama(
    model: LoadedModel,
    stride: int = STRIDE,
    weights: str = "uniform",
    samples: int = PANORAMA_SAMPLES,
    *,
    width: int = PANORAMA_WIDTH,
    scheduler: str = SCHEDULER,
    steps: int = STEPS,
    seed: int = SEED,
) -> PanoramaStats:
    """Unconditional HEIGHT × ``width`` panoramas: neighbour correlation at view boundaries and inside views.

    ``stride == WINDOW`` gives independent tiles: views that share no cell never exchange information.
    """
    prompts = [""] * samples
    kwargs = dict(height=HEIGHT, width=width, stride=stride, weights=weights, scheduler=scheduler, steps=steps)
    x = sample_canvases(model, prompts, seed=seed, **kwargs)
    seams = seam_figures(x, boundary_pairs(width, WINDOW, stride))
    return PanoramaStats(float(column_variance(x).mean()), seams.boundary, seams.interior, seams.per_pair, seams.edges)


def sample_from(
    model: LoadedModel,
    prompt: str,
    num: int,
    start: str,
    *,
    guidance: float = 1.0,
    size: tuple[int, int] = COLOUR_SIZE,
    stride: int = STRIDE,
    scheduler: str = SCHEDULER,
    steps: int = STEPS,
    seed: int = SEED,
    mean_override: Tensor | None = None,
    tasks: Sequence[ViewTask] | TaskSchedule | None = None,
) -> Tensor:
    """Canvases of ``prompt`` through :func:`~multidiffusion.core.sample`, from a chosen start x_T.

    Args:
        start: ``noise``: x_T ~ N(0, I), as the pipeline draws it; ``zero``: x_T = 0, whose output is the
            exact expected canvas for a deterministic scheduler (the sampler is affine in x_T); ``exact``:
            x_T drawn from the true marginal q(x_T) = N(α_T μ, α_T² Σ + s_T² I) at the first timestep.
        mean_override: Use this (3,) mean colour instead of the prompt's, without guidance.
        tasks: The engine's tasks (or a per-step schedule); default a panorama of WINDOW-cell views every
            ``stride`` cells with uniform weights.

    Returns:
        (num, 3, H, W) float32.
    """
    height, width = size
    sched = make_scheduler(scheduler, model.scheduler_config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    if start == "zero":
        x_vp = torch.zeros(num, 3, height, width)
    elif start == "noise":
        x_vp = torch.randn(num, 3, height, width, generator=g)
    elif start == "exact":
        alpha, s = NoiseLevels(model.scheduler_config)(sched.timesteps[0], 1)
        x0 = field_of(model).sample(num, height, width, torch.tensor(prompt_colour(prompt)), generator=g)
        x_vp = float(alpha) * x0 + float(s) * torch.randn(num, 3, height, width, generator=g)  # Eq. 1
    else:
        raise ValueError(f"unknown start {start!r}")
    if mean_override is not None:
        condition = GuidedCondition(positive=mean_override.expand(num, 3))
    else:
        guided = guidance != 1.0
        condition = GuidedCondition(
            positive=model.encode_prompts([prompt] * num),
            negative=model.encode_prompts([""] * num) if guided else None,
            guidance_scale=guidance,
        )
    if tasks is None:
        tasks = panorama_tasks(height, width, WINDOW, stride)
    x_T = x_vp * sched.init_noise_sigma
    return sample(ClassifierFreeGuidance(model.denoiser), sched, x_T, tasks, [condition], generator=g)


def canvas_colour(x: Tensor) -> Tensor:
    """Mean RGB colour of canvases (N, 3, H, W), pooled: (3,) float64."""
    return x.to(torch.float64).mean((0, 2, 3))


def pipeline_colour(
    model: LoadedModel, guidance: float = 1.0, samples: int = COLOUR_SAMPLES, seed: int = SEED
) -> Tensor:
    """Mean colour of ``samples`` COLOUR_PROMPT panoramas of COLOUR_SIZE through the pipeline: (3,) float64."""
    height, width = COLOUR_SIZE
    prompts = [COLOUR_PROMPT] * samples
    x = sample_canvases(model, prompts, height=height, width=width, stride=STRIDE, guidance=guidance, seed=seed)
    return canvas_colour(x)


def scheduler_survey(model: LoadedModel, samples: int = 128, steps: int = STEPS) -> dict[str, WindowStats]:
    """Single-window variance and correlation for every scheduler name, ``steps`` steps each."""
    return {name: single_window(model, samples, scheduler=name, steps=steps) for name in SCHEDULER_NAMES}


def measure(model: LoadedModel) -> dict[str, object]:
    """Every figure of the table."""
    f = field_of(model)
    mu = torch.tensor(prompt_colour(COLOUR_PROMPT), dtype=torch.float64)
    results: dict[str, object] = {
        "theory": WindowStats(f.variance, f.correlation(1)),
        "single": single_window(model),
        "single_ddim50": single_window(model, scheduler="ddim", steps=50),
        "ddim50_closed_form": ddim_closed_form(model, 50),
        "panoramas": {
            (stride, weights): panorama(model, stride, weights)
            for stride, weights in ((STRIDE, "uniform"), (STRIDE, "feathered"), (8, "uniform"), (8, "feathered"))
        },
        "tiles": panorama(model, WINDOW, "uniform"),
        "mu": mu,
        "colour_exact": canvas_colour(sample_from(model, COLOUR_PROMPT, COLOUR_SAMPLES, "exact")),
        "colour_pipeline": pipeline_colour(model),
        "colour_expected": {
            g: canvas_colour(sample_from(model, COLOUR_PROMPT, 1, "zero", guidance=g)) for g in (1.0, 2.0, 3.0, 7.5)
        },
        "colour_guided": {g: pipeline_colour(model, g) for g in (2.0, 3.0)},
        "survey": scheduler_survey(model),
    }
    return results


def _rgb(c: Tensor) -> str:
    return "(" + ", ".join(f"{v:+.3f}" for v in c.tolist()) + ")"


def render(results: dict[str, object]) -> str:
    """The markdown block between the table markers of docs/theory.md."""
    th: WindowStats = results["theory"]  # type: ignore[assignment]
    single: WindowStats = results["single"]  # type: ignore[assignment]
    ddim: WindowStats = results["single_ddim50"]  # type: ignore[assignment]
    closed: WindowStats = results["ddim50_closed_form"]  # type: ignore[assignment]
    pans: dict[tuple[int, str], PanoramaStats] = results["panoramas"]  # type: ignore[assignment]
    tiles: PanoramaStats = results["tiles"]  # type: ignore[assignment]
    mu: Tensor = results["mu"]  # type: ignore[assignment]
    lines = [
        BEGIN,
        f"Settings: ℓ = 3 px, σ = 0.3, window {WINDOW} px, {SCHEDULER} {STEPS} steps unless noted, seed {SEED}; "
        f"single windows: {SINGLE_SAMPLES} samples; panoramas {HEIGHT}×{PANORAMA_WIDTH} px: "
        f"{PANORAMA_SAMPLES} samples.",
        "",
        f"| run | variance (σ² = {th.variance:.3f}) | variance / σ² | lag-1 corr. (theory {th.correlation:.4f}) |",
        "|---|---|---|---|",
        f"| single window | {single.variance:.4f} | {single.variance / th.variance:.3f} | {single.correlation:.4f} |",
        f"| single window, DDIM 50 steps | {ddim.variance:.4f} | {ddim.variance / th.variance:.3f} | "
        f"{ddim.correlation:.4f} |",
        f"| single window, DDIM 50 steps, closed form (exact) | {closed.variance:.4f} | "
        f"{closed.variance / th.variance:.3f} | {closed.correlation:.4f} |",
        "",
        "| panorama | stride | variance / σ² | boundary corr. | interior corr. | boundary / interior |",
        "|---|---|---|---|---|---|",
    ]
    for (stride, weights), p in pans.items():
        lines.append(
            f"| MultiDiffusion, {weights} weights | {stride} | {p.variance / th.variance:.3f} | {p.boundary:.4f} | "
            f"{p.interior:.4f} | {p.ratio:.3f} |"
        )
    lines.append(
        f"| independent tiles | {WINDOW} | {tiles.variance / th.variance:.3f} | {tiles.boundary:.4f} | "
        f"{tiles.interior:.4f} | {tiles.ratio:.3f} |"
    )
    exact: Tensor = results["colour_exact"]  # type: ignore[assignment]
    pipe: Tensor = results["colour_pipeline"]  # type: ignore[assignment]
    expected: dict[float, Tensor] = results["colour_expected"]  # type: ignore[assignment]
    guided: dict[float, Tensor] = results["colour_guided"]  # type: ignore[assignment]
    lines += [
        "",
        f"Mean colour of '{COLOUR_PROMPT}' panoramas ({COLOUR_SIZE[0]}×{COLOUR_SIZE[1]} px, {COLOUR_SAMPLES} samples), "
        f"vocabulary colour {_rgb(mu)}:",
        "",
        "| start x_T, guidance | measured mean colour | max abs error vs vocabulary | expected (x_T = 0 run) |",
        "|---|---|---|---|",
        f"| exact marginal q(x_T), g = 1 | {_rgb(exact)} | {float((exact - mu).abs().max()):.3f} | {_rgb(mu)} |",
        f"| pure noise (pipeline), g = 1 | {_rgb(pipe)} | {float((pipe - mu).abs().max()):.3f} | "
        f"{_rgb(expected[1.0])} |",
    ]
    for g, c in guided.items():
        lines.append(
            f"| pure noise (pipeline), g = {g:g} | {_rgb(c)} | {float((c - mu).abs().max()):.3f} | "
            f"{_rgb(expected[g])} |"
        )
    lines += [
        "",
        "Distance of the expected colour from grey, |E[colour]| / |μ|, by guidance scale g: "
        + ", ".join(f"g = {g:g}: {float(c.norm() / mu.norm()):.3f}" for g, c in expected.items()),
        "",
        f"Single window, every scheduler, {STEPS} steps, 128 samples:",
        "",
        "| scheduler | variance / σ² | lag-1 correlation |",
        "|---|---|---|",
    ]
    survey: dict[str, WindowStats] = results["survey"]  # type: ignore[assignment]
    for name, st in survey.items():
        lines.append(f"| {name} | {st.variance / th.variance:.3f} | {st.correlation:.4f} |")
    lines.append(END)
    return "\n".join(lines)


def plot(model: LoadedModel, path: Path, samples: int = 512, width: int = 96) -> None:
    """Neighbour correlation against column position: MultiDiffusion (uniform, feathered) vs independent tiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theory = field_of(model).correlation(1)
    runs = [
        (f"MultiDiffusion, stride {STRIDE}, uniform", panorama(model, STRIDE, "uniform", samples, width=width)),
        (f"MultiDiffusion, stride {STRIDE}, feathered", panorama(model, STRIDE, "feathered", samples, width=width)),
        (f"independent tiles (stride {WINDOW})", panorama(model, WINDOW, "uniform", samples, width=width)),
    ]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    cols = torch.arange(width - 1) + 0.5  # the pair (c, c + 1) sits between the two columns
    for label, stats in runs:
        ax.plot(cols.numpy(), stats.per_column.numpy(), marker=".", linewidth=1.2, label=label)
    for i, c in enumerate(boundary_pairs(width, WINDOW, STRIDE)):
        ax.axvline(c + 1, color="0.85", linewidth=0.8, zorder=0, label="MultiDiffusion view edges" if i == 0 else None)
    for i, c in enumerate(boundary_pairs(width, WINDOW, WINDOW)):
        ax.axvline(c + 1, color="tab:green", linestyle="--", linewidth=1.0, label="tile edges" if i == 0 else None)
    ax.axhline(theory, color="black", linestyle=":", linewidth=1.0, label=f"theory exp(−1/2ℓ²) = {theory:.3f}")
    ax.set_xlabel("column (px); a point is the pair (c, c + 1)")
    ax.set_ylabel("lag-1 neighbour correlation")
    ax.set_title(f"Gaussian field ℓ = 3 px, σ = 0.3; {WINDOW}-px windows; {SCHEDULER} {STEPS} steps; {samples} samples")
    ax.set_ylim(-0.15, 1.02)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_doc(block: str, path: Path, begin: str = BEGIN, end: str = END) -> None:
    """Replace the ``begin`` … ``end`` block of a doc (default: the table block of docs/theory.md)."""
    text = path.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no {begin} … {end} block")
    path.write_text(pattern.sub(lambda _: block, text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")
    parser.add_argument("--print", action="store_true", help="print the table only; write nothing")
    parser.add_argument("--out-dir", type=Path, default=DOCS, help="where theory.md and the plot live")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(1)  # as the tests run it; small tensors gain nothing from more threads
    start = time.perf_counter()
    model = toy_model()
    block = render(measure(model))
    print(block)
    if not args.print:
        update_doc(block, args.out_dir / "theory.md")
        if not args.no_plot:
            plot(model, args.out_dir / "neighbour_correlation.png")
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
