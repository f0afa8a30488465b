"""``multidiffusion eval-suite``: the papers' protocol in one command, generation then ``eval`` (docs/evaluation.md).

For every prompt of ``--prompts`` (one per line), ``--per-prompt`` panoramas at each size (512 × 3072 and 512 × 4608
px, the SyncDiffusion paper's) for each setting (plain MultiDiffusion, the cheaper named layouts, SyncDiffusion),
and as many single-view references at the model's native size, each with its own seed. Then every (setting, size)
folder is evaluated against the references: CLIP score, intra-LPIPS/Style, FID, KID and GIQA. Files already made are
not made again, so an interrupted suite resumes. Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import DEFAULT_WEIGHT as GLOBAL_VIEW_WEIGHT
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.commands.evaluate import add_metric_options, evaluate, metric_models

SETTINGS: dict[str, dict[str, Any]] = {
    "multidiffusion": {},  # the default weights: Gaussian ramps (docs/fusion.md)
    "paper-weights": {"weights": "uniform"},  # the paper's and diffusers' uniform weights
    "half-overlap": {"layout": "half-overlap"},
    "quarter-overlap": {"layout": "quarter-overlap"},
    "global-view": {"global_view": GLOBAL_VIEW_WEIGHT},
    "sync": {"sync": True},
}
DEFAULT_SIZES = "512x3072,512x4608"
MAX_PROMPTS = 1000
COLUMNS = ("clip_score", "intra_lpips", "intra_style", "fid", "kid", "giqa")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"512x3072,512x4608"`` → [(512, 3072), (512, 4608)] (height × width, px)."""
    sizes = []
    for part in text.split(","):
        try:
            height, width = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise InvalidInputError(f"--sizes takes HEIGHTxWIDTH pairs separated by commas, got {part!r}") from None
        if height <= 0 or width <= 0:
            raise InvalidInputError(f"--sizes needs positive sizes, got {part!r}")
        sizes.append((height, width))
    return sizes


def read_prompts(path: str) -> list[str]:
    """The prompts of a text file, one per non-empty line."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"prompts file {path!r} does not exist")
    try:
        prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read prompts file {path!r}: {exc}") from None
    if not prompts:
        raise InvalidInputError(f"prompts file {path!r} holds no prompt")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInputError(f"prompts file {path!r} holds {len(prompts)} prompts; the limit is {MAX_PROMPTS}")
    return prompts


def run_eval_suite(args: argparse.Namespace) -> int:
    """Generate what is missing, evaluate every (setting, size) against the references, write the tables."""
    import torch

    log = launch.logger(args)
    prompts = read_prompts(args.prompts)
    sizes = parse_sizes(args.sizes)
    settings = [name.strip() for name in args.settings.split(",") if name.strip()]
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown or not settings:
        raise InvalidInputError(f"--settings takes some of {', '.join(SETTINGS)}, got {args.settings!r}")
    if args.per_prompt < 1:
        raise InvalidInputError(f"--per-prompt must be ≥ 1, got {args.per_prompt}")
    out = Path(args.out)
    pipe = launch.load_pipeline(args, args.model, args.dtype)
    native = pipe.model.native_window * pipe.model.granularity_px

    def make(path: Path, prompt: str, seed: int, **kwargs: Any) -> None:
        if path.exists():  # made by an earlier, interrupted run
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(seed)
        result = pipe(prompt, num_inference_steps=args.steps, generator=generator, progress=False, **kwargs)
        result.save(path, index=0)

    total = len(prompts) * args.per_prompt * (1 + len(settings) * len(sizes))
    done = 0
    for i, prompt in enumerate(prompts):
        for j in range(args.per_prompt):
            seed = args.seed + 1000 * i + j
            make(out / "reference" / f"p{i:03d}-{j:02d}.png", prompt, seed, height=native, width=native)
            done += 1
            for name in settings:
                for height, width in sizes:
                    folder = out / f"{name}-{height}x{width}"
                    make(folder / f"p{i:03d}-{j:02d}.png", prompt, seed, height=height, width=width, **SETTINGS[name])
                    done += 1
            log(f"prompt {i + 1}/{len(prompts)}, sample {j + 1}/{args.per_prompt}: {done}/{total} images")
    reference = sorted(str(p) for p in (out / "reference").glob("*.png"))
    clip, features, vgg = metric_models(args, log, True, True)
    rows = []
    for name in settings:
        for height, width in sizes:
            files = sorted(str(p) for p in (out / f"{name}-{height}x{width}").glob("*.png"))
            result = evaluate(files, reference, crop=args.crop or native, clip=clip, features=features, vgg_model=vgg,
                              k=args.k)  # fmt: skip
            per_image = result["images"]
            summary = result["summary"]
            row = {"setting": name, "size": f"{height}x{width}", "images": len(files), **{c: None for c in COLUMNS}}
            for column in ("intra_lpips", "intra_style"):
                values = [r[column] for r in per_image if r.get(column) is not None]
                row[column] = sum(values) / len(values) if values else None
            row.update({c: summary.get(c) for c in ("clip_score", "fid", "kid", "giqa")})
            rows.append(row)
    (out / "results.json").write_text(json.dumps({"rows": rows, "prompts": prompts}, indent=1) + "\n")
    table = format_rows(rows)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (``n/a`` where a metric's weights were missing)."""

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    header = ["setting", "size", "images", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines)


def add_eval_suite(e: argparse.ArgumentParser) -> None:
    """The ``eval-suite`` command's options."""
    from multidiffusion.interfaces.cli.options import MODEL_HELP, add_allow_pickle

    e.description = (
        "For every prompt, --per-prompt panoramas per size and setting and as many single-view "
        "references, then the metrics of `eval` per (setting, size) against the references; resumable. Writes "
        "OUT/results.json and OUT/results.md (docs/evaluation.md)."
    )
    e.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    e.add_argument("--prompts", required=True, metavar="FILE", help="prompts, one per line")
    e.add_argument("--out", required=True, metavar="DIR", help="where the images and the results go")
    e.add_argument("--per-prompt", type=int, default=4, metavar="N", help="samples per prompt and setting")
    e.add_argument("--sizes", default=DEFAULT_SIZES, help="HEIGHTxWIDTH, comma-separated (default: %(default)s)")
    e.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help=f"comma-separated, from: {', '.join(SETTINGS)} (default: all)",
    )
    e.add_argument("--steps", type=int, default=50, help="denoising steps (default: %(default)s)")
    e.add_argument("--seed", type=int, default=0, help="first seed; sample j of prompt i uses seed + 1000 i + j")
    e.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    e.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"), help="weights dtype")
    add_allow_pickle(e)
    add_metric_options(e)
    e.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
