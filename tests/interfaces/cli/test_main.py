"""The command line end to end on a tiny model folder saved with ``save_pretrained``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from multidiffusion.interfaces.cli.main import main
from tests.helpers.cli import FAST, assert_one_line_error, exit_code


def test_panorama_writes_png_with_metadata(small_folder, tmp_path, capsys):
    out = tmp_path / "pano.png"
    code = main(
        [
            "panorama",
            "a red sky",
            "--model",
            str(small_folder),
            "--out",
            str(out),
            "--seed",
            "7",
            "--negative-prompt",
            "blur",
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    image = Image.open(out)
    assert image.size == (384, 128)
    meta = json.loads(image.text["multidiffusion"])
    assert meta["seed"] == 7 and meta["prompt"] == ["a red sky"] and meta["negative_prompt"] == ["blur"]
    assert meta["width"] == 384 and meta["num_inference_steps"] == 2
    # the folder's name and its weights' hash, never the user's absolute path (issue item 14)
    assert meta["model"] == small_folder.name and str(small_folder) not in image.text["parameters"]
    assert len(meta["model_sha256"]) == 64 and f"Model hash: {meta['model_sha256'][:10]}" in image.text["parameters"]
    params = image.text["parameters"]
    assert params.startswith("a red sky\nNegative prompt: blur\nSteps: 2, Sampler: ddim")
    assert "Seed: 7" in params and "Size: 384x128" in params
    assert not [p for p in tmp_path.iterdir() if p.name != "pano.png"]  # no temporary file left behind

    again = tmp_path / "again.png"
    assert (
        main(
            [
                "panorama",
                "a red sky",
                "--model",
                str(small_folder),
                "--out",
                str(again),
                "--seed",
                "7",
                "--negative-prompt",
                "blur",
                *FAST,
            ]
        )
        == 0
    )
    assert Image.open(again).tobytes() == image.tobytes()  # the metadata regenerates the image


@pytest.mark.heavy
def test_console_script_and_progress(small_folder, tmp_path):
    out = tmp_path / "p.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "multidiffusion",
            "panorama",
            "sky",
            "--model",
            str(small_folder),
            "--out",
            str(out),
            "--height",
            "128",
            "--width",
            "256",
            "--steps",
            "2",
            "--tile",
            "x",
            "--weights",
            "feathered",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "denoising" in proc.stderr and "seed: " in proc.stderr and "Traceback" not in proc.stderr
    # one progress display of our own: loading, denoising with an ETA, decoding; none of the libraries' bars
    err = proc.stderr
    assert "loaded the stable-diffusion model in" in err and "ETA" in err and "decoding" in err
    assert "Loading pipeline components" not in err and "Loading weights" not in err and "torchvision" not in err
    assert json.loads(Image.open(out).text["multidiffusion"])["tile"] == "x"


BAD = [
    (["--height", "0"], "height must be a positive"),
    (["--width", "-8"], "width must be a positive"),
    (["--height", "100"], "height must be a multiple of 8"),
    (["--stride", "0"], "stride must be a positive"),
    (["--stride", "-8"], "stride must be a positive"),
    (["--window", "128", "--stride", "256"], "must not exceed the window"),
    (["--stride", "256"], "must not exceed the window"),
    (["--window", "100"], "window must be a multiple of 8"),
    (["--scheduler", "foo"], "unknown scheduler 'foo'; choose one of:"),
    (["--steps", "0"], "steps must be an integer ≥ 1"),
    (["--guidance", "-1"], "guidance scale must be ≥ 0"),
    (["--weights", "spiky"], "invalid choice"),
    (["--dtype", "int8"], "invalid choice"),
    (["--steps", "many"], "invalid int value"),
    (["--view-batch-size", "0"], "view-batch-size must be ≥ 1"),
    (["--guidance-rescale", "2"], "guidance rescale must be in [0, 1]"),
    (["--device", "toaster"], "unknown device 'toaster'"),
    (["--model", "toy:ell=-1"], "ell"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_options_exit_2_without_file(small_folder, tmp_path, capfd, extra, message):
    out = tmp_path / "x.png"
    assert exit_code(["panorama", "sky", "--model", str(small_folder), "--out", str(out), *FAST, *extra]) == 2
    assert_one_line_error(capfd, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("prompt", "out", "model", "message"),
    [
        ("sky", "x.jpg", None, "must end in .png"),
        ("sky", "notes.txt/x.png", None, "is not a folder"),
        ("sky", ".", None, "must end in .png"),
        ("sky", "x.png", "/no/such/model", "does not exist"),
        ("sky", "x.png", "EMPTY", "holds no diffusers model"),
        ("sky", "x.png", "NOTCKPT", "is not a checkpoint"),
        ("   ", "x.png", None, "PROMPT is empty"),
    ],
)
def test_bad_paths_and_prompt_exit_2(small_folder, tmp_path, capfd, prompt, out, model, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    model = {None: str(small_folder), "EMPTY": str(tmp_path / "empty"), "NOTCKPT": str(tmp_path / "notes.txt")}.get(
        model, model
    )
    before = set(tmp_path.rglob("*"))
    code = main(["panorama", prompt, "--model", model, "--out", str(tmp_path / out), *FAST])
    assert code == 2
    assert_one_line_error(capfd, message)
    assert set(tmp_path.rglob("*")) == before


def test_output_folder_is_rejected_before_the_model_loads(tmp_path, capfd):
    folder = tmp_path / "pano.png"
    folder.mkdir()
    assert main(["panorama", "sky", "--model", "/no/such/model", "--out", str(folder), "-q"]) == 2
    assert_one_line_error(capfd, "is a folder")


def test_hub_model_offline_is_a_clear_error(tmp_path, capfd):
    code = main(["panorama", "sky", "--model", "nobody/no-such-model", "--out", str(tmp_path / "x.png"), "-q"])
    assert code == 2
    assert_one_line_error(capfd, "model 'nobody/no-such-model' is not in the local cache and HF_HUB_OFFLINE is set")
    assert not (tmp_path / "x.png").exists()


def test_failing_write_leaves_no_file(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from multidiffusion.pipeline.files.png import save_png

    target = tmp_path / "a.png"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", boom)
    with pytest.raises(OSError):
        save_png(PILImage.new("RGB", (2, 2)), target, {"k": "v"})
    assert list(tmp_path.iterdir()) == []


def test_version_and_help():
    proc = subprocess.run(
        [sys.executable, "-m", "multidiffusion", "panorama", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "--view-batch-size" in proc.stdout
    assert Path(sys.executable).exists()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_top_level_help_loads_no_torch(argv):
    """``multidiffusion --help`` lists every command without importing a command's module, so neither torch nor
    diffusers loads (it took 2.4 s when it did; docs/cli.md is the full parser's help, built with every module)."""
    code = (
        "import sys\n"
        "from multidiffusion.interfaces.cli.main import COMMANDS, main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL') if m in sys.modules)\n"
        "print('heavy', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "heavy []" in proc.stdout, proc.stdout + proc.stderr
    if argv == ["--help"]:
        from multidiffusion.interfaces.cli.main import COMMANDS

        assert "exit 0" in proc.stdout
        assert all(name in proc.stdout for name in COMMANDS)
    elif not argv:  # no command: one usage line, exit 2
        assert "exit 2" in proc.stdout and "required: COMMAND" in proc.stderr


def test_every_command_module_adds_and_runs():
    """Each table entry names functions that exist, and the full parser gives each command its own options."""
    from multidiffusion.interfaces.cli.main import COMMANDS, build_parser

    for command in COMMANDS.values():
        assert callable(command.function(command.add)) and callable(command.function(command.run))
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert len(p._actions) > 1, name  # more than -h
