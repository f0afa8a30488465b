"""``multidiffusion batch``: recorded runs from a JSON-lines file, checked first, resumable, and across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import exit_code, one_error_line, pixels, recipe
from tests.helpers.torchrun import torchrun as _torchrun

BASE = ["--steps", "2", "--stride", "64", "-q"]


@pytest.fixture(scope="module")
def made(small_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three PNGs made one by one (window 128 px, stride 64): two small canvases (1 and 3 views) and a larger one
    (11 views)."""
    folder = tmp_path_factory.mktemp("made")
    sizes = {"a": ("128", "128"), "b": ("128", "256"), "c": ("128", "768")}
    for name, (height, width) in sizes.items():
        argv = ["panorama", f"a lake {name}", "--model", str(small_folder), "--height", height, "--width", width]
        assert exit_code([*argv, "--seed", str(ord(name)), "--out", str(folder / f"{name}.png"), *BASE]) == 0
    return {name: folder / f"{name}.png" for name in sizes}


def _jobs(made: dict[str, Path], folder: Path) -> Path:
    lines = ["# made by test_batch", ""]
    lines += [json.dumps({**recipe(path), "out": f"out-{name}.png"}) for name, path in made.items()]
    jobs = folder / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")
    return jobs


def test_batch_remakes_each_recipe_and_resumes(small_folder, made, tmp_path):
    jobs = _jobs(made, tmp_path)
    assert exit_code(["batch", str(jobs), "--model", str(small_folder), "-q"]) == 0
    for name, path in made.items():
        assert pixels(tmp_path / f"out-{name}.png") == pixels(path)  # bit-identical: same recipe, same machine
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("out-*.png")}
    (tmp_path / "out-b.png").unlink()  # as if the batch had stopped before this job
    assert exit_code(["batch", str(jobs), "--model", str(small_folder), "-q"]) == 0
    assert pixels(tmp_path / "out-b.png") == pixels(made["b"])
    for name in ("out-a.png", "out-c.png"):  # done jobs were not redone
        assert (tmp_path / name).stat().st_mtime_ns == stamps[name]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "jobs.jsonl:1: not a JSON object"),
        ("[1, 2]", "jobs.jsonl:1: a job is a JSON object"),
        ('{"mode": "panorama"}', 'jobs.jsonl:1: the job has no "out" file'),
        ('{"mode": "sculpture", "out": "x.png"}', "jobs.jsonl:1: the recipe has no known mode"),
        ('{"mode": "panorama", "out": "x.txt"}', "jobs.jsonl:1:"),
    ],
)
def test_bad_jobs_are_one_line_before_loading(tmp_path, capfd, line, message):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(line + "\n")
    assert exit_code(["batch", str(jobs), "--model", "toy", "-q"]) == 2
    assert message in one_error_line(capfd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


def test_two_jobs_writing_one_file_are_refused(made, tmp_path, capfd):
    jobs = tmp_path / "jobs.jsonl"
    line = json.dumps({**recipe(made["a"]), "out": "same.png"})
    jobs.write_text(line + "\n" + line + "\n")
    assert exit_code(["batch", str(jobs), "--model", "toy", "-q"]) == 2
    assert "line 1 does" in one_error_line(capfd)


def test_batch_across_two_ranks(small_folder, made, tmp_path):
    """Two ranks: the 1- and 3-view canvases go to one rank each, the 11-view canvas is shared; every file equals the
    one-process image (±1 in 8 bits where the ranks' sums round differently)."""
    jobs = _jobs(made, tmp_path)
    proc = _torchrun(2, "-m", "multidiffusion", "batch", str(jobs), "--model", str(small_folder), "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, path in made.items():
        ours, theirs = pixels(tmp_path / f"out-{name}.png"), pixels(path)
        assert max(abs(x - y) for x, y in zip(ours, theirs, strict=True)) <= 1, name
