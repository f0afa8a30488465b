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


@pytest.mark.heavy
def test_batch_across_two_ranks(small_folder, made, tmp_path):
    """Two ranks: the 1- and 3-view canvases go to one rank each, the 11-view canvas is shared; every file equals the
    one-process image (±1 in 8 bits where the ranks' sums round differently)."""
    jobs = _jobs(made, tmp_path)
    proc = _torchrun(2, "-m", "multidiffusion", "batch", str(jobs), "--model", str(small_folder), "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, path in made.items():
        ours, theirs = pixels(tmp_path / f"out-{name}.png"), pixels(path)
        assert max(abs(x - y) for x, y in zip(ours, theirs, strict=True)) <= 1, name


@pytest.fixture(scope="module")
def toy_recipe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The recipe of a small toy panorama (32 × 96 px, 2 steps)."""
    out = tmp_path_factory.mktemp("toy") / "toy.png"
    argv = ["panorama", "a lake", "--model", "toy", "--height", "32", "--width", "96", "--window", "32"]
    assert exit_code([*argv, "--stride", "16", "--steps", "2", "--seed", "1", "--out", str(out), "-q"]) == 0
    return recipe(out)


def _write_jobs(folder: Path, *jobs: dict) -> Path:
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


@pytest.mark.parametrize("out", ["../x.png", "{outside}/x.png", "link/x.png", "sub/../../x.png"])
def test_an_out_outside_the_jobs_folder_is_refused(toy_recipe, tmp_path, capfd, out):
    """Absolute paths, ``..`` and links out of the folder: one line naming the line, before any model loads."""
    folder, outside = tmp_path / "jobs", tmp_path / "elsewhere"
    folder.mkdir(), outside.mkdir(), (folder / "sub").mkdir()
    (folder / "link").symlink_to(outside)
    out = out.replace("{outside}", str(outside))
    jobs = _write_jobs(folder, {**toy_recipe, "out": "ok.png"}, {**toy_recipe, "out": out})
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 2
    line = one_error_line(capfd)
    assert "jobs.jsonl:2:" in line and "outside the jobs file's folder" in line and "--allow-outside" in line
    assert sorted(p.name for p in folder.iterdir()) == ["jobs.jsonl", "link", "sub"]
    assert list(outside.iterdir()) == [] and not (tmp_path / "x.png").exists()


def test_allow_outside_writes_where_the_job_says(toy_recipe, tmp_path):
    folder, outside = tmp_path / "jobs", tmp_path / "elsewhere"
    folder.mkdir(), outside.mkdir()
    jobs = _write_jobs(folder, {**toy_recipe, "out": "../elsewhere/a.png"}, {**toy_recipe, "out": str(outside / "b")})
    jobs.write_text(jobs.read_text().replace(str(outside / "b"), str(outside / "b.png")))
    assert exit_code(["batch", str(jobs), "-q", "--allow-outside"]) == 0
    assert sorted(p.name for p in outside.iterdir()) == ["a.png", "b.png"]


def test_a_job_that_fails_to_load_does_not_stop_the_batch(toy_recipe, tmp_path, capfd):
    """Jobs 1 and 3 are written; job 2's model (a hub id not in the offline cache) fails only when it loads: one
    line for it, then a summary line, exit status 1."""
    jobs = _write_jobs(
        tmp_path,
        {**toy_recipe, "out": "one.png"},
        {**toy_recipe, "model": "nobody/not-in-the-cache", "out": "two.png"},
        {**toy_recipe, "out": "three.png"},
    )
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 1
    err = capfd.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, err
    assert errors[0].startswith(f"error: {jobs}:2: ") and "nobody/not-in-the-cache" in errors[0]
    assert errors[1] == "error: batch: 2 of 3 jobs written, 1 failed (line 2)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl", "one.png", "three.png"]
    assert pixels(tmp_path / "one.png") == pixels(tmp_path / "three.png")  # the same recipe twice
    # rerun: the written jobs are skipped, the failed one fails again, and the summary says what was done before
    assert exit_code(["batch", str(jobs), "-q"]) == 1
    assert capfd.readouterr().err.strip().splitlines()[-1] == (
        "error: batch: 0 of 3 jobs written, 1 failed (line 2), 2 done already"
    )


def test_every_job_of_a_model_that_fails_to_load_is_reported(toy_recipe, tmp_path, capfd):
    missing = {**toy_recipe, "model": "nobody/not-in-the-cache"}
    jobs = _write_jobs(
        tmp_path, {**missing, "out": "a.png"}, {**missing, "out": "b.png"}, {**toy_recipe, "out": "c.png"}
    )
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors[:2]] == [f"{jobs}:1", f"{jobs}:2"]
    assert errors[2] == "error: batch: 1 of 3 jobs written, 2 failed (lines 1, 2)"
    assert (tmp_path / "c.png").is_file() and not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("length", [256, 300])
def test_an_out_name_past_the_name_limit_is_refused(toy_recipe, tmp_path, capfd, length):
    jobs = _write_jobs(tmp_path, {**toy_recipe, "out": "x" * (length - 4) + ".png"})
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 2
    line = one_error_line(capfd)
    assert "jobs.jsonl:1:" in line and f"is {length} bytes; a file name may have at most 255 bytes" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


@pytest.mark.heavy
def test_a_job_that_fails_to_load_does_not_stop_the_batch_across_two_ranks(toy_recipe, tmp_path):
    """Every rank skips the model that failed, so the ranks stay in step: jobs 1 and 3 are written, one line for job 2
    (from rank 0), the summary line, and a non-zero status."""
    jobs = _write_jobs(
        tmp_path,
        {**toy_recipe, "out": "one.png"},
        {**toy_recipe, "model": "nobody/not-in-the-cache", "out": "two.png"},
        {**toy_recipe, "out": "three.png"},
    )
    proc = _torchrun(2, "-m", "multidiffusion", "batch", str(jobs), "-q", timeout=240)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith(f"error: {jobs}:2: "), proc.stderr[-3000:]
    assert errors[1] == "error: batch: 2 of 3 jobs written, 1 failed (line 2)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl", "one.png", "three.png"]


def test_a_job_whose_file_cannot_be_written_does_not_stop_the_batch(toy_recipe, tmp_path, capfd, monkeypatch):
    """The write of job 1 fails (as a full disk would): its image is rescued, one line says where, and job 2 runs."""
    import tempfile

    from multidiffusion.pipeline.files import png

    folder, rescue = tmp_path / "jobs", tmp_path / "tmp"
    folder.mkdir(), rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    real = png._write

    def write(image, out, info):
        if Path(out).name == "one.png":
            raise OSError(28, "No space left on device")
        real(image, out, info)

    monkeypatch.setattr(png, "_write", write)
    jobs = _write_jobs(folder, {**toy_recipe, "out": "one.png"}, {**toy_recipe, "out": "two.png"})
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 1
    errors = capfd.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and errors[0].startswith(f"error: {jobs}:1: ") and "No space left" in errors[0]
    assert errors[1] == "error: batch: 1 of 2 jobs written, 1 failed (line 1)"
    assert sorted(p.name for p in folder.iterdir()) == ["jobs.jsonl", "two.png"]
    assert len(list(rescue.glob("multidiffusion-unsaved-*one.png"))) == 1


def test_a_lost_rank_ends_the_batch_instead_of_going_on(toy_recipe, tmp_path, capfd, monkeypatch):
    """A job's own failure lets the batch go on; a lost rank does not: every later job's collectives would fail."""
    from multidiffusion.core.errors import ProcessGroupError
    from multidiffusion.pipeline import MultiDiffusionPipeline

    def lost(self, *args, **kwargs):
        raise ProcessGroupError("rank 1 did not answer within 30 s; the run stops on every rank")

    monkeypatch.setattr(MultiDiffusionPipeline, "reproduce", lost)
    jobs = _write_jobs(tmp_path, {**toy_recipe, "out": "one.png"}, {**toy_recipe, "out": "two.png"})
    capfd.readouterr()
    assert exit_code(["batch", str(jobs), "-q"]) == 1
    assert one_error_line(capfd) == "error: rank 1 did not answer within 30 s; the run stops on every rank"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]
