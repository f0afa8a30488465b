"""A new user's first hour: one clear line for every mistake, nothing false or noisy on the way, files as
an ordinary write would make them (issue items 1–7, 9, 10, 12 and 15)."""

from __future__ import annotations

import json
import os
import stat
import warnings
from types import MappingProxyType

import numpy as np
import pytest
import torch
from PIL import Image

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli.main import build_parser, main
from multidiffusion.pipeline import MultiDiffusionPipeline, ViewSettings
from tests.helpers.cli import exit_code, one_error_line, pixels

TOY = ["--model", "toy", "--height", "32", "--width", "96", "--window", "32", "--stride", "8", "--steps", "3", "-q"]


@pytest.fixture()
def no_loading(monkeypatch):
    """Any model load fails the test: the check under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(MultiDiffusionPipeline, "from_pretrained", refuse)


# 1. The default model with no network: one line that says what to do.
def test_default_model_offline_is_one_line_with_what_to_do(tmp_path, capfd):
    out = tmp_path / "dolomites.png"
    assert exit_code(["panorama", "a photo of the dolomites", "--out", str(out)]) == 2
    line = one_error_line(capfd)
    assert "stabilityai/stable-diffusion-2-base" in line and "not in the local cache" in line
    assert "--model toy" in line and "HF_HUB_OFFLINE" in line and "stacktrace" not in line
    assert not out.exists()


# 2. Output files get the mode an ordinary write gives them.
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_png_mode_follows_the_umask(tmp_path, umask, mode):
    from multidiffusion.pipeline.files.png import save_png

    before = os.umask(umask)
    try:
        save_png(Image.new("RGB", (2, 2)), tmp_path / "a.png", {"k": "v"})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == mode


def test_png_replacing_a_file_keeps_its_mode_and_long_names_work(tmp_path):
    from multidiffusion.pipeline.files.png import save_png

    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    target.chmod(0o640)
    save_png(Image.new("RGB", (2, 2)), target, {"k": "v"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and Image.open(target).size == (2, 2)
    long = tmp_path / ("x" * 250 + ".png")  # 254 bytes: the temporary name must not add to it
    save_png(Image.new("RGB", (2, 2)), long, {"k": "v"})
    assert long.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, long.name])


# 3. and 4. float16 on the CPU: one true warning, none of diffusers' false ones, no library bars.
def test_loading_is_quiet_and_float16_on_cpu_warns_once(small_folder, capfd):
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = MultiDiffusionPipeline.from_pretrained(str(small_folder), dtype="float16", device="cpu")
    err = capfd.readouterr().err
    assert "cannot run" not in err and "Loading pipeline components" not in err and "Loading weights" not in err
    assert "torchvision" not in err, err
    ours = [w for w in caught if "float16 on the CPU" in str(w.message)]
    assert len(ours) == 1 and pipe.model.dtype == torch.float16


def test_progress_eta_weighs_synchronised_steps():
    from multidiffusion.pipeline.run.progress import HEAVY_STEP_RATIO, StepProgress

    now = [0.0]
    bar = StepProgress(6, heavy=lambda i: i < 2, enabled=False, clock=lambda: now[0])
    assert bar.eta() is None
    now[0] = 8.0
    bar.step(0)  # one synchronised step took 8 s
    assert bar.eta() == pytest.approx(8.0 + 4 * 8.0 / HEAVY_STEP_RATIO)
    now[0] = 16.0
    bar.step(1)
    now[0] = 17.0
    bar.step(2)  # a plain step took 1 s: the rest are plain
    assert bar.eta() == pytest.approx(3 * 1.0)
    bar.close()


# 5. Everything that can be checked is checked before the model loads.
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sync-weight", "3"], "--sync-weight only applies with --sync"),
        (["--sync-stop-step", "2", "--sync-loss", "builtin"], "--sync-stop-step, --sync-loss only apply with --sync"),
        (["--sync-checkpointing"], "--sync-checkpointing only applies with --sync"),
        (["--sync", "--layout", "shifted"], "SyncDiffusion runs on a fixed sliding-window layout"),
        (["--layout", "half-overlap", "--stride", "64"], "sets the stride and weights"),
        (["--seed", "1e30"], "--seed: must be a whole number"),
        (["--seed", str(2**64)], "--seed: must be in 0…18446744073709551615"),
        (["--num-images", "0"], "--num-images must be in 1…"),
        (["--config", "x"], "--config describes a single-file checkpoint"),
        (["--tile", "z"], "invalid choice"),
    ],
)
def test_bad_options_fail_before_loading(no_loading, tmp_path, capfd, extra, message):
    out = tmp_path / "x.png"
    assert exit_code(["panorama", "sky", "--model", "toy", "--out", str(out), *extra]) == 2
    assert message in one_error_line(capfd)
    assert not out.exists()


def test_lpips_missing_fails_before_loading(no_loading, tmp_path, capfd):
    pytest.importorskip("torch")
    try:
        import lpips  # noqa: F401

        pytest.skip("lpips is installed here")
    except ImportError:
        pass
    out = tmp_path / "x.png"
    assert exit_code(["panorama", "sky", "--model", "toy", "--sync", "--sync-loss", "lpips", "--out", str(out)]) == 2
    line = one_error_line(capfd)
    assert "LPIPS is not available" in line and "--sync-loss builtin" in line and "seed" not in line


def test_seed_minus_one_is_random(tmp_path, capfd):
    out = tmp_path / "x.png"
    assert main(["panorama", "sky", *TOY[:-1], "--seed", "-1", "--out", str(out)]) == 0
    seed_line = [line for line in capfd.readouterr().err.splitlines() if line.startswith("seed: ")]
    recorded = json.loads(Image.open(out).text["multidiffusion"])["seed"]
    assert seed_line == [f"seed: {recorded}"] and 0 <= recorded < 2**32


# 6. The help names the toy model; errors speak in pixels.
def test_model_help_names_toy_and_uncovered_regions_speak_pixels():
    help_text = build_parser()._subparsers._group_actions[0].choices["panorama"].format_help()
    assert "'toy'" in help_text and "no weights" in help_text
    from multidiffusion.core.features.regions import Region

    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    with pytest.raises(InvalidInputError, match=r"leave 256 px uncovered .*\[0, 0, 16, 16\] px") as info:
        pipe.check_regions(
            [Region("red", box=(16, 0, 64, 32)), Region("blue", box=(0, 16, 16, 32))], None, height=32, width=64
        )
    assert "latent cell" not in str(info.value)


# 7. A stride equal to the window warns that views will not blend.
def test_stride_equal_to_window_warns():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    with pytest.warns(UserWarning, match="views will not overlap or blend"):
        pipe.settings("sky", height=64, width=256, views=ViewSettings(stride=64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.settings("sky", height=64, width=256, views=ViewSettings(stride=16))
        pipe.settings("sky", height=64, width=64, views=ViewSettings(stride=64))  # one view: nothing to blend
        pipe.settings("sky", height=64, width=256, views=ViewSettings(layout="shifted"))  # shifted tiles: by design


# 9. Region masks as PIL images, NumPy arrays and tensors.
def test_region_masks_accept_pil_numpy_and_tensors():
    from multidiffusion.core.features.regions import Region, mask_tensor, pixel_mask

    reference = torch.zeros(8, 12)
    reference[2:6, 3:9] = 1.0
    as_uint8 = (reference.numpy() * 255).astype(np.uint8)
    inputs = {
        "float tensor": reference,
        "channel-first tensor": reference.expand(3, 8, 12),
        "bool array": reference.numpy() > 0.5,
        "uint8 array": as_uint8,
        "uint8 RGB array": np.repeat(as_uint8[..., None], 3, axis=2),
        "uint16 array": (reference.numpy() * 65535).astype(np.uint16),
        "PIL L": Image.fromarray(as_uint8),
        "PIL 1": Image.fromarray(as_uint8).convert("1"),
        "PIL RGB": Image.fromarray(as_uint8).convert("RGB"),
        "PIL RGBA painted on transparency": Image.fromarray(np.dstack([np.full((8, 12, 3), 200, np.uint8), as_uint8])),
    }
    for name, mask in inputs.items():
        got = pixel_mask(Region("x", mask=mask), 8, 12, name)
        assert torch.equal(got, reference), name
    soft = mask_tensor(np.full((2, 2), 0.25, np.float32))
    assert torch.equal(soft, torch.full((2, 2), 0.25))
    for bad, message in [
        (np.full((8, 12), 255.0), r"float mask values must lie in \[0, 1\].*uint8"),
        (np.full((8, 12), 7, np.int64), "integer masks are uint8"),
        ([[0, 1]], "must be a torch tensor, a NumPy array or a PIL image"),
        (np.zeros((8, 12, 5)), "has 5 channels"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            pixel_mask(Region("x", mask=bad), 8, 12)


# 10. Any diffusers scheduler: an instance or a class name, as well as the short names.
def test_scheduler_instances_and_class_names():
    import diffusers

    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    config = dict(pipe.model.scheduler_config)

    def run(scheduler):
        return pipe(
            "sky",
            height=32,
            width=64,
            window=32,
            stride=8,
            num_inference_steps=4,
            scheduler=scheduler,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )

    short = run("dpmpp_2m_karras")
    instance = diffusers.DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    )
    by_instance = run(instance)
    assert torch.equal(short.latents, by_instance.latents)
    assert by_instance.metadata.settings.scheduler == "DPMSolverMultistepScheduler"
    assert by_instance.metadata.settings.scheduler_config["use_karras_sigmas"] is True
    assert torch.equal(run("euler").latents, run("EulerDiscreteScheduler").latents)
    assert run("KDPM2DiscreteScheduler").latents.shape == short.latents.shape
    with pytest.raises(InvalidInputError, match="unknown scheduler 'NoSuchScheduler'"):
        run("NoSuchScheduler")

    class Imitation:
        config = MappingProxyType({})

        def set_timesteps(self, *a): ...

        def step(self, *a): ...

    with pytest.raises(InvalidInputError, match="is not a diffusers scheduler"):
        run(Imitation())


# 12. --config reaches the single-file loader.
def test_config_option_reaches_the_single_file_loader(small_folder, tmp_path, monkeypatch, capfd):
    from multidiffusion.adapters.families import registry, sd

    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"not really")
    seen = {}

    def fake(path, dtype, device, config=None):
        seen.update(path=path, config=config)
        raise InvalidInputError("stop here")

    monkeypatch.setattr(sd, "load_single_file", fake)
    monkeypatch.setattr(registry, "family_of_checkpoint", lambda path: registry.family_named("stable-diffusion"))
    out = tmp_path / "x.png"
    argv = ["panorama", "sky", "--model", str(checkpoint), "--config", str(small_folder), "--out", str(out), "-q"]
    assert exit_code(argv) == 2
    assert seen == {"path": str(checkpoint), "config": str(small_folder)}
    capfd.readouterr()
    (tmp_path / "empty").mkdir()
    argv[5] = str(tmp_path / "empty")
    assert exit_code(argv) == 2
    assert "holds no diffusers model" in one_error_line(capfd)


# 15. Several images with consecutive seeds; regions get --tile x and --layout.
def test_num_images_writes_numbered_files_with_consecutive_seeds(tmp_path):
    out = tmp_path / "sky.png"
    assert main(["panorama", "sky", *TOY, "--seed", "5", "--num-images", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sky-0.png", "sky-1.png"]
    for i in range(2):
        assert json.loads(Image.open(tmp_path / f"sky-{i}.png").text["multidiffusion"])["seed"] == 5 + i
    single = tmp_path / "one.png"
    assert main(["panorama", "sky", *TOY, "--seed", "6", "--out", str(single)]) == 0
    assert pixels(single) == pixels(tmp_path / "sky-1.png")


def test_regions_take_circular_and_named_layouts(tmp_path, capfd):
    layout = tmp_path / "layout.json"
    layout.write_text(
        json.dumps(
            {"width": 128, "height": 32, "background": "blue", "regions": [{"prompt": "red", "box": [0, 0, 32, 32]}]}
        )
    )
    base = ["regions", "--regions-file", str(layout), "--model", "toy", "--window", "32", "--steps", "3", "-q"]
    out = tmp_path / "r.png"
    assert main([*base, "--tile", "x", "--layout", "half-overlap", "--out", str(out)]) == 0
    meta = json.loads(Image.open(out).text["multidiffusion"])
    assert meta["tile"] == "x" and meta["layout"] == "half-overlap" and meta["stride"] == 16
    assert meta["weights"] == "gaussian"
    assert exit_code([*base, "--layout", "shifted", "--out", str(tmp_path / "s.png")]) == 2
    assert "regions need a fixed layout" in one_error_line(capfd)


def test_seed_sequence_wraps_and_minus_one_overrides_a_layout_seed():
    from multidiffusion.interfaces.cli.launch import seeds as _seeds
    from multidiffusion.interfaces.cli.options import RANDOM_SEED

    assert _seeds(5, 3) == [5, 6, 7] and _seeds(2**64 - 1, 2) == [2**64 - 1, 0]
    assert all(0 <= s < 2**32 for s in _seeds(RANDOM_SEED, 1) + _seeds(None, 1))
