"""``multidiffusion batch JOBS.jsonl``: many recorded runs, one per line, resumable, spread over ``torchrun`` ranks.

A line is a recipe as a PNG made here stores it (its ``multidiffusion`` JSON: mode, prompt, size, seed, …) with one
more key, ``"out"``: the PNG to write (relative to the jobs file). Blank lines and lines starting with ``#`` are
skipped. Every line is checked before any model loads; a job whose output exists is done and is not run again, so
an interrupted batch resumes where it stopped.

Under ``torchrun --nproc-per-node N`` a small canvas (fewer than :data:`VIEWS_PER_RANK` views per rank) is made by
one rank alone, the jobs dealt round-robin; a large one by every rank together, its views shared (docs/
distributed.md). Each model loads once, for its run of consecutive jobs.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.options import add_recorded_run_options

VIEWS_PER_RANK = 4  # a canvas with fewer views than this per rank is made by one rank: sharing it would idle them
MAX_JOBS_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Job:
    """One line of the jobs file: the recipe to rerun, where to write it, and its line number (for messages)."""

    line: int
    recipe: dict[str, Any]
    out: Path


def read_jobs(path: str) -> list[Job]:
    """Every job of the file, checked (JSON, a known mode, a seed, an ``out`` PNG path, no two jobs writing one
    file); one line names the first problem and its line."""
    from multidiffusion.interfaces.files.png import check_output_path
    from multidiffusion.pipeline.settings.reproduce import call_arguments, read_recipe

    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"jobs file {path!r} does not exist")
    if file.stat().st_size > MAX_JOBS_BYTES:
        raise InvalidInputError(f"jobs file {path!r} is larger than {MAX_JOBS_BYTES >> 20} MiB")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read jobs file {path!r}: {exc}") from None
    jobs: list[Job] = []
    seen: dict[Path, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            recipe = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidInputError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(recipe, dict):
            raise InvalidInputError(f'{where}: a job is a JSON object (a recipe with an "out" file)')
        out = recipe.pop("out", None)
        if not isinstance(out, str) or not out:
            raise InvalidInputError(f'{where}: the job has no "out" file (the PNG to write)')
        target = (file.parent / out).resolve()
        try:
            check_output_path(str(target))
            recipe = read_recipe(json.dumps(recipe))
            call_arguments(recipe)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        if target in seen:
            raise InvalidInputError(f"{where}: writes {out}, as line {seen[target]} does; give each job its own file")
        seen[target] = number
        jobs.append(Job(number, recipe, target))
    if not jobs:
        raise InvalidInputError(f"jobs file {path!r} holds no job")
    return jobs


def view_count(pipe: Any, recipe: dict[str, Any]) -> int:
    """The views of the job's canvas (its window, stride and wrap as recorded; the model's defaults otherwise)."""
    from multidiffusion.core import layout_views
    from multidiffusion.pipeline.settings.reproduce import call_arguments

    _, kwargs = call_arguments(recipe)
    model = pipe.model
    g = model.granularity_px
    views = kwargs["views"]
    window = views.window or model.native_window * g
    stride = views.stride or model.default_stride_px or max(g, window // 8)
    height, width = int(kwargs["height"]), int(kwargs["width"])
    if height < window or width < window:
        return 1
    return len(layout_views(height // g, width // g, window // g, stride // g, wrap=views.wrap))


def run_batch(args: argparse.Namespace) -> int:
    """``multidiffusion batch``: check every job, then make the ones not done yet (see the module docstring)."""
    import torch

    from multidiffusion.adapters.loading.resolve import check_model_source, resolve_device
    from multidiffusion.pipeline.run.distributed import alone, group_shard
    from multidiffusion.pipeline.settings.reproduce import model_to_load

    jobs = read_jobs(args.jobs)
    models = [model_to_load(job.recipe, args.model) for job in jobs]
    for model in dict.fromkeys(models):
        check_model_source(model, allow_pickle=args.allow_pickle)
    device = resolve_device(args.device)
    shard = group_shard(device)
    log = launch.logger(args)
    # Rank 0 decides which jobs are done and tells the others, so every rank takes the same decisions.
    done = torch.tensor([1.0 if job.out.exists() else 0.0 for job in jobs], device=device)
    shard.share(done)
    todo = [(job, model) for job, model, finished in zip(jobs, models, done.tolist(), strict=True) if not finished]
    log(
        f"{len(jobs)} jobs, {len(jobs) - len(todo)} done already"
        + (f", {shard.world} processes" if not shard.alone else "")
    )
    pipe, loaded = None, None
    for k, (job, model) in enumerate(todo):
        if model != loaded:
            pipe, loaded = None, model  # one model in memory at a time
            pipe = launch.load_pipeline(args, model, job.recipe.get("dtype"))
        assert pipe is not None  # internal: model_to_load never gives None, so the first job loads one
        start = time.perf_counter()
        shared = shard.alone or view_count(pipe, job.recipe) >= VIEWS_PER_RANK * shard.world
        if shared:
            result = pipe.reproduce(job.recipe, progress=not args.quiet)
        elif k % shard.world == shard.rank:  # small: this rank's turn, by itself
            with alone():
                result = pipe.reproduce(job.recipe, progress=False)
        else:
            continue
        if result.images is None:  # a shared job on a rank other than 0: rank 0 writes it
            continue
        launch.save_result(result, int(job.recipe.get("image_index", 0)), str(job.out))
        log(f"line {job.line}: wrote {job.out} in {time.perf_counter() - start:.1f} s")
    return 0


def add_batch(sub: Any) -> None:
    """The ``batch`` subcommand's parser."""
    b = sub.add_parser(
        "batch",
        help="make many recorded runs from a JSON-lines file, resumably, across torchrun ranks",
        description='Make every job of JOBS (one recipe per line, as a PNG made here stores it, with an "out" '
        "file); jobs whose output exists are skipped. Under torchrun, small canvases go to one rank each and large "
        "ones are shared by all ranks (docs/distributed.md).",
    )
    b.add_argument("jobs", metavar="JOBS.jsonl", help='one job per line: a recipe JSON with an "out" PNG path')
    add_recorded_run_options(b, ": each job's recipe records a local folder by its name only", out=False)
