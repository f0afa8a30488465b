"""The checkpoint file (issue 31, items 1, 7 and 9): safetensors plus JSON, read without running any code; an old
pickle checkpoint is refused unless allowed; hostile or damaged files, NaN latents and absurd sizes end as one
error line and no image; a full disk while writing keeps the last good checkpoint. Resume stays bit-identical
for every scheduler the project names, flow-matching ones included."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multidiffusion.adapters.schedulers.names import FLOW_NAMES, make_scheduler
from multidiffusion.core.errors import InvalidInputError, OutputError
from multidiffusion.interfaces.cli.main import main
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.run import checkpoint as checkpoint_module
from multidiffusion.pipeline.run.checkpoint import FORMAT, LEGACY_MAGIC, VERSION, Checkpoint, CheckpointSettings
from multidiffusion.pipeline.run.scheduler_state import SchedulerState
from tests.helpers.cli import exit_code, one_error_line, pixels, recipe

KW = dict(height=32, width=96, window=32, stride=8, num_inference_steps=6, progress=False)
PANORAMA = ["panorama", "red or blue", "--model", "toy", "--window", "32", "--stride", "8", "--steps", "5", "-q"]
PANORAMA += ["--height", "32", "--width", "96", "--seed", "4", "--scheduler", "dpmpp_2m"]


@pytest.fixture(scope="module")
def toy():
    return MultiDiffusionPipeline.from_pretrained("toy")


def interrupted(toy, path: Path, steps: int, scheduler: str = "dpmpp_2m", seed: int = 5) -> None:
    """A run of ``toy`` stopped by Ctrl-C after ``steps`` steps, its checkpoint in ``path``."""

    def callback(state):
        if state.step_index + 1 == steps:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        toy(
            "red or blue",
            generator=torch.Generator().manual_seed(seed),
            scheduler=scheduler,
            checkpoint=CheckpointSettings(path, every=1000),
            callback_on_step_end=callback,
            **KW,
        )


def full_run(toy, scheduler: str = "dpmpp_2m", seed: int = 5):
    return toy("red or blue", generator=torch.Generator().manual_seed(seed), scheduler=scheduler, **KW)


class WritesAMarker:
    """A pickle payload that, when unpickled, creates a file (any code could run the same way)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# --- the format ------------------------------------------------------------------------------------------------


def test_the_file_is_safetensors_with_a_json_record(toy, tmp_path):
    path = tmp_path / "run.ckpt"
    interrupted(toy, path, 3)
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + length])["__metadata__"]
    assert meta["format"] == FORMAT and meta["version"] == str(VERSION) == "2"
    record = json.loads(meta["checkpoint"])
    assert record["step"] == 3 and record["num_steps"] == 6
    assert record["scheduler"]["class"] == "DPMSolverMultistepScheduler"
    assert record["scheduler"]["state"]["_step_index"] == {"value": 3}
    assert record["scheduler"]["state"]["lower_order_nums"] == {"value": 2}
    assert record["recipe"]["prompt"] == ["red or blue"]
    tensors = load_file(path)  # any safetensors reader opens it
    assert tensors["latents"].shape == (1, 3, 32, 96) and tensors["latents"].dtype == torch.float32
    assert tensors["generator_state"].dtype == torch.uint8
    assert {"scheduler.model_outputs.0", "scheduler.model_outputs.1", "scheduler.timesteps"} <= tensors.keys()
    assert b"\x80\x04\x95" not in data and LEGACY_MAGIC not in data  # no pickle stream anywhere
    assert path.stat().st_mode & 0o777 == 0o600  # as before: the owner's only
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("scheduler", FLOW_NAMES)
def test_resume_is_bit_identical_for_every_flow_scheduler(tmp_path_factory, tmp_path, scheduler):
    from tests.helpers.tiny_sd3 import make_sd3_components, save_sd3_folder

    folder = tmp_path_factory.getbasetemp() / "tiny-sd3-checkpoint"
    if not (folder / "model_index.json").is_file():
        save_sd3_folder(make_sd3_components(tmp_path_factory.mktemp("sd3"), seed=0), folder)
    pipe = MultiDiffusionPipeline.from_pretrained(str(folder), device="cpu", dtype="float32")
    kwargs = dict(height=256, width=384, window=256, stride=128, num_inference_steps=4, progress=False)
    full = pipe("a red sky", generator=torch.Generator().manual_seed(3), scheduler=scheduler, **kwargs)
    path = tmp_path / "flow.ckpt"

    def callback(state):
        if state.step_index + 1 == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe(
            "a red sky",
            generator=torch.Generator().manual_seed(3),
            scheduler=scheduler,
            checkpoint=CheckpointSettings(path, every=1000),
            callback_on_step_end=callback,
            **kwargs,
        )
    assert Checkpoint.load(path).step == 2
    done = pipe.resume(path, progress=False)
    assert torch.equal(done.latents, full.latents)


