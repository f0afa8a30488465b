"""Checkpoints and resume (issue 18, "Runs that fail part-way"): a run interrupted after any step and finished
from its checkpoint gives the uninterrupted run's result bit for bit, for every diffusion scheduler, regions
(bootstrapping across the interruption) and SyncDiffusion; bad checkpoint files end as one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multidiffusion.adapters.schedulers.names import DIFFUSION_NAMES
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.interfaces.cli.main import main
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.run.checkpoint import LEGACY_MAGIC, Checkpoint, CheckpointSettings
from tests.helpers.cli import exit_code, pixels, recipe

TOY = ["--model", "toy", "--window", "32", "--stride", "8", "--steps", "5", "-q"]
KW = dict(height=32, width=96, window=32, stride=8, num_inference_steps=6, progress=False)


@pytest.fixture(scope="module")
def toy():
    return MultiDiffusionPipeline.from_pretrained("toy")


def interrupt_after(steps: int):
    """A step callback that presses Ctrl-C once ``steps`` steps are done."""

    def callback(state):
        if state.step_index + 1 == steps:
            raise KeyboardInterrupt

    return callback


def interrupted(call, path: Path, steps: int, **kwargs) -> Checkpoint:
    """Run ``call`` with a checkpoint that is only due at the end, press Ctrl-C after ``steps`` steps: the
    interrupt itself must write the checkpoint."""
    with pytest.raises(KeyboardInterrupt):
        call(checkpoint=CheckpointSettings(path, every=1000), callback_on_step_end=interrupt_after(steps), **kwargs)
    checkpoint = Checkpoint.load(path)
    assert checkpoint.step == steps
    return checkpoint


@pytest.mark.parametrize("scheduler", DIFFUSION_NAMES)
def test_resume_is_bit_identical_for_every_scheduler(toy, tmp_path, scheduler):
    kwargs = dict(KW, scheduler=scheduler)
    full = toy("red or blue", generator=torch.Generator().manual_seed(5), **kwargs)
    path = tmp_path / "run.ckpt"
    interrupted(toy, path, 3, prompt="red or blue", generator=torch.Generator().manual_seed(5), **kwargs)
    done = toy.resume(path, progress=False)
    assert torch.equal(done.latents, full.latents)
    assert done.images[0].tobytes() == full.images[0].tobytes()
    assert done.metadata.to_json() == full.metadata.to_json()


def test_resume_regions_with_bootstrapping_across_the_interruption(toy, tmp_path):
    regions = [Region("a red ball", box=(8, 0, 40, 32)), Region("a green tree", box=(56, 8, 88, 32))]
    kwargs = dict(KW, scheduler="euler_a", bootstrap_fraction=0.5)  # steps 0–2 bootstrap
    full = toy.regions(regions, "a blue sky", generator=torch.Generator().manual_seed(9), **kwargs)
    path = tmp_path / "regions.ckpt"
    call = toy.regions
    interrupted(
        call, path, 2, regions=regions, background="a blue sky", generator=torch.Generator().manual_seed(9), **kwargs
    )
    done = toy.resume(path, progress=False)
    assert torch.equal(done.latents, full.latents)
    # the interruption fell inside the bootstrap steps, and bootstrapping draws from the generator
    other = toy.regions(
        regions, "a blue sky", generator=torch.Generator().manual_seed(9), **dict(kwargs, bootstrap_fraction=0.0)
    )
    assert not torch.equal(other.latents, full.latents)


def test_resume_sync(toy, tmp_path):
    kwargs = dict(KW, scheduler="dpmpp_2m", sync=True, sync_loss="builtin", sync_weight=5.0)
    full = toy("red or blue", generator=torch.Generator().manual_seed(2), **kwargs)
    path = tmp_path / "sync.ckpt"
    interrupted(toy, path, 2, prompt="red or blue", generator=torch.Generator().manual_seed(2), **kwargs)
    done = toy.resume(path, progress=False)
    assert torch.equal(done.latents, full.latents)


def test_every_k_steps_and_after_the_last(toy, tmp_path):
    path = tmp_path / "run.ckpt"
    seen = []

    def callback(state):
        if path.exists():
            seen.append((state.step_index + 1, Checkpoint.load(path).step))

    toy(
        "red",
        generator=torch.Generator().manual_seed(1),
        checkpoint=CheckpointSettings(path, 4),
        callback_on_step_end=callback,
        **KW,
    )
    # the callback runs after its step's checkpoint; the last step is always written (resume then decodes)
    assert seen == [(4, 4), (5, 4), (6, 6)]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_checkpoint_of_another_run_is_refused(toy, tmp_path):
    path = tmp_path / "run.ckpt"
    interrupted(toy, path, 2, prompt="red", generator=torch.Generator().manual_seed(1), **KW)
    with pytest.raises(InvalidInputError, match="another run: its prompt differs"):
        toy("blue", generator=torch.Generator().manual_seed(1), resume=Checkpoint.load(path), **KW)


def cli_interrupted(monkeypatch, argv: list[str], steps: int) -> int:
    """Run the CLI, pressing Ctrl-C once ``steps`` steps are done (after their checkpoint)."""
    from multidiffusion.pipeline.run import progress

    original = progress.StepProgress.step

    def step(self, step_index):
        original(self, step_index)
        if step_index + 1 == steps:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(progress.StepProgress, "step", step)
        return exit_code(argv)


def test_cli_checkpoint_and_resume_on_the_toy_model(tmp_path, monkeypatch, capsys):
    full, done, ckpt = tmp_path / "full.png", tmp_path / "done.png", tmp_path / "run.ckpt"
    argv = ["panorama", "red or blue", *TOY, "--height", "32", "--width", "96", "--scheduler", "euler_a", "--seed", "4"]
    assert main([*argv, "--out", str(full)]) == 0
    capsys.readouterr()
    code = cli_interrupted(monkeypatch, [*argv, "--out", str(done), "--checkpoint", str(ckpt)], 2)
    assert code == 130
    assert f"multidiffusion resume {ckpt}" in capsys.readouterr().err
    assert not done.exists()
    assert main(["resume", str(ckpt), "--out", str(done), "-q"]) == 0
    assert pixels(done) == pixels(full)
    assert recipe(done) == recipe(full)


def test_cli_resume_on_the_small_sd_folder(small_folder, tmp_path, monkeypatch):
    full, done, ckpt = tmp_path / "full.png", tmp_path / "done.png", tmp_path / "run.ckpt"
    model = ["--model", str(small_folder)]
    argv = ["panorama", "a red sky", *model, "--height", "128", "--width", "256", "--steps", "3", "--seed", "7", "-q"]
    assert main([*argv, "--out", str(full)]) == 0
    assert cli_interrupted(monkeypatch, [*argv, "--out", str(done), "--checkpoint", str(ckpt)], 1) == 130
    assert Checkpoint.load(ckpt).step == 1
    assert main(["resume", str(ckpt), *model, "--out", str(done), "-q"]) == 0
    assert pixels(done) == pixels(full)
    assert recipe(done) == recipe(full)


def test_bad_checkpoint_files_end_as_one_error_line(small_folder, tmp_path, capsys):
    out = str(tmp_path / "out.png")
    ckpt = tmp_path / "toy.ckpt"
    argv = ["panorama", "red", *TOY, "--height", "32", "--width", "64", "--out", str(tmp_path / "a.png")]
    assert main([*argv, "--checkpoint", str(ckpt)]) == 0
    not_one = tmp_path / "model.safetensors"
    not_one.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(ckpt.read_bytes()[:-10])  # truncated: the header names bytes that are not there
    old = tmp_path / "old.ckpt"
    old.write_bytes(LEGACY_MAGIC + b"PK\x03\x04 not a torch archive")
    capsys.readouterr()
    cases = [
        (["resume", str(tmp_path / "missing.ckpt"), "--out", out, "-q"], "cannot read checkpoint"),
        (["resume", str(not_one), "--out", out, "-q"], "is not a multidiffusion checkpoint"),
        (["resume", str(damaged), "--out", out, "-q"], "is damaged"),
        (["resume", str(old), "--out", out, "-q"], "is a checkpoint in the old pickle format"),
        (["resume", str(old), "--allow-pickle", "--out", out, "-q"], "is damaged"),
        (["resume", str(ckpt), "--model", str(small_folder), "--out", out, "-q"], "written with the model 'toy'"),
        ([*argv, "--checkpoint-every", "2"], "--checkpoint-every only applies with --checkpoint"),
        ([*argv, "--checkpoint", str(ckpt), "--checkpoint-every", "0"], "--checkpoint-every must be ≥ 1"),
        ([*argv, "--checkpoint", str(tmp_path / "no" / "x.ckpt")], "does not exist"),
        ([*argv, "--checkpoint", str(ckpt), "--num-images", "2"], "one image"),
    ]
    for case, message in cases:
        assert exit_code(case) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (case, err)
    assert not Path(out).exists()
