"""Image inputs: how much of an image an upscale keeps, with and without noise inversion, and its peak memory.

Writes the two tables between their markers in docs/image_inputs.md (or a fresh image_inputs.md in --out-dir)
and every number in image_inputs_bench.json beside it:

    python bench/image_inputs.py            # the published tables (about half an hour on 2 CPU cores)
    python bench/image_inputs.py --smoke    # tiny sizes, seconds: what CI runs (tests/smoke/test_image_figures.py)

Part 1, structure kept. An upscale ×2 at strength s, once from fresh noise and once with noise inversion (as many
inversion steps as denoising steps), is shrunk back to the input's size (area average) and compared with the input
(see below for the SD model): PSNR and SSIM (torchmetrics; data range 1, SSIM's Gaussian window of 11 px, σ 1.5),
mean and standard deviation over seeds. Each seed draws its own input and noise. The inputs are exact samples of a
Gaussian field (ℓ = 2 px, σ = 0.3, the colour of "sea"), so the structure is known and there is plenty of it. Two
models:

* ``toy:ell=4``, the exact Gaussian-field model whose fields have the ×2 enlargement's length scale (docs/theory.md),
  DDIM 50 steps, window 64, stride 16 (25 views on the 128 × 128 canvas). The reference row is the Lanczos
  enlargement itself, shrunk back: the most any redraw can keep.
* the tiny random Stable Diffusion model of the tests (tests/helpers/tiny_models.py, 128-px window), DDIM 20 steps,
  stride 32 (49 views on the 256 × 256 canvas), with guidance 1 (denoising follows the same predictions as the
  inversion) and 7.5 (SD's default). Its random VAE does not reconstruct, so its results are compared with the
  strength-0 upscale (the enlargement through the VAE and back; its reference row compares that with the input),
  and its random UNet predicts no picture: the rows show how far the sampler returns to the encoded image, through
  the real UNet, VAE and scheduler code, not what a trained model adds.

Part 2, memory. Upscales ×2 on the tiny SD model with a 512-px window (tests/helpers/tiny_models.py make_components,
sample_size 64), strength 0.5 of 2 steps (one denoising step), guidance 7.5, each in a fresh process: to
4096 × 4096 px at strides giving 1×, 4× and 16× the views with a fixed 8 views per UNet call, and to 2048 × 2048 px
once so, then at three strides with the automatic batch size (on a CPU: as many views as fit in half the available
memory). Peak resident memory (``getrusage`` maxrss) after a warm-up run on a small canvas, and at the end. The VAE
encodes and decodes in tiles (the automatic choice above 2 Mpx, docs/tiled_vae.md). The automatic rows are at
2048 px because at 4096 px the biggest batch would take several GB of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers
sys.path.insert(0, str(ROOT / "bench"))

from bench_common import RowCounter, machine_line  # noqa: E402

from multidiffusion import ViewSettings  # noqa: E402
from multidiffusion.core.engine.views import layout_views  # noqa: E402
from multidiffusion.core.oracle.field import GaussianField  # noqa: E402
from multidiffusion.core.oracle.prompts import prompt_colour  # noqa: E402
from multidiffusion.pipeline import MultiDiffusionPipeline  # noqa: E402
from multidiffusion.pipeline.modes.image_start import resize  # noqa: E402

BEGIN_KEPT, END_KEPT = "<!-- inversion-table:begin -->", "<!-- inversion-table:end -->"
BEGIN_MEMORY, END_MEMORY = "<!-- upscale-memory-table:begin -->", "<!-- upscale-memory-table:end -->"
MIB = 2**20
PROMPT = "sea"
INPUT_FIELD = GaussianField(2.0, 0.3)  # ℓ = 2 px: after ×2 the toy:ell=4 model's own length scale

# Part 1: (label, model, input px, steps, window px or None (the model's), stride px, guidance scale)
KEPT_FULL = {
    "strengths": [0.3, 0.5, 0.7, 0.9],
    "seeds": 6,
    "models": [
        ("toy:ell=4", "toy:ell=4", 64, 50, 64, 16, 1.0),
        ("tiny random SD, guidance 1", "tiny-sd", 128, 20, None, 32, 1.0),
        ("tiny random SD, guidance 7.5", "tiny-sd", 128, 20, None, 32, 7.5),
    ],
}
KEPT_SMOKE = {
    "strengths": [0.5],
    "seeds": 1,
    "models": [("toy:ell=4", "toy:ell=4", 16, 6, 16, 8, 1.0), ("tiny random SD", "tiny-sd", 32, 2, None, 32, 7.5)],
}
# Part 2: (canvas px, window px, stride px, views per UNet call or None = automatic), one fresh process each
MEMORY_FULL = [
    *((4096, 512, stride, 8) for stride in (448, 216, 104)),
    (2048, 512, 216, 8),
    *((2048, 512, stride, None) for stride in (448, 216, 104)),
]
MEMORY_SMOKE = [(256, 128, 64, 8)]


def tiny_sd(sample_size: int) -> tuple[MultiDiffusionPipeline, dict[str, Any]]:
    """The tests' tiny random SD model (native window ``sample_size`` latent cells) and its components."""
    from multidiffusion.adapters.families.sd import from_components
    from tests.helpers.tiny_models import make_components

    with tempfile.TemporaryDirectory() as tmp:
        c = make_components(Path(tmp), sample_size=sample_size, seed=1)
    model = from_components("tiny", c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"].config)
    return MultiDiffusionPipeline(model), c


def field_input(size: int, seed: int) -> torch.Tensor:
    """An exact sample of the input field, (3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = INPUT_FIELD.sample(1, size, size, mean=torch.tensor(prompt_colour(PROMPT)), generator=g)[0]
    return ((x + 1) / 2).clamp(0, 1)


def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) → (N, 3, size, size) by area averaging."""
    return F.interpolate(images, size=(size, size), mode="area")


def similarity(result: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(PSNR dB, SSIM) of (1, 3, h, w) images in [0, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    psnr = peak_signal_noise_ratio(result, reference, data_range=1.0)
    ssim = structural_similarity_index_measure(result, reference, data_range=1.0)
    return float(psnr), float(ssim)


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def upscale(
    pipe: MultiDiffusionPipeline,
    image: torch.Tensor,
    strength: float,
    inversion: int,
    steps: int,
    seed: int,
    views: dict[str, Any],
) -> torch.Tensor:
    """An upscale ×2 of ``image`` (3, h, w), (1, 3, 2h, 2w) in [0, 1]; ``views``: the views and guidance keywords."""
    return pipe.upscale(
        image,
        scale=2,
        prompt=PROMPT,
        strength=strength,
        noise_inversion_steps=inversion,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(1000 + seed),
        output_type="pt",
        progress=False,
        **views,
    ).images


def kept_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Part 1: one row per (model, strength, start) with PSNR and SSIM over the seeds, and each model's reference.

    The toy model's codec is the identity, so its results are compared with the input itself and its reference is
    the Lanczos enlargement. The tiny SD model's random VAE does not reconstruct, so its results are compared with
    the input as the VAE returns it (the strength-0 upscale, shrunk the same way); its reference row is that round
    trip against the input.
    """
    rows = []
    for label, spec, size, steps, window, stride, guidance in config["models"]:
        pipe = tiny_sd(16)[0] if spec == "tiny-sd" else MultiDiffusionPipeline.from_pretrained(spec, device="cpu")
        views = dict(views=ViewSettings(window=window, stride=stride), guidance_scale=guidance)
        starts = [(s, inv) for s in config["strengths"] for inv in (0, steps)]
        scores: dict[Any, list[tuple[float, float]]] = {key: [] for key in ["reference", *starts]}
        for seed in range(config["seeds"]):
            image = field_input(size, seed)
            if spec == "tiny-sd":
                reference = shrink(upscale(pipe, image, 0.0, 0, steps, seed, views), size)
                target = reference
            else:
                reference = shrink((resize(image[None] * 2 - 1, 2 * size, 2 * size, "lanczos") + 1) / 2, size)
                target = image[None]
            scores["reference"].append(similarity(reference, image[None]))
            for strength, inversion in starts:
                out = upscale(pipe, image, strength, inversion, steps, seed, views)
                scores[(strength, inversion)].append(similarity(shrink(out, size), target))
        for key, values in scores.items():
            strength, inversion = (0.0, 0) if key == "reference" else key
            rows.append(
                {
                    "model": label,
                    "input_px": size,
                    "steps": steps,
                    "guidance_scale": guidance,
                    "strength": strength,
                    "start": key if key == "reference" else "noise inversion" if inversion else "fresh noise",
                    "noise_inversion_steps": inversion,
                    "compared_with": "input" if spec != "tiny-sd" or key == "reference" else "strength 0",
                    "seeds": config["seeds"],
                    "psnr_db": summary([p for p, _ in values]),
                    "ssim": summary([s for _, s in values]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_child(canvas: int, window: int, stride: int, batch: int | None) -> dict[str, Any]:
    """Part 2, one configuration, measured in this (fresh) process."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    pipe, c = tiny_sd(window // 8)
    rows = RowCounter(c["unet"])
    size = canvas // 2
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, size // 32, size // 32, generator=g)
    photo = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    kw = dict(
        strength=0.5, num_inference_steps=2, views=ViewSettings(stride=stride), view_batch_size=batch, progress=False
    )
    small = photo[:, : window // 2, : window // 2]
    pipe.upscale(small, 2, "a photo", generator=torch.Generator().manual_seed(0), **kw)  # warm-up
    before = maxrss_bytes()
    rows.rows = 0
    out = pipe.upscale(photo, 2, "a photo", generator=torch.Generator().manual_seed(0), **kw)
    peak = maxrss_bytes()
    meta = out.metadata
    cells = canvas // 8
    n_views = len(layout_views(cells, cells, window // 8, stride // 8))
    return {
        "canvas_px": canvas,
        "window_px": window,
        "stride_px": stride,
        "views": n_views,
        "view_batch_size": meta.view_batch_size,
        "batch": "automatic" if batch is None else "fixed",
        "unet_rows": rows.rows,
        "vae_tiled": pipe.model.codec.uses_tiling(1, canvas, canvas),
        "rss_before_mib": before / MIB,
        "rss_peak_mib": peak / MIB,
        "rss_growth_mib": (peak - before) / MIB,
        "image_px": list(out.images[0].size),
    }


def memory_rows(configs: list[tuple[int, int, int, int | None]]) -> list[dict[str, Any]]:
    rows = []
    for canvas, window, stride, batch in configs:
        cmd = [sys.executable, __file__, "--child", str(canvas), str(window), str(stride), str(batch or 0)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {cmd[3:]} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def kept_table(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Regenerate with `{command}` (CPU, float32, torch {torch.__version__}). Mean ± standard deviation over "
        f"{rows[0]['seeds']} seed(s); the upscale ×2 shrunk back to the input's size (area average) against the input "
        "(toy) or against the strength-0 upscale, the input through the VAE (tiny random SD).",
        "",
        "| model | strength | PSNR, fresh noise (dB) | PSNR, noise inversion (dB) | SSIM, fresh noise "
        "| SSIM, noise inversion |",
        "|---|---|---|---|---|---|",
    ]

    def cell(row: dict[str, Any], key: str, digits: int) -> str:
        return f"{row[key]['mean']:.{digits}f} ± {row[key]['sd']:.{digits}f}"

    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        ref = next(r for r in mine if r["start"] == "reference")
        what = "Lanczos ×2 only" if model.startswith("toy") else "strength 0 (the VAE round trip) against the input"
        lines.append(f"| {model} | reference: {what} | {cell(ref, 'psnr_db', 2)} | | {cell(ref, 'ssim', 3)} | |")
        for strength in dict.fromkeys(r["strength"] for r in mine if r["start"] != "reference"):
            fresh = next(r for r in mine if r["strength"] == strength and r["start"] == "fresh noise")
            inv = next(r for r in mine if r["strength"] == strength and r["start"] == "noise inversion")
            lines.append(
                f"| {model} | {strength:g} | {cell(fresh, 'psnr_db', 2)} | {cell(inv, 'psnr_db', 2)} "
                f"| {cell(fresh, 'ssim', 3)} | {cell(inv, 'ssim', 3)} |"
            )
    return "\n".join(lines)


def memory_table(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Regenerate with `{command}` (CPU, float32, torch {torch.__version__}): an upscale ×2 on the tiny random SD "
        f"model, window {rows[0]['window_px']} px, one denoising step with guidance (two UNet rows per view), the VAE "
        "tiled; each row in a fresh process. Peak RSS before: after a warm-up run on a small canvas.",
        "",
        "| canvas (px) | stride (px) | views | UNet rows | views per UNet call | peak RSS before (MiB) "
        "| peak RSS (MiB) | growth (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['canvas_px']} × {r['canvas_px']} | {r['stride_px']} | {r['views']} | {r['unet_rows']} "
            f"| {r['view_batch_size']} ({r['batch']}) | {r['rss_before_mib']:.0f} | {r['rss_peak_mib']:.0f} "
            f"| {r['rss_growth_mib']:.0f} |"
        )
    return "\n".join(lines)


def replace_between(doc: str, begin: str, end: str, text: str) -> str:
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        return doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) :]
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def write(kept: str, memory: str, data: dict[str, Any], out_dir: Path) -> None:
    """Replace the tables between their markers in ``out_dir``/image_inputs.md (a fresh file if absent); the JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "image_inputs.md"
    doc = path.read_text() if path.exists() else "# Image inputs: measurements\n"
    doc = replace_between(doc, BEGIN_KEPT, END_KEPT, kept)
    doc = replace_between(doc, BEGIN_MEMORY, END_MEMORY, memory)
    path.write_text(doc)
    (out_dir / "image_inputs_bench.json").write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="folder of image_inputs.md")
    parser.add_argument(
        "--child", nargs=4, type=int, metavar=("CANVAS", "WINDOW", "STRIDE", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child:
        canvas, window, stride, batch = args.child
        print(json.dumps(memory_child(canvas, window, stride, batch or None)))
        return
    torch.set_num_threads(1)
    command = "python bench/image_inputs.py" + (" --smoke" if args.smoke else "")
    kept = kept_rows(KEPT_SMOKE if args.smoke else KEPT_FULL)
    memory = memory_rows(MEMORY_SMOKE if args.smoke else MEMORY_FULL)
    data = {"command": command, "machine": machine_line(), "structure_kept": kept, "memory": memory}
    write(kept_table(kept, command), memory_table(memory, command), data, args.out_dir)
    print(f"wrote {args.out_dir / 'image_inputs.md'} and {args.out_dir / 'image_inputs_bench.json'}")


if __name__ == "__main__":
    main()
