"""GPU rows: our panorama against diffusers' StableDiffusionPanoramaPipeline with an SD 2-base-size UNet.

The UNet has the configuration of stabilityai/stable-diffusion-2-base with random weights, built
in-process (no download); the text encoder has the shape of SD 2's (OpenCLIP ViT-H text tower), the VAE
is tiny (latents out: it never runs). 512×4608 px, 50 DDIM steps, guidance 7.5, bfloat16 (or --dtype
float16). Diffusers runs at its default view batch (1) and at its best one (searched over a few sizes at
--search-steps steps). For each: wall time (median of --repeats after a warm-up), denoiser evaluations
(UNet rows), peak GPU memory, max difference of the output latents from ours, and the fraction of the
FLOP floor reached: rows × FLOPs per row / --peak-tflops, over the measured time. FLOPs per row are
counted (torch.utils.flop_counter) on one row; the issue's figure is 678 GFLOP at 512×512.

    python bench/panorama_gpu.py                   # on a CUDA machine; writes docs/performance_gpu.{md,json}
    python bench/panorama_gpu.py --tiny            # the same code on the CPU, tiny UNet, small canvas (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
from multidiffusion.pipeline import MultiDiffusionPipeline  # noqa: E402
from tests.helpers.tiny_models import make_components  # noqa: E402

PROMPT = "a photo of the dolomites"
REFERENCE_GFLOP_PER_ROW = 678.0  # the figure: one SD 2 UNet row at 512×512 px

# stabilityai/stable-diffusion-2-base, unet/config.json (``attention_head_dim`` is diffusers' name for the
# number of heads per block: 64 channels per head everywhere).
SD2_BASE_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}
# SD 2's text encoder (OpenCLIP ViT-H/14 text tower) in transformers' CLIPTextConfig terms.
SD2_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "projection_dim": 512,
    "max_position_embeddings": 77,
}


def sd2_components(tmp: Path, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """SD 2-base-size UNet and text encoder with random (seeded) weights; the tiny tokenizer, VAE and DDIM."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = make_components(tmp)
    tok = c["tokenizer"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # benchmark only: reproducible random weights, global state restored
        unet = UNet2DConditionModel(**SD2_BASE_UNET)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **SD2_TEXT_ENCODER,
                vocab_size=len(tok),
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        )
    return to_device(dict(c, unet=unet.eval(), text_encoder=text_encoder.eval()), device, dtype)


def to_device(c: dict[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Move the networks to ``device`` in ``dtype`` (in place); returns ``c``."""
    for key in ("unet", "vae", "text_encoder"):
        c[key] = c[key].to(device=device, dtype=dtype)
    return c


def flops_per_row(unet: torch.nn.Module, window: int, device: torch.device, dtype: torch.dtype) -> float:
    """FLOPs of one UNet row at ``window`` × ``window`` latent cells, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, unet.config.in_channels, window, window, device=device, dtype=dtype)
    text = torch.zeros(1, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(x, torch.tensor(500, device=device), encoder_hidden_states=text)
    return float(counter.get_total_flops())


def synced(fn: Callable[[], Any], device: torch.device, peaks: dict[str, int], name: str) -> Callable[[], Any]:
    """``fn`` that waits for the GPU before returning and records its peak allocated memory."""

    def run() -> Any:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device))
        return out

    return run


