"""``reproduce`` of a run with ControlNets, LoRAs and embeddings (issue 30, item 7): the PNG records each file by
its own name and SHA-256, and ``--controlnet-dir``, ``--lora-dir``, ``--embedding-dir`` (or the model's own
folder) find it again; a file that is missing or differs is one line, exit 2, nothing written. Also the window a
small canvas used (not the one asked for) is what the PNG records, and it reproduces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import assert_one_line_error, exit_code, pixels, recipe
from tests.helpers.tiny_control import guide_image, save_network, tiny_controlnet
from tests.helpers.tiny_lora import save_embedding, save_lora
from tests.helpers.tiny_models import save_model_folder

RUN = ["--steps", "2", "-q", "--seed", "3"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (shared fixture)."""


@pytest.fixture(scope="module")
def files(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ControlNet and its guide image, a LoRA and an embedding, each kind in a folder of its own."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("made-with")
    control, loras, embeddings = root / "control", root / "loras", root / "embeddings"
    for folder in (control, loras, embeddings):
        folder.mkdir()
    guide_image(128, 256, seed=1).save(control / "edges.png")
    dim = small["text_encoder"].config.hidden_size
    return {
        "cn": save_network(tiny_controlnet(small["unet"], seed=3), control / "cn"),
        "edges": control / "edges.png",
        "lora": save_lora(StableDiffusionPipeline, small, loras / "style.safetensors", seed=4),
        "other_lora": save_lora(StableDiffusionPipeline, small, root / "other.safetensors", seed=6),
        "embedding": save_embedding(embeddings / "glow.safetensors", 2, dim, seed=5),
    }


@pytest.fixture(scope="module")
def customised(small_folder: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A panorama made with a ControlNet (and guide image), a LoRA at 0.7 and an embedding."""
    out = tmp_path_factory.mktemp("customised") / "custom.png"
    argv = ["panorama", "a glow castle", "--model", str(small_folder), "--height", "128", "--width", "256", *RUN]
    argv += ["--controlnet", str(files["cn"]), "--control-image", str(files["edges"]), "--control-scale", "0.8"]
    argv += ["--lora", f"{files['lora']}:0.7", "--embedding", str(files["embedding"]), "--out", str(out)]
    assert exit_code(argv) == 0
    return out


def _folders(files: dict[str, Path]) -> list[str]:
    return [
        *("--controlnet-dir", str(files["cn"].parent)),
        *("--lora-dir", str(files["lora"].parent)),
        *("--embedding-dir", str(files["embedding"].parent)),
    ]


def test_the_png_records_each_file_by_name_and_sha256_never_a_folder(customised, files):
    from multidiffusion.adapters.loading.fingerprint import weights_sha256

    record = recipe(customised)["customisation"]
    assert record["loras"] == ["style.safetensors:0.7"] and record["embeddings"] == ["glow.safetensors:glow"]
    assert record["control"][0]["model"] == "cn" and record["control"][0]["image"]["name"] == "edges.png"
    assert record["sha256"] == {
        "controlnet": {"cn": weights_sha256(files["cn"])},
        "lora": {"style.safetensors": weights_sha256(files["lora"])},
        "embedding": {"glow.safetensors": weights_sha256(files["embedding"])},
    }
    text = json.dumps(recipe(customised))
    assert str(files["lora"].parent) not in text and str(files["cn"].parent) not in text


def test_reproduce_finds_the_files_in_the_folders_given_and_is_pixel_identical(
    customised, files, small_folder, tmp_path
):
    again = tmp_path / "again.png"
    argv = ["reproduce", str(customised), "--model", str(small_folder), *_folders(files), "--out", str(again), "-q"]
    assert exit_code(argv) == 0
    assert pixels(again) == pixels(customised)
    assert recipe(again)["customisation"] == recipe(customised)["customisation"]


def test_a_missing_file_is_one_line_naming_the_option_and_nothing_is_written(customised, files, small_folder, capfd):
    again = customised.with_name("missing.png")
    capfd.readouterr()
    folders = ["--controlnet-dir", str(files["cn"].parent), "--embedding-dir", str(files["embedding"].parent)]
    argv = ["reproduce", str(customised), "--model", str(small_folder), *folders, "--out", str(again)]
    assert exit_code(argv) == 2
    assert_one_line_error(capfd, "'style.safetensors'")
    assert not again.exists()
    assert exit_code([*argv, "--lora-dir", str(files["embedding"].parent)]) == 2  # a folder without it
    assert_one_line_error(capfd, "none of the folders given with --lora-dir")
    assert not again.exists()


def test_a_file_whose_hash_differs_is_one_line_and_nothing_is_written(customised, files, small_folder, tmp_path, capfd):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(files["other_lora"], swapped / "style.safetensors")  # the same name, another LoRA
    again = tmp_path / "again.png"
    folders = ["--controlnet-dir", str(files["cn"].parent), "--embedding-dir", str(files["embedding"].parent)]
    argv = ["reproduce", str(customised), "--model", str(small_folder), *folders, "--lora-dir", str(swapped)]
    capfd.readouterr()
    assert exit_code([*argv, "--out", str(again)]) == 2
    assert_one_line_error(capfd, "not the recorded")
    assert not again.exists()


def test_a_changed_guide_image_is_refused_before_loading(customised, files, small_folder, tmp_path, capfd):
    control = tmp_path / "control"
    shutil.copytree(files["cn"], control / "cn")
    guide_image(128, 256, seed=9).save(control / "edges.png")  # the same name, other pixels
    folders = ["--lora-dir", str(files["lora"].parent), "--embedding-dir", str(files["embedding"].parent)]
    again = tmp_path / "again.png"
    argv = ["reproduce", str(customised), "--model", str(small_folder), *folders, "--controlnet-dir", str(control)]
    capfd.readouterr()
    assert exit_code([*argv, "--out", str(again)]) == 2
    assert_one_line_error(capfd, "'edges.png'")
    assert not again.exists()


def test_a_lora_beside_the_model_is_found_without_a_folder_option(small_folder, files, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_folder, model)
    shutil.copy(files["lora"], model / "style.safetensors")
    out, again = tmp_path / "beside.png", tmp_path / "again.png"
    base = ["panorama", "a castle", "--model", str(model), "--height", "128", "--width", "128", *RUN]
    assert exit_code([*base, "--lora", f"{model / 'style.safetensors'}:0.5", "--out", str(out)]) == 0
    assert exit_code(["reproduce", str(out), "--model", str(model), "--out", str(again), "-q"]) == 0
    assert pixels(again) == pixels(out)


def test_a_region_controlnet_and_lora_reproduce(small_folder, files, tmp_path):
    layout = {
        "width": 256,
        "height": 128,
        "background": "a meadow",
        "regions": [
            {
                "prompt": "a castle",
                "box": [0, 0, 128, 128],
                "control": [{"model": "control/cn", "image": "control/edges.png", "scale": 0.9}],
                "loras": [{"path": "loras/style.safetensors", "scale": 0.6}],
            }
        ],
    }
    path = files["cn"].parent.parent / "layout.json"  # a layout names files in its own folder or below it
    path.write_text(json.dumps(layout))
    out, again = tmp_path / "regions.png", tmp_path / "again.png"
    argv = ["regions", "--regions-file", str(path), "--model", str(small_folder), "--out", str(out), *RUN]
    assert exit_code(argv) == 0
    argv = ["reproduce", str(out), "--model", str(small_folder), *_folders(files), "--out", str(again), "-q"]
    assert exit_code(argv) == 0
    assert pixels(again) == pixels(out)


def test_a_folder_option_that_is_not_a_folder_is_one_line(customised, small_folder, tmp_path, capfd):
    again = tmp_path / "again.png"
    argv = ["reproduce", str(customised), "--model", str(small_folder), "--lora-dir", str(tmp_path / "nowhere")]
    capfd.readouterr()
    assert exit_code([*argv, "--out", str(again)]) == 2
    assert_one_line_error(capfd, "--lora-dir")
    assert not again.exists()


def test_a_small_canvas_records_the_window_it_used_and_reproduces(tiny, tmp_path):
    """The tiny model's native window is 512 px; a 64 × 192 canvas has views of 64 × 192 px: one view."""
    folder = save_model_folder(tiny, tmp_path / "tiny-512")
    out, again = tmp_path / "small.png", tmp_path / "again.png"
    argv = ["panorama", "dunes", "--model", str(folder), "--height", "64", "--width", "192", *RUN, "--out", str(out)]
    assert exit_code(argv) == 0
    made = recipe(out)
    assert made["window"] == 192 and made["stride"] == 64
    assert "MultiDiffusion window: 192" in _parameters(out)
    assert exit_code(["reproduce", str(out), "--model", str(folder), "--out", str(again), "-q"]) == 0
    assert pixels(again) == pixels(out)


def _parameters(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.text["parameters"]


def test_resume_and_batch_find_the_files_too(small_folder, files, tmp_path, capfd):
    """A checkpointed LoRA run resumes with --lora-dir; a jobs file of its recipe is made with --lora-dir."""
    out, ckpt = tmp_path / "run.png", tmp_path / "run.ckpt"
    base = ["panorama", "a castle", "--model", str(small_folder), "--height", "128", "--width", "128", *RUN]
    lora = ["--lora", f"{files['lora']}:0.7"]
    assert exit_code([*base, *lora, "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    folder = ["--lora-dir", str(files["lora"].parent)]
    resumed = tmp_path / "resumed.png"
    capfd.readouterr()
    assert exit_code(["resume", str(ckpt), "--model", str(small_folder), "--out", str(resumed), "-q"]) == 2
    assert_one_line_error(capfd, "--lora-dir")
    assert exit_code(["resume", str(ckpt), "--model", str(small_folder), *folder, "--out", str(resumed), "-q"]) == 0
    assert pixels(resumed) == pixels(out)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({**recipe(out), "out": "job.png"}) + "\n")
    assert exit_code(["batch", str(jobs), "--model", str(small_folder), *folder, "-q"]) == 0
    assert pixels(tmp_path / "job.png") == pixels(out)
