"""Conditional samplers for outpainting and inpainting, scored against the exact conditional of the Gaussian field.

Prints the table of docs/image_inputs.md ("Conditional samplers") and writes the border picture
docs/image_inputs_conditional.png:

    python bench/conditional.py              # the published table (about 15 min on 2 CPU cores)
    python bench/conditional.py --smoke      # 2 images × 4 canvases, 10 steps: seconds, a check that it runs

The toy model's codec is the identity and its field Gaussian (ℓ = 3 px, σ = 0.3), so E[x | known] and Var[x | known]
are formulas (core/oracle/conditional.py). The outpaint is the one of tests/oracle/test_image_exact.py: a 32-px exact
draw of the field (colour of "mountain") in the middle of a 32 × 96 canvas, 32 px drawn on each side, window 32,
stride 8, 40 steps, 4 known images × 48 canvases (seeds 0…3); DDIM with uniform view weights, or DPM++ 2M Karras with
feathered ones. The inpaint keeps a 32 × 64 exact draw but a centred square hole of side 2ℓ or 4ℓ (6 or 12 px). The
harder field is ``toy:ell=3,long=24,rho=0.3`` (a second length scale of 24 px with weight 0.3), outpainted as above.
Model calls are counted at the toy denoiser and given per step relative to the blend (one pass of the step's views);
CPU time is the process time of all 192 canvases of one row.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multidiffusion.adapters.families.toy import GaussianFieldDenoiser
from multidiffusion.core.features.conditional import ConditionalSampler
from multidiffusion.core.oracle.conditional import conditional
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.oracle.prompts import prompt_colour
from multidiffusion.core.oracle.stats import neighbour_correlation
from multidiffusion.pipeline import MultiDiffusionPipeline, ViewSettings

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "mountain"
IMAGE_PX, MARGIN, WINDOW, STRIDE = 32, 32, 32, 8
HEIGHT, WIDTH = IMAGE_PX, IMAGE_PX + 2 * MARGIN
FAR_PX = 24


@dataclass(frozen=True)
class Size:
    images: int
    canvases: int
    steps: int


FULL, SMOKE = Size(4, 48, 40), Size(2, 4, 10)

SAMPLERS: dict[str, ConditionalSampler] = {
    "blend": ConditionalSampler("blend"),
    "ddnm": ConditionalSampler("ddnm"),
    "repaint U=10": ConditionalSampler("repaint", 10),
    "repaint U=10, last half": ConditionalSampler("repaint", 10, 0.5, "last"),
    "repaint U=4": ConditionalSampler("repaint", 4),
    "tweedie k=8": ConditionalSampler("tweedie", iterations=8),
    "tweedie k=16": ConditionalSampler("tweedie", iterations=16),
}
CALLS = [0]


def _count_calls() -> None:
    """Count the toy denoiser's calls (one call per view batch and guidance half)."""
    original = GaussianFieldDenoiser.__call__

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        CALLS[0] += 1
        return original(self, *args, **kwargs)

    GaussianFieldDenoiser.__call__ = counted  # type: ignore[method-assign]


def _mu() -> torch.Tensor:
    return torch.tensor(prompt_colour(PROMPT), dtype=torch.float64)


def _draws(field: GaussianField, count: int, h: int, w: int) -> list[torch.Tensor]:
    """``count`` exact draws (1, 3, h, w) as images in [0, 1] (only those inside the pipeline's range)."""
    out, seed = [], 0
    while len(out) < count:
        x = field.sample(1, h, w, _mu().float(), generator=torch.Generator().manual_seed(seed))
        seed += 1
        if float(x.abs().max()) <= 1.0:
            out.append((x + 1) / 2)
    return out


@dataclass(frozen=True)
class Row:
    ratio: float
    err: tuple[float, ...]  # RMS(sample mean − E[x | known]) / σ at d = 1, 2, 3 px
    var: tuple[float, ...]  # variance / σ² at d = 1, 2, 3 px
    exact_var: tuple[float, ...]
    far_err: float  # RMS over images and channels of the far block's mean error (the long-range part), / σ
    far_se: float  # its standard error, / σ
    far_var: float
    exact_far_var: float
    calls: float
    cpu: float