# --- old pickle checkpoints ------------------------------------------------------------------------------------


def test_a_hostile_pickle_checkpoint_runs_no_code(toy, tmp_path, capfd):
    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile.ckpt"
    hostile.write_bytes(LEGACY_MAGIC + pickle.dumps({"recipe": WritesAMarker(marker)}))
    out = tmp_path / "out.png"
    assert exit_code(["resume", str(hostile), "--out", str(out), "-q"]) == 2
    line = one_error_line(capfd)
    assert "old pickle format" in line and "--allow-pickle" in line
    assert not marker.exists() and not out.exists()
    with pytest.raises(InvalidInputError, match="old pickle format"):
        toy.resume(hostile, progress=False)
    with pytest.raises(InvalidInputError, match="old pickle format"):
        Checkpoint.load(hostile)
    assert not marker.exists()
    # the payload is live: reading it as a pickle, which only --allow-pickle does, runs it
    assert exit_code(["resume", str(hostile), "--allow-pickle", "--out", str(out), "-q"]) == 2
    assert "is damaged" in one_error_line(capfd)
    assert marker.exists() and not out.exists()


def test_an_old_pickle_checkpoint_resumes_only_with_allow_pickle(toy, tmp_path):
    path = tmp_path / "run.ckpt"
    interrupted(toy, path, 3)
    ck = Checkpoint.load(path)
    fresh = make_scheduler("dpmpp_2m", toy.model.scheduler_config)
    fresh.set_timesteps(6)
    buffer = io.BytesIO()
    buffer.write(LEGACY_MAGIC)
    torch.save(  # the first version's layout
        {
            "recipe": json.dumps(ck.recipe, sort_keys=True),
            "step": ck.step,
            "num_steps": ck.num_steps,
            "latents": ck.latents,
            "scheduler": ck.scheduler_for(fresh, torch.device("cpu")),
            "generator_state": ck.generator_state,
        },
        buffer,
    )
    old = tmp_path / "old.ckpt"
    old.write_bytes(buffer.getvalue())
    with pytest.raises(InvalidInputError, match="old pickle format"):
        toy.resume(old, progress=False)
    done = toy.resume(old, progress=False, allow_pickle=True)
    assert torch.equal(done.latents, full_run(toy).latents)


# --- non-finite latents (item 7) -------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [2, 6], ids=["mid-run", "after-the-last-step"])
def test_a_checkpoint_with_nan_latents_is_refused(toy, tmp_path, capfd, after):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.png"
    if after < KW["num_inference_steps"]:
        interrupted(toy, ckpt, after)
    else:  # nothing is left to step: the latents go straight to the decoder
        toy("red or blue", generator=torch.Generator().manual_seed(5), scheduler="dpmpp_2m", checkpoint=ckpt, **KW)
    ck = Checkpoint.load(ckpt)
    assert ck.step == after
    latents = ck.latents.clone()
    latents[0, 0, 0, 0] = float("nan")
    broken = tmp_path / "nan.ckpt"
    dataclasses.replace(ck, latents=latents).save(broken)
    capfd.readouterr()
    assert exit_code(["resume", str(broken), "--out", str(out), "-q"]) == 2
    line = one_error_line(capfd)
    assert "non-finite latents" in line and f"after step {after}" in line
    assert not out.exists()
    with pytest.raises(InvalidInputError, match="non-finite latents"):
        toy.resume(broken, progress=False)


