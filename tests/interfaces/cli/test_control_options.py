"""Control and customisation from the command line and the layout JSON: every flag runs end to end on the tiny SD
model and is recorded in the PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import exit_code, pixels, recipe
from tests.helpers.tiny_control import guide_image, save_network, tiny_controlnet
from tests.helpers.tiny_lora import save_embedding, save_lora

RUN = ["--steps", "2", "-q", "--seed", "3"]


@pytest.fixture(scope="module")
def files(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("custom")
    guide_image(128, 256, seed=1).save(root / "edges.png")
    guide_image(64, 96, seed=2).save(root / "photo.png")
    dim = small["text_encoder"].config.hidden_size
    return {
        "cn": save_network(tiny_controlnet(small["unet"], seed=3), root / "cn"),
        "edges": root / "edges.png",
        "photo": root / "photo.png",
        "lora": save_lora(StableDiffusionPipeline, small, root / "style.safetensors", seed=4),
        "embedding": save_embedding(root / "glow.safetensors", 2, dim, seed=5),
    }


def test_panorama_with_controlnet_lora_and_embedding(small_folder, files, tmp_path):
    base = ["panorama", "a glow castle", "--model", str(small_folder), "--height", "128", "--width", "256", *RUN]
    plain, custom = tmp_path / "plain.png", tmp_path / "custom.png"
    assert exit_code([*base, "--out", str(plain)]) == 0
    argv = [
        *base,
        "--out",
        str(custom),
        "--controlnet",
        str(files["cn"]),
        "--control-image",
        str(files["edges"]),
        "--control-scale",
        "0.8",
        "--control-end",
        "0.5",
        "--lora",
        f"{files['lora']}:0.7",
        "--embedding",
        str(files["embedding"]),
    ]
    assert exit_code(argv) == 0
    assert pixels(custom) != pixels(plain)
    record = recipe(custom)["customisation"]
    assert record["control"][0]["model"] == "cn" and record["control"][0]["scale"] == 0.8
    assert record["control"][0]["end"] == 0.5 and record["control"][0]["image"]["name"] == "edges.png"
    assert record["loras"] == ["style.safetensors:0.7"]
    assert record["embeddings"] == ["glow.safetensors:glow"]


def test_upscale_takes_its_input_as_the_control_image(small_folder, files, tmp_path):
    """ControlNet tile: --controlnet without --control-image is guided by the enlarged input."""
    out = tmp_path / "up.png"
    argv = ["upscale", str(files["photo"]), "--scale", "2", "--model", str(small_folder), "--out", str(out), *RUN]
    assert exit_code([*argv, "--controlnet", str(files["cn"])]) == 0
    assert recipe(out)["customisation"]["control"][0]["image"] == "input image"


def test_layout_gives_a_region_its_own_controlnet_and_lora(small_folder, files, tmp_path):
    layout = {
        "width": 256,
        "height": 128,
        "background": "a meadow",
        "regions": [
            {
                "prompt": "a castle",
                "box": [0, 0, 128, 128],
                "control": [{"model": str(files["cn"]), "image": "edges.png", "scale": 0.9}],
                "loras": [{"path": "style.safetensors", "scale": 0.6}],
            }
        ],
    }
    path = files["edges"].parent / "layout.json"  # image and LoRA paths are relative to the layout file
    path.write_text(json.dumps(layout))
    out = tmp_path / "regions.png"
    assert (
        exit_code(["regions", "--regions-file", str(path), "--model", str(small_folder), "--out", str(out), *RUN]) == 0
    )
    record = recipe(out)["customisation"]
    assert record["region_control"][1][0]["scale"] == 0.9  # condition 0 is the background
    assert record["region_loras"] == [[], ["style.safetensors:0.6"]]


def test_reproducing_a_customised_run_is_refused_with_one_line(small_folder, files, tmp_path, capfd):
    from tests.helpers.cli import one_error_line

    out = tmp_path / "c.png"
    base = ["panorama", "a castle", "--model", str(small_folder), "--height", "128", "--width", "128", *RUN]
    assert exit_code([*base, "--out", str(out), "--lora", str(files["lora"])]) == 0
    capfd.readouterr()
    assert exit_code(["reproduce", str(out), "--out", str(tmp_path / "again.png"), "-q"]) == 2
    assert "LoRA" in one_error_line(capfd) and not (tmp_path / "again.png").exists()