def _outpaint(pipe, field, sampler, size: Size, feather: float, scheduler: str, weights: str):  # type: ignore[no-untyped-def]
    samples, knowns = [], []
    views = ViewSettings(window=WINDOW, stride=STRIDE, weights=weights)
    for i, image in enumerate(_draws(field, size.images, IMAGE_PX, IMAGE_PX)):
        out = pipe.outpaint(
            image, PROMPT, left=MARGIN, right=MARGIN, feather=feather, conditional=sampler, views=views,
            scheduler=scheduler, num_inference_steps=size.steps, num_images_per_prompt=size.canvases,
            generator=torch.Generator().manual_seed(i), output_type="latent", progress=False,
        )  # fmt: skip
        samples.append(out.latents.double())
        canvas = torch.zeros(3, HEIGHT, WIDTH)
        canvas[:, :, MARGIN : MARGIN + IMAGE_PX] = image[0] * 2 - 1
        knowns.append(canvas)
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[:, MARGIN : MARGIN + IMAGE_PX] = True
    return torch.stack(samples), conditional(field, torch.stack(knowns), mask, _mu())


def _cols(d: int) -> list[int]:
    return [MARGIN - d, MARGIN + IMAGE_PX - 1 + d]


def _far() -> list[int]:
    return [c for c in range(WIDTH) if c <= MARGIN - FAR_PX - 1 or c >= MARGIN + IMAGE_PX + FAR_PX]


def outpaint_row(pipe, sampler, size: Size, feather=0.0, scheduler="ddim", weights="uniform", base_calls=None) -> Row:  # type: ignore[no-untyped-def]
    field = pipe.model.components["field"]
    CALLS[0] = 0
    start = time.process_time()
    x, exact = _outpaint(pipe, field, sampler, size, feather, scheduler, weights)
    cpu = time.process_time() - start
    calls = CALLS[0] / base_calls if base_calls else float(CALLS[0])
    sigma, var0 = field.sigma, field.variance
    pooled = x.reshape(-1, 3, HEIGHT, WIDTH)
    corr = neighbour_correlation(pooled, _mu().expand(pooled.shape[0], 3))
    far = _far()
    pairs = [c for c in far if c + 1 in far]
    mean, var = x.mean(1), x.var(1)

    def rms(t: torch.Tensor) -> float:
        return float(t.pow(2).mean().sqrt())

    return Row(
        ratio=float(corr[[MARGIN - 1, MARGIN + IMAGE_PX - 1]].mean()) / float(corr[pairs].mean()),
        err=tuple(rms((mean - exact.mean)[..., _cols(d)]) / sigma for d in (1, 2, 3)),
        var=tuple(float(var[..., _cols(d)].mean()) / var0 for d in (1, 2, 3)),
        exact_var=tuple(float(exact.variance[:, _cols(d)].mean()) / var0 for d in (1, 2, 3)),
        far_err=rms((mean - exact.mean)[..., far].mean((-2, -1))) / sigma,
        far_se=rms((x[..., far].mean((-2, -1)).var(1) / x.shape[1]).sqrt()) / sigma,
        far_var=float(var[..., far].mean()) / var0,
        exact_far_var=float(exact.variance[:, far].mean()) / var0,
        calls=calls,
        cpu=cpu,
    )


def inpaint_row(pipe, sampler, size: Size, hole: int, base_calls=None) -> Row:  # type: ignore[no-untyped-def]
    """A square hole of side ``hole`` px in the middle of a 32 × 64 exact draw: error and variance inside it."""
    field = pipe.model.components["field"]
    h, w = 32, 64
    redraw = torch.zeros(h, w)
    top, left = (h - hole) // 2, (w - hole) // 2
    redraw[top : top + hole, left : left + hole] = 1
    CALLS[0] = 0
    start = time.process_time()
    samples, knowns = [], []
    views = ViewSettings(window=WINDOW, stride=STRIDE, weights="uniform")
    for i, image in enumerate(_draws(field, size.images, h, w)):
        out = pipe.inpaint(
            image, redraw, PROMPT, feather=0.0, conditional=sampler, views=views, scheduler="ddim",
            num_inference_steps=size.steps, num_images_per_prompt=size.canvases,
            generator=torch.Generator().manual_seed(i), output_type="latent", progress=False,
        )  # fmt: skip
        samples.append(out.latents.double())
        knowns.append(image[0] * 2 - 1)
    cpu = time.process_time() - start
    calls = CALLS[0] / base_calls if base_calls else float(CALLS[0])
    x = torch.stack(samples)
    exact = conditional(field, torch.stack(knowns), redraw == 0, _mu())
    inside = redraw > 0
    mean, var = x.mean(1), x.var(1)
    err = float((mean - exact.mean)[..., inside].pow(2).mean().sqrt()) / field.sigma
    v, ev = float(var[..., inside].mean()) / field.variance, float(exact.variance[inside].mean()) / field.variance
    return Row(0.0, (err,), (v,), (ev,), 0.0, 0.0, 0.0, 0.0, calls, cpu)


