"""``multidiffusion batch JOBS.jsonl``: many recorded runs, one per line, resumable, spread over ``torchrun`` ranks.

A line is a recipe as a PNG made here stores it (its ``multidiffusion`` JSON: mode, prompt, size, seed, …) with one
more key, ``"out"``: the PNG to write, relative to the jobs file and inside its folder (links resolved; elsewhere
only with ``--allow-outside``). Blank lines and lines starting with ``#`` are skipped. Every line is checked before
any model loads; a job whose output exists is done and is not run again, so an interrupted batch resumes where it
stopped. A job that fails later (its model does not load, its run fails, its file cannot be written) gets one
``error:`` line and the batch goes on; the last line counts the failures, and the exit status is then 1
(:data:`EXIT_SOME_FAILED`).

Under ``torchrun --nproc-per-node N`` a small canvas (fewer than :data:`VIEWS_PER_RANK` views per rank) is made by
one rank alone, the jobs dealt round-robin; a large one by every rank together, its views shared (docs/
distributed.md). Each model loads once, for its run of consecutive jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError, NonFiniteError, OutputError, ProcessGroupError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.options import add_recorded_run_options, recorded_files

VIEWS_PER_RANK = 4  # a canvas with fewer views than this per rank is made by one rank: sharing it would idle them
MAX_JOBS_BYTES = 64 * 2**20
EXIT_SOME_FAILED = 1  # as for a run that failed; 2 (bad input) stays for a jobs file refused before anything ran
JOB_ERRORS = (InvalidInputError, NonFiniteError, OutputError)  # the one-line failures of one job; others are bugs


@dataclass(frozen=True)
class Job:
    """One line of the jobs file: the recipe to rerun, where to write it, and its line number (for messages)."""

    line: int
    recipe: dict[str, Any]
    out: Path


def read_jobs(path: str, allow_outside: bool = False, files: Any = None) -> list[Job]:
    """Every job of the file, checked (JSON, a known mode, a seed, an ``out`` PNG path inside the jobs file's folder
    unless ``allow_outside``, no two jobs writing one file); one line names the first problem and its line."""
    from multidiffusion.pipeline.files.png import check_output_path
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
    home = file.parent.resolve()
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
        try:
            target = (file.parent / out).resolve()
            if not allow_outside:
                check_inside(target, home, out)
            check_output_path(target)
            recipe = read_recipe(json.dumps(recipe), files=files)
            call_arguments(recipe)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        except (OSError, RuntimeError) as exc:  # resolve(): a path past PATH_MAX, a loop of links
            raise InvalidInputError(f'{where}: "out" {out!r} cannot be resolved ({exc})') from None
        if target in seen:
            raise InvalidInputError(f"{where}: writes {out}, as line {seen[target]} does; give each job its own file")
        seen[target] = number
        jobs.append(Job(number, recipe, target))
    if not jobs:
        raise InvalidInputError(f"jobs file {path!r} holds no job")
    return jobs


def check_inside(target: Path, home: Path, out: str) -> None:
    """``target`` (resolved) must lie in the jobs file's folder ``home`` (resolved): a jobs file handed over writes
    only beside itself, whatever its ``..``, absolute paths or links say."""
    if not target.is_relative_to(home):
        raise InvalidInputError(
            f'"out" {out!r} is outside the jobs file\'s folder; give a path inside it, or pass --allow-outside'
        )


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
    """``multidiffusion batch``: check every job, then make the ones not done yet (see the module docstring);
    returns 0, or :data:`EXIT_SOME_FAILED` when a job failed."""
    import torch

    from multidiffusion.adapters.loading.resolve import check_model_source, resolve_device
    from multidiffusion.pipeline.run.distributed import alone, group_shard
    from multidiffusion.pipeline.settings.reproduce import model_to_load

    allow_outside = getattr(args, "allow_outside", False)
    jobs = read_jobs(args.jobs, allow_outside, recorded_files(args))
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
    # 1 where this rank wrote a job's file, or saw it fail; summed over the ranks at the end
    written = torch.zeros(len(jobs), device=device)
    failed = torch.zeros(len(jobs), device=device)
    index = {job.line: i for i, job in enumerate(jobs)}
    home = Path(args.jobs).parent.resolve()
    pipe, loaded, load_error, say = None, None, None, False
    for k, (job, model) in enumerate(todo):
        if model != loaded:
            pipe, loaded, load_error = None, model, None  # one model in memory at a time
            try:
                pipe = launch.load_pipeline(args, model, job.recipe.get("dtype"))
            except JOB_ERRORS as exc:
                load_error = exc
            load_error, say = _agreed_load_error(shard, load_error, device)
        if load_error is not None:  # every job of this model fails, each reported on its own line
            failed[index[job.line]] = 1.0
            if say:
                _report(args.jobs, job, load_error)
            continue
        assert pipe is not None  # internal: a model that loaded without error gave a pipeline
        start = time.perf_counter()
        shared = True  # until known: a failure before the split is every rank's alike
        try:
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
            if not allow_outside:  # a folder of the path swapped for a link since the jobs were checked
                check_inside(job.out.resolve(), home, str(job.out))
            result.save(job.out, index=int(job.recipe.get("image_index", 0)))
        except ProcessGroupError:
            raise  # a lost rank ends the whole batch: the next job's collectives could not complete either
        except JOB_ERRORS as exc:
            failed[index[job.line]] = 1.0
            if shard.rank == 0 or not shared:  # a shared run fails alike on every rank: rank 0 says so
                _report(args.jobs, job, exc)
            continue
        written[index[job.line]] = 1.0
        log(f"line {job.line}: wrote {job.out} in {time.perf_counter() - start:.1f} s")
    shard.sum_(written)
    shard.sum_(failed)
    lines = [job.line for job, bad in zip(jobs, failed.tolist(), strict=True) if bad]
    if not lines:
        return 0
    if shard.rank == 0:
        made = summary(len(jobs), int(written.count_nonzero()), lines, len(jobs) - len(todo))
        print(f"error: {made}", file=sys.stderr)
    return EXIT_SOME_FAILED


def summary(total: int, written: int, failed_lines: list[int], done_before: int = 0) -> str:
    """The batch's last line when jobs failed: how many of ``total`` were written by this run, which lines failed,
    and how many were done before it."""
    count = len(failed_lines)
    where = f"line{'s' if count > 1 else ''} {', '.join(map(str, failed_lines))}"
    before = f", {done_before} done already" if done_before else ""
    return f"batch: {written} of {total} jobs written, {count} failed ({where}){before}"


def _report(path: str, job: Job, exc: BaseException) -> None:
    """One ``error:`` line for a failed job, naming its line (the batch goes on)."""
    print(f"error: {path}:{job.line}: {exc}", file=sys.stderr)


def _agreed_load_error(shard: Any, error: BaseException | None, device: Any) -> tuple[BaseException | None, bool]:
    """This rank's load error, or one standing for another rank's: a model that failed to load on any rank is
    skipped by every rank, so the ranks' collectives stay in step. Also whether this rank reports it: rank 0 does,
    and a rank whose own error rank 0 did not share (the ranks failed alike, most often: same files, same message).
    """
    import torch

    if shard.alone:
        return error, error is not None
    flags = torch.zeros(shard.world, device=device)
    flags[shard.rank] = 0.0 if error is None else 1.0
    shard.sum_(flags)
    if flags.sum().item() == 0:
        return None, False
    if error is None:
        return InvalidInputError("the model failed to load on another process"), shard.rank == 0
    return error, shard.rank == 0 or flags[0].item() == 0


def add_batch(b: argparse.ArgumentParser) -> None:
    """The ``batch`` command's options."""
    b.description = (
        'Make every job of JOBS (one recipe per line, as a PNG made here stores it, with an "out" '
        "file inside the jobs file's folder); jobs whose output exists are skipped. A job that fails gets one "
        "error line and the batch goes on; the exit status is then 1. Under torchrun, small canvases go to one "
        "rank each and large ones are shared by all ranks (docs/distributed.md)."
    )
    b.add_argument("jobs", metavar="JOBS.jsonl", help='one job per line: a recipe JSON with an "out" PNG path')
    b.add_argument(
        "--allow-outside",
        action="store_true",
        help='let a job\'s "out" name a file outside the jobs file\'s folder (an absolute path, "..", a link)',
    )
    add_recorded_run_options(b, ": each job's recipe records a local folder by its name only", out=False)