# --- hostile or damaged files ----------------------------------------------------------------------------------


def safetensors_file(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_absurd_declared_sizes_are_refused_before_anything_is_allocated(tmp_path, capfd, monkeypatch):
    meta = {"format": FORMAT, "version": "2", "checkpoint": "{}"}
    huge = {"dtype": "F32", "shape": [1, 4, 10**9, 10**9], "data_offsets": [0, 16]}
    bad_dtype = {"dtype": "object", "shape": [1], "data_offsets": [0, 4]}
    short = {"dtype": "F32", "shape": [4], "data_offsets": [0, 4]}
    cases = {
        "huge.ckpt": (safetensors_file({"__metadata__": meta, "latents": huge}, bytes(16)), "damaged"),
        "dtype.ckpt": (safetensors_file({"__metadata__": meta, "latents": bad_dtype}, bytes(4)), "damaged"),
        "short.ckpt": (safetensors_file({"__metadata__": meta, "latents": short}, bytes(4)), "damaged"),
        "header.ckpt": (struct.pack("<Q", 2**62) + b"{}", "is not a multidiffusion checkpoint"),
        "nested.ckpt": (struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000, "is not a multidiffusion"),
        "foreign.ckpt": (safetensors_file({"__metadata__": {"format": "pt"}}), "is not a multidiffusion checkpoint"),
        "newer.ckpt": (safetensors_file({"__metadata__": {**meta, "version": "9"}}), "format version '9'"),
        "no-record.ckpt": (safetensors_file({"__metadata__": meta}), "is damaged"),
    }
    out = tmp_path / "out.png"
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert exit_code(["resume", str(tmp_path / name), "--out", str(out), "-q"]) == 2, name
        assert message in one_error_line(capfd), name
    (tmp_path / "folder.ckpt").mkdir()
    assert exit_code(["resume", str(tmp_path / "folder.ckpt"), "--out", str(out), "-q"]) == 2
    assert "cannot read checkpoint" in one_error_line(capfd)
    os.mkfifo(tmp_path / "fifo.ckpt")  # opening it must not wait for a writer
    for special in (str(tmp_path / "fifo.ckpt"), "/dev/zero"):
        assert exit_code(["resume", special, "--out", str(out), "-q"]) == 2
        assert "not a regular file" in one_error_line(capfd)
    monkeypatch.setattr(checkpoint_module, "MAX_CHECKPOINT_BYTES", 100)
    assert exit_code(["resume", str(tmp_path / "huge.ckpt"), "--out", str(out), "-q"]) == 2
    assert "more than a checkpoint can be" in one_error_line(capfd)
    assert not out.exists()


def altered(toy, tmp_path: Path, change) -> Path:
    """A real checkpoint after 3 steps of DPM-Solver++ with ``change(values, tensors)`` applied to its scheduler
    state (and ``latents``, given as ``tensors["latents"]``)."""
    path = tmp_path / "run.ckpt"
    if not path.exists():
        interrupted(toy, path, 3)
    ck = Checkpoint.load(path)
    values = json.loads(json.dumps(ck.scheduler.values))
    tensors = {"latents": ck.latents.clone(), **{k: v.clone() for k, v in ck.scheduler.tensors.items()}}
    change(values, tensors)
    state = dataclasses.replace(
        ck.scheduler, values=values, tensors={k: v for k, v in tensors.items() if k != "latents"}
    )
    target = tmp_path / "altered.ckpt"
    dataclasses.replace(ck, latents=tensors["latents"], scheduler=state).save(target)
    return target


def test_a_hostile_scheduler_state_is_refused_in_one_line(toy, tmp_path):
    def method(values, tensors):  # a name the class defines as a method: never replaced
        values["step"] = {"value": 1}

    def counter(values, tensors):
        values["_step_index"] = {"value": 10**9}

    def history(values, tensors):  # a multistep history entry of another shape than the canvas
        tensors["scheduler.model_outputs.0"] = torch.zeros(1, 4, 400, 400)

    def nan_history(values, tensors):
        tensors["scheduler.model_outputs.1"] = torch.full_like(tensors["scheduler.model_outputs.1"], float("nan"))

    def timesteps(values, tensors):
        tensors["scheduler.timesteps"] = torch.arange(50)

    def table(values, tensors):  # a schedule table replaced by a number
        values["sigmas"] = {"value": 1.0}
        del tensors["scheduler.sigmas"]

    def swapped(values, tensors):  # the multistep history replaced by a number
        values["model_outputs"] = {"value": 0}
        del tensors["scheduler.model_outputs.0"], tensors["scheduler.model_outputs.1"]

    def canvas(values, tensors):
        tensors["latents"] = torch.zeros(1, 4, 8, 8)

    def batch(values, tensors):  # a million output files would be named before the model loads
        tensors["latents"] = torch.zeros(10**6, 1, 1, 1)

    cases = [
        (method, "step: not an attribute of DPMSolverMultistepScheduler"),
        (counter, "counter 1000000000 out of range"),
        (history, "model_outputs: shape (1, 4, 400, 400)"),
        (nan_history, "model_outputs: not finite"),
        (timesteps, "timesteps: shape (50,)"),
        (table, "sigmas: not a tensor"),
        (swapped, "model_outputs: a list and a single value swapped"),
        (canvas, "does not fit this model's"),
        (batch, "its latents hold 1000000 canvases, its recipe 1"),
    ]
    for change, message in cases:
        path = altered(toy, tmp_path, change)
        with pytest.raises(InvalidInputError) as info:
            toy.resume(path, progress=False)
        assert message in str(info.value) and "\n" not in str(info.value), (change.__name__, info.value)


def test_the_scheduler_class_is_never_taken_from_the_file(toy, tmp_path):
    def other_class(values, tensors):
        pass

    path = altered(toy, tmp_path, other_class)
    ck = Checkpoint.load(path)
    state = dataclasses.replace(ck.scheduler, class_name="os")
    assert isinstance(state, SchedulerState)
    with pytest.raises(InvalidInputError, match="scheduler does not match"):
        toy.resume(dataclasses.replace(ck, scheduler=state), progress=False)


# --- a full disk (item 9) --------------------------------------------------------------------------------------


def disk_fills_after(monkeypatch, good_writes: int) -> list[int]:
    """Make ``os.write`` to checkpoint temporaries fail with ENOSPC after ``good_writes`` whole checkpoints."""
    real, done = os.write, []

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            if len(done) >= good_writes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done.append(fd)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return done


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capfd):
    full, done, ckpt = tmp_path / "full.png", tmp_path / "done.png", tmp_path / "run.ckpt"
    assert main([*PANORAMA, "--out", str(full)]) == 0
    capfd.readouterr()
    with monkeypatch.context() as m:
        disk_fills_after(m, 2)
        assert exit_code([*PANORAMA, "--out", str(done), "--checkpoint", str(ckpt)]) == 1
    line = one_error_line(capfd)
    assert "No space left on device" in line and "after step 3" in line and "still holds step 2" in line
    assert not done.exists() and not list(tmp_path.glob(".*.tmp"))
    assert Checkpoint.load(ckpt).step == 2
    assert main(["resume", str(ckpt), "--out", str(done), "-q"]) == 0  # space again: it finishes
    assert pixels(done) == pixels(full) and recipe(done) == recipe(full)


def test_saving_onto_a_full_disk_leaves_the_old_file_whole(toy, tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    interrupted(toy, path, 3)
    before = path.read_bytes()
    ck = Checkpoint.load(path)
    with monkeypatch.context() as m:
        disk_fills_after(m, 0)
        with pytest.raises(OutputError) as info:
            dataclasses.replace(ck, step=4).save(path)
    assert "No space left on device" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