def _fmt(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


PICTURE_SAMPLERS = ("blend", "repaint U=10", "tweedie k=8")
ZOOM, CROP = 8, (MARGIN - 20, MARGIN + 20)  # ×8, the 40 columns around the left border


def _picture(pipe, size: Size, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Around the left border of one known image (DDIM, feather 0): one outpaint of each sampler (seed 1) and an exact
    conditional draw (left), and the mean of ``size.canvases`` outpaints and E[x | known] (right); colours are the
    deviation from the prompt's mean, ±3σ to black and white per channel; a tick marks the border's column."""
    from PIL import Image, ImageDraw

    field = pipe.model.components["field"]
    image = _draws(field, 1, IMAGE_PX, IMAGE_PX)[0]
    views = ViewSettings(window=WINDOW, stride=STRIDE, weights="uniform")
    singles, means = [], []
    for name in PICTURE_SAMPLERS:
        out = pipe.outpaint(
            image, PROMPT, left=MARGIN, right=MARGIN, feather=0.0, conditional=SAMPLERS[name], views=views,
            scheduler="ddim", num_inference_steps=size.steps, num_images_per_prompt=size.canvases,
            generator=torch.Generator().manual_seed(1), output_type="latent", progress=False,
        )  # fmt: skip
        singles.append(out.latents[0].double())
        means.append(out.latents.double().mean(0))
    canvas = torch.zeros(1, 3, HEIGHT, WIDTH, dtype=torch.float64)
    canvas[..., MARGIN : MARGIN + IMAGE_PX] = image.double() * 2 - 1
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[:, MARGIN : MARGIN + IMAGE_PX] = True
    exact = conditional(field, canvas, mask, _mu())
    chol = torch.linalg.cholesky(exact.covariance + 1e-10 * torch.eye(exact.covariance.shape[0], dtype=torch.float64))
    z = torch.randn(3, chol.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    draw = exact.mean[0].reshape(3, -1).clone()
    draw[:, exact.unknown] += z @ chol.T
    singles.append(draw.reshape(3, HEIGHT, WIDTH))
    means.append(exact.mean[0])
    labels = [*PICTURE_SAMPLERS, "exact"]
    mu = _mu()[:, None, None]

    def tile(x: torch.Tensor) -> Image.Image:
        crop = ((x[:, :, CROP[0] : CROP[1]] - mu) / (6 * field.sigma) + 0.5).clamp(0, 1)
        pixels = (crop * 255).round().byte().permute(1, 2, 0).numpy()
        small = Image.fromarray(np.ascontiguousarray(pixels))
        return small.resize((small.width * ZOOM, small.height * ZOOM), Image.NEAREST)

    tw, th, label_w, gap, head = (CROP[1] - CROP[0]) * ZOOM, HEIGHT * ZOOM, 110, 12, 24
    sheet = Image.new("RGB", (label_w + 2 * tw + gap, head + len(labels) * (th + gap)), "white")
    pen = ImageDraw.Draw(sheet)
    pen.text((label_w, 6), "one outpaint", fill="black")
    pen.text((label_w + tw + gap, 6), f"mean of {size.canvases}", fill="black")
    border_x = (MARGIN - CROP[0]) * ZOOM
    for row, (label, single, mean) in enumerate(zip(labels, singles, means, strict=True)):
        y = head + row * (th + gap)
        pen.text((6, y + th // 2 - 6), label, fill="black")
        for col, x in enumerate((single, mean)):
            left = label_w + col * (tw + gap)
            sheet.paste(tile(x), (left, y))
            pen.line([(left + border_x, y - 5), (left + border_x, y - 1)], fill="red", width=3)
    sheet.save(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that the script runs")
    parser.add_argument("--picture", type=Path, default=ROOT / "docs" / "image_inputs_conditional.png")
    parts = ("ddim", "dpmpp", "inpaint", "hard", "picture")
    parser.add_argument("--parts", nargs="+", choices=parts, default=list(parts), help="what to run (default: all)")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(1)
    _count_calls()
    pipe = MultiDiffusionPipeline.from_pretrained("toy", device="cpu")
    print(f"# {size.images} known images × {size.canvases} canvases, {size.steps} steps; torch {torch.__version__}")
    print(
        "| sampler | setting | border/interior corr | RMS(mean − E)/σ, d = 1, 2, 3 | "
        "variance/σ², d = 1, 2, 3 (exact) | far variance/σ² (exact) | model calls/step | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    settings = {
        "DDIM, feather 0": {"feather": 0.0},
        "DDIM, feather 4": {"feather": 4.0},
        "DPM++ 2M Karras, feathered weights, feather 0": {"scheduler": "dpmpp_2m_karras", "weights": "feathered"},
    }
    if "ddim" not in args.parts:
        settings = {k: v for k, v in settings.items() if "DDIM" not in k}
    if "dpmpp" not in args.parts:
        settings = {k: v for k, v in settings.items() if "DPM" not in k}
    for setting, kwargs in settings.items():
        base = None
        for name, sampler in SAMPLERS.items():
            if "dpmpp" in kwargs.get("scheduler", "") and sampler.passes_any:
                print(f"| {name} | {setting} | refused: a multistep scheduler cannot be resampled | | | | | |")
                continue
            row = outpaint_row(pipe, sampler, size, base_calls=base, **kwargs)
            if base is None:
                base = row.calls
                row = Row(**{**row.__dict__, "calls": 1.0})
            print(
                f"| {name} | {setting} | {row.ratio:.3f} | {_fmt(row.err)} | {_fmt(row.var)} ({_fmt(row.exact_var)}) "
                f"| {row.far_var:.2f} ({row.exact_far_var:.2f}) | {row.calls:.1f} | {row.cpu:.0f} |",
                flush=True,
            )
    print("\n| sampler | hole | RMS(mean − E)/σ in the hole | variance/σ² in the hole (exact) | calls/step | CPU s |")
    print("|---|---|---|---|---|---|")
    for hole in (6, 12) if "inpaint" in args.parts else ():
        base = None
        for name, sampler in SAMPLERS.items():
            row = inpaint_row(pipe, sampler, size, hole, base_calls=base)
            if base is None:
                base, row = row.calls, Row(**{**row.__dict__, "calls": 1.0})
            print(
                f"| {name} | {hole} px ({hole // 3}ℓ) | {row.err[0]:.3f} | {row.var[0]:.3f} ({row.exact_var[0]:.3f}) "
                f"| {row.calls:.1f} | {row.cpu:.0f} |",
                flush=True,
            )
    hard = MultiDiffusionPipeline.from_pretrained("toy:ell=3,long=24,rho=0.3", device="cpu")
    print(
        "\n| sampler (harder field) | border/interior corr | RMS(mean − E)/σ, d = 1, 2, 3 | "
        "far block's mean − E / σ (standard error) | far variance/σ² (exact) |"
    )
    print("|---|---|---|---|---|")
    for name, sampler in SAMPLERS.items() if "hard" in args.parts else ():
        row = outpaint_row(hard, sampler, size)
        print(
            f"| {name} | {row.ratio:.3f} | {_fmt(row.err)} | {row.far_err:.3f} ({row.far_se:.3f}) | {row.far_var:.2f} "
            f"({row.exact_far_var:.2f}) |",
            flush=True,
        )
    if "picture" in args.parts:
        _picture(pipe, size, args.picture)
        print(f"\nwrote {args.picture}", file=sys.stderr)


if __name__ == "__main__":
    main()
