"""Before/after pictures of the image commands (upscale, outpaint, inpaint, a layout's init_image) on the toy model.

Writes docs/image_inputs_upscale.png, image_inputs_outpaint.png, image_inputs_inpaint.png, image_inputs_layout.png
and image_inputs_figures.json (the settings of every picture and a few checks of what it shows):

    python scripts/image_input_figures.py            # the published pictures (under a minute on 2 CPU cores)
    python scripts/image_input_figures.py --smoke    # tiny sizes and steps, seconds: what CI runs

The model is the exact Gaussian-field model (``toy``, docs/theory.md; no weights): its pictures are colourful
fields around the prompt's colour, not photographs, but what is kept, what is redrawn and how the borders blend is
the same machinery for every model. The inputs are exact samples of Gaussian fields, so their structure is known
(for the upscale, a longer length scale than the model's, so the texture the model adds is told apart from the
input's). Panels are enlarged with nearest-neighbour pixels; a white frame with a black edge marks what is kept.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from multidiffusion import ViewSettings
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.oracle.prompts import prompt_colour
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.inputs.region_file import load_region_file
from multidiffusion.pipeline.modes.image_start import resize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from image_inputs import shrink, similarity  # noqa: E402  (the bench's PSNR / SSIM, so both report alike)

GAP, LABEL_PX, FONT_PX = 8, 22, 14


@dataclass(frozen=True)
class Sizes:
    """Every size and setting of a run of this script (px unless named otherwise)."""

    upscale_input: int
    outpaint_input: int
    margin: int
    inpaint_input: int
    layout_height: int
    layout_width: int
    window: int
    stride: int
    steps: int
    feather: float
    display: int  # nearest-neighbour enlargement of the panels


FULL = Sizes(64, 64, 64, 128, 64, 320, 64, 16, 50, 4.0, 2)
SMOKE = Sizes(16, 16, 16, 32, 16, 80, 16, 8, 4, 1.0, 1)


# --- pictures ----------------------------------------------------------------------------------------------------


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [0, 1] → an RGB PIL image."""
    x = image[0] if image.ndim == 4 else image
    return Image.fromarray((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=FONT_PX)  # Pillow's own font: the same pictures on every machine
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def enlarge(image: Image.Image, factor: int) -> Image.Image:
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def mark(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A copy with the (left, top, right, bottom) box framed: white inside a black edge, so it shows on any colour."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    left, top, right, bottom = box
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(0, 0, 0), width=1)
    draw.rectangle((left + 1, top + 1, right - 2, bottom - 2), outline=(255, 255, 255), width=1)
    return out


def compose(rows: list[list[tuple[str, Image.Image]]]) -> Image.Image:
    """Rows of labelled panels (each panel's label above it), on white."""
    fnt = font()
    heights = [max(im.height for _, im in row) + LABEL_PX for row in rows]
    width = max(sum(im.width for _, im in row) + GAP * (len(row) + 1) for row in rows)
    out = Image.new("RGB", (width, sum(heights) + GAP * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(out)
    y = GAP
    for row, height in zip(rows, heights, strict=True):
        x = GAP
        for label, im in row:
            draw.text((x, y + 2), label, fill=(0, 0, 0), font=fnt)
            out.paste(im, (x, y + LABEL_PX))
            x += im.width + GAP
        y += height + GAP
    return out


# --- inputs and checks -------------------------------------------------------------------------------------------


def field_image(size: tuple[int, int], ell: float, prompt: str, seed: int, sigma: float = 0.4) -> torch.Tensor:
    """An exact sample of a Gaussian field around ``prompt``'s colour: (3, H, W) in [0, 1], rounded to 8 bits (as a
    PNG holds it, so a kept region can be compared exactly)."""
    g = torch.Generator().manual_seed(seed)
    x = GaussianField(ell, sigma).sample(1, *size, mean=torch.tensor(prompt_colour(prompt)), generator=g)[0]
    return (((x + 1) / 2).clamp(0, 1) * 255).round() / 255


def kept_error(result: torch.Tensor, image: torch.Tensor, top: int, left: int, inset: int) -> float:
    """max |result − image| over the image's place on the canvas, ``inset`` px in from its edges (the feathering)."""
    h, w = image.shape[-2:]
    if 2 * inset >= min(h, w):
        return float("nan")
    part = result[..., top + inset : top + h - inset, left + inset : left + w - inset]
    return float((part - image[..., inset : h - inset, inset : w - inset]).abs().max())


def wrap_ratio(image: torch.Tensor) -> float:
    """Mean |last column − first column| over the mean difference of neighbouring columns: ≈ 1 when the ends join."""
    x = image.reshape(-1, *image.shape[-2:])
    across = (x[..., -1] - x[..., 0]).abs().mean()
    inside = (x[..., 1:] - x[..., :-1]).abs().mean()
    return float(across / inside)


def feather_inset(feather: float) -> int:
    """Pixels from a kept region's edge within which the inward feathering blends (the blur's 3σ reach + 1)."""
    return math.ceil(3 * feather) + 1 if feather > 0 else 0


def run_kwargs(sz: Sizes, seed: int, tile: str | None = None) -> dict[str, Any]:
    return dict(
        num_inference_steps=sz.steps,
        views=ViewSettings(window=sz.window, stride=sz.stride, tile=tile),
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        progress=False,
    )


# --- the four figures --------------------------------------------------------------------------------------------


def upscale_figure(sz: Sizes, out_dir: Path) -> dict[str, Any]:
    """Input; Lanczos ×2; upscales at strength 0.3 and 0.7, the latter from fresh noise and with noise inversion."""
    spec, prompt = "toy", "sea"
    pipe = MultiDiffusionPipeline.from_pretrained(spec, device="cpu")
    n = sz.upscale_input
    image = field_image((n, n), 4.0 * n / 64, prompt, seed=0)
    lanczos = (resize(image[None] * 2 - 1, 2 * n, 2 * n, "lanczos") + 1) / 2
    panels = [(f"input {n}x{n}", enlarge(to_pil(image), 2 * sz.display)), ("Lanczos x2", lanczos)]
    runs = [(0.3, 0), (0.7, 0), (0.7, sz.steps)]
    for strength, inversion in runs:
        out = pipe.upscale(
            image, 2, prompt, strength=strength, noise_inversion_steps=inversion, **run_kwargs(sz, 1)
        ).images
        label = f"strength {strength:g}" + (f", inversion {inversion}" if inversion else "")
        panels.append((label, out))
    checks = {}
    for label, out in panels[1:]:
        psnr, ssim = similarity(shrink(out, n), image[None])
        checks[label] = {"psnr_db": psnr, "ssim": ssim}
    shown = [panels[0]] + [(label, enlarge(to_pil(out), sz.display)) for label, out in panels[1:]]
    compose([shown]).save(out_dir / "image_inputs_upscale.png")
    return {
        "model": spec,
        "prompt": prompt,
        "input_px": n,
        "scale": 2,
        "runs": [{"strength": s, "noise_inversion_steps": i} for s, i in runs],
        "shrunk_back_vs_input": checks,
    }


def outpaint_figure(sz: Sizes, out_dir: Path) -> dict[str, Any]:
    """Input; outpainted left and right with the kept part framed; a circular (360°) one shown twice around."""
    spec, prompt = "toy:ell=6", "sky"
    pipe = MultiDiffusionPipeline.from_pretrained(spec, device="cpu")
    n, m, d = sz.outpaint_input, sz.margin, sz.display
    image = field_image((n, n), 6.0 * n / 64, prompt, seed=2)
    margins = dict(left=m, right=m, feather=sz.feather)
    plain = pipe.outpaint(image, prompt, **margins, **run_kwargs(sz, 3)).images
    circular = pipe.outpaint(image, prompt, **margins, **run_kwargs(sz, 3, tile="x")).images
    box = (m * d, 0, (m + n) * d, n * d)
    w = circular.shape[-1] * d
    seam = enlarge(to_pil(torch.cat([circular, circular], dim=-1)), d)
    seam = mark(mark(seam, box), (w + box[0], 0, w + box[2], n * d))
    draw = ImageDraw.Draw(seam)
    for y0, y1 in ((0, seam.height // 6), (seam.height - seam.height // 6, seam.height)):  # ticks: the wrap
        draw.line((w - 1, y0, w - 1, y1), fill=(0, 0, 0), width=1)
        draw.line((w, y0, w, y1), fill=(255, 255, 255), width=1)
    compose(
        [
            [
                (f"input {n}x{n}", enlarge(to_pil(image), d)),
                (f"outpainted: left {m}, right {m} (kept part framed)", mark(enlarge(to_pil(plain), d), box)),
            ],
            [("circular (360 deg), shown twice side by side: its right end continues into its left (ticks)", seam)],
        ]
    ).save(out_dir / "image_inputs_outpaint.png")
    inset = feather_inset(sz.feather)
    return {
        "model": spec,
        "prompt": prompt,
        "input_px": n,
        "margins_px": {"left": m, "right": m},
        "feather_px": sz.feather,
        "kept_max_abs_diff": kept_error(plain[0], image, 0, m, inset),
        "circular_kept_max_abs_diff": kept_error(circular[0], image, 0, m, inset),
        "circular_wrap_ratio": wrap_ratio(circular),
        "plain_wrap_ratio": wrap_ratio(plain),
    }


def inpaint_figure(sz: Sizes, out_dir: Path) -> dict[str, Any]:
    """Image, mask (white = redraw), and the result with the image's own prompt and with another one."""
    spec, scene = "toy:ell=6", "grass"
    pipe = MultiDiffusionPipeline.from_pretrained(spec, device="cpu")
    n, d = sz.inpaint_input, sz.display
    image = field_image((n, n), 6.0 * n / 128, scene, seed=4)
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    mask = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2 <= (n / 4) ** 2).float()  # a disc: white = redraw
    results = {p: pipe.inpaint(image, mask, p, feather=sz.feather, **run_kwargs(sz, 5)).images for p in (scene, "red")}
    mask_pil = Image.fromarray((mask * 255).to(torch.uint8).numpy()).convert("RGB")
    compose(
        [
            [
                (f"image {n}x{n}", enlarge(to_pil(image), d)),
                ("mask (white = redraw)", enlarge(mask_pil, d)),
                (f'inpainted: "{scene}"', enlarge(to_pil(results[scene]), d)),
                ('inpainted: "red"', enlarge(to_pil(results["red"]), d)),
            ]
        ]
    ).save(out_dir / "image_inputs_inpaint.png")
    # Kept pixels: farther than the feathering's reach from the disc (the blur spreads inward, into the kept part).
    far = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2).sqrt() > n / 4 + feather_inset(sz.feather)
    red = torch.tensor(prompt_colour("red"))
    checks = {}
    for p, out in results.items():
        inside = out[0][:, mask > 0.5].mean(dim=1) * 2 - 1
        checks[p] = {
            "kept_max_abs_diff": float((out[0] - image)[:, far].abs().max()),
            "redrawn_mean_colour": inside.tolist(),
            "redrawn_distance_to_red": float((inside - red).abs().max()),
        }
    return {"model": spec, "input_px": n, "mask": "disc of radius n/4", "feather_px": sz.feather, "results": checks}


def layout_figure(sz: Sizes, out_dir: Path) -> dict[str, Any]:
    """A layout whose init_image sits between two region boxes, over a background prompt: the map and the result."""
    spec = "toy:ell=6"
    pipe = MultiDiffusionPipeline.from_pretrained(spec, device="cpu")
    h, w, d = sz.layout_height, sz.layout_width, sz.display
    side = h
    left, gap = (w - side) // 2, side // 2
    image = field_image((side, side), 6.0 * side / 64, "sea", seed=6)
    regions = [
        {"name": "sunset", "prompt": "sunset", "box": [0, 0, left - gap, h]},
        {"name": "snow", "prompt": "snow", "box": [left + side + gap, 0, w, h]},
    ]
    layout = {
        "width": w,
        "height": h,
        "background": "sky",
        "regions": regions,
        "init_image": {"path": "photo.png", "left": left, "top": 0, "feather": sz.feather},
    }
    with tempfile.TemporaryDirectory() as tmp:
        to_pil(image).save(Path(tmp) / "photo.png")
        (Path(tmp) / "layout.json").write_text(json.dumps(layout))
        parsed = load_region_file(Path(tmp) / "layout.json")
    out = pipe.regions(
        parsed.regions, parsed.background, height=h, width=w, image=parsed.image, **run_kwargs(sz, 7)
    ).images
    # The map: the background's colour, each box in its prompt's colour, the init_image in place.
    canvas = torch.tensor(prompt_colour("sky"))[:, None, None].expand(3, h, w).clone()
    for r in regions:
        x0, y0, x1, y1 = r["box"]
        canvas[:, y0:y1, x0:x1] = torch.tensor(prompt_colour(r["prompt"]))[:, None, None]
    canvas = (canvas + 1) / 2
    canvas[:, :, left : left + side] = image
    layout_map = enlarge(to_pil(canvas), d)
    draw = ImageDraw.Draw(layout_map)
    fnt = font()
    for r in regions:
        draw.text((r["box"][0] * d + 4, 4), r["prompt"], fill=(0, 0, 0), font=fnt)
    draw.text(((left - gap) * d + 4, 4), "sky", fill=(0, 0, 0), font=fnt)  # the background, between the boxes
    box = (left * d, 0, (left + side) * d, h * d)
    compose(
        [
            [("layout: region boxes, background and init_image", mark(layout_map, box))],
            [("result (init_image kept, framed)", mark(enlarge(to_pil(out), d), box))],
        ]
    ).save(out_dir / "image_inputs_layout.png")
    return {
        "model": spec,
        "layout": layout,
        "kept_max_abs_diff": kept_error(out[0], image, 0, left, feather_inset(sz.feather)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and steps (CI)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    sz = SMOKE if args.smoke else FULL
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "command": "python scripts/image_input_figures.py" + (" --smoke" if args.smoke else ""),
        "settings": {"window_px": sz.window, "stride_px": sz.stride, "steps": sz.steps},
        "upscale": upscale_figure(sz, args.out_dir),
        "outpaint": outpaint_figure(sz, args.out_dir),
        "inpaint": inpaint_figure(sz, args.out_dir),
        "layout": layout_figure(sz, args.out_dir),
    }
    (args.out_dir / "image_inputs_figures.json").write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