def bench(args: argparse.Namespace) -> tuple[list[dict], dict[str, Any]]:
    from diffusers import StableDiffusionPanoramaPipeline

    device = torch.device(args.device)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    tmp = Path(tempfile.mkdtemp())
    c = to_device(make_components(tmp), device, dtype) if args.tiny else sd2_components(tmp, device, dtype)
    window = int(c["unet"].config.sample_size)
    counter = RowCounter(c["unet"])
    ours = MultiDiffusionPipeline(
        from_components("bench", c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"].config)
    )
    ref = StableDiffusionPanoramaPipeline(
        **dict(c, scheduler=make_scheduler("ddim", c["scheduler"].config)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    height, width = args.height, args.width
    views = ((height // 8 - window) // 8 + 1) * ((width // 8 - window) // 8 + 1)

    def ours_run(steps: int) -> Callable[[], torch.Tensor]:
        return lambda: (
            ours(
                PROMPT,
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=7.5,
                scheduler="ddim",
                # diffusers' weights: the comparison is like for like
                views=ViewSettings(window=window * 8, stride=64, weights="uniform"),
                generator=torch.Generator().manual_seed(0),
                output_type="latent",
                progress=False,
            ).latents
        )

    def ref_run(steps: int, batch: int) -> Callable[[], torch.Tensor]:
        return lambda: (
            ref(
                PROMPT,
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=7.5,
                view_batch_size=batch,
                generator=torch.Generator().manual_seed(0),
                output_type="latent",
            ).images
        )

    # diffusers' best view batch: the fastest of a few at --search-steps steps (one timed turn each)
    candidates = sorted({b for b in (2, 4, 8, 16, 32, views) if b <= views})
    search = interleaved({str(b): ref_run(args.search_steps, b) for b in candidates}, 1)
    best = int(min(search, key=lambda b: search[b].wall))
    print({"search": {b: round(t.wall, 3) for b, t in search.items()}, "best": best}, flush=True)

    peaks: dict[str, int] = {}
    methods = {
        "multidiffusion (ours)": ours_run(args.steps),
        "diffusers, view batch 1 (default)": ref_run(args.steps, 1),
        f"diffusers, best view batch ({best})": ref_run(args.steps, best),
    }
    rows_per_run: dict[str, int] = {}

    def counted(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            before = counter.rows
            out = fn()
            rows_per_run[name] = counter.rows - before
            return out

        return run

    timings = interleaved({n: counted(n, synced(fn, device, peaks, n)) for n, fn in methods.items()}, args.repeats)
    flops = flops_per_row(c["unet"], window, device, dtype)
    peak_flops = args.peak_tflops * 1e12
    base = timings["multidiffusion (ours)"].output.float()
    rows = []
    for name, t in timings.items():
        floor = rows_per_run[name] * flops / peak_flops
        rows.append(
            {
                "method": name,
                "size": f"{width}x{height}",
                "views": views,
                "steps": args.steps,
                "dtype": args.dtype,
                "seconds": round(t.wall, 3),
                "unet_rows": rows_per_run[name],
                "peak_memory_gib": round(peaks.get(name, 0) / 2**30, 2),
                "max_abs_diff_vs_ours": float((t.output.float() - base).abs().max()),
                "flop_floor_seconds": floor,
                "flop_floor_fraction": floor / t.wall,
            }
        )
        print(rows[-1], flush=True)
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "gflop_per_row": flops / 1e9,
        "peak_tflops": args.peak_tflops,
        "search": {b: round(t.wall, 3) for b, t in search.items()},
        "search_steps": args.search_steps,
        "repeats": args.repeats,
        "tiny": args.tiny,
    }
    return rows, info


def write(rows: list[dict], info: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "performance_gpu.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    r0 = rows[0]
    model = "tiny random UNet (CPU code-path check)" if info["tiny"] else "SD 2-base-size UNet, random weights"
    lines = [
        "# Performance on a GPU",
        "",
        f"{info['device']}; {machine_line()}.",
        "",
        f"Regenerate with `python bench/panorama_gpu.py`. {model}; {r0['size']} px, {r0['views']} views "
        f"(window 64, stride 8 latent cells), {r0['steps']} DDIM steps, guidance 7.5, {r0['dtype']}, latents "
        f"out. Wall time: median of {info['repeats']} turn(s) after a warm-up. FLOP floor: UNet rows × "
        f"{info['gflop_per_row']:.3g} GFLOP per row (counted; the issue's figure is "
        f"{REFERENCE_GFLOP_PER_ROW:.0f}) / {info['peak_tflops']:.0f} TFLOP/s. Diffusers' best view batch: the "
        f"fastest of {', '.join(map(str, info['search']))} at {info['search_steps']} steps "
        f"({', '.join(f'{b}: {s:.2f} s' for b, s in info['search'].items())}).",
        "",
        "| method | time (s) | UNet rows | peak memory (GiB) | max abs diff vs ours | FLOP floor (s) | "
        "fraction of the floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seconds']:.2f} | {r['unet_rows']} | {r['peak_memory_gib']:.2f} | "
            f"{r['max_abs_diff_vs_ours']:.1e} | {r['flop_floor_seconds']:.3g} | {r['flop_floor_fraction']:.3g} |"
        )
    (out_dir / "performance_gpu.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny UNet, 512×640 px, 1 step (CI smoke)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--search-steps", type=int, default=5, help="steps per run when choosing diffusers' batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the device's dense peak (bf16/fp16)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if args.tiny:
        args.device = args.device or "cpu"
        args.dtype = args.dtype or "float32"
        args.width, args.steps, args.search_steps, args.repeats = 640, 1, 1, 1
        torch.set_num_threads(1)  # tiny tensors; keeps a shared CI machine responsive
    else:
        args.device = args.device or "cuda"
        args.dtype = args.dtype or "bfloat16"
        if not torch.cuda.is_available() and args.device.startswith("cuda"):
            raise SystemExit("no CUDA device: run on a GPU, or pass --tiny to check the code path on the CPU")
    rows, info = bench(args)
    write(rows, info, args.out_dir)
    print(f"wrote {args.out_dir / 'performance_gpu.md'}")


if __name__ == "__main__":
    main()
