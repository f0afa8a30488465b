"""``multidiffusion eval``: FID, KID, GIQA, CLIP score with tiny random extractors (no downloads), checked by number."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multidiffusion.adapters.metrics.quality import image_features, load_clip
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli.commands.coherence import load_image
from multidiffusion.interfaces.cli.commands.evaluate import add_eval, evaluate, read_prompt, run_eval, sample_crops
from tests.helpers.tiny_metrics import TinyFeatures, noise_image, save_features, smooth_image, tiny_clip_folder


def run(argv: list[str]) -> int:
    """``multidiffusion eval ARGV`` through a parser built with :func:`add_eval`."""
    parser = argparse.ArgumentParser()
    add_eval(parser.add_subparsers(dest="command").add_parser("eval"))
    return run_eval(parser.parse_args(["eval", *argv]))


def save(images: list[Image.Image], folder: Path, stem: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"{stem}{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        image.save(path)
    return paths


def shifted(paths: list[str], folder: Path, red: int) -> list[str]:
    """The images with ``red`` added to their red channel (clipped), saved in ``folder``."""
    out = []
    for path in paths:
        rgb = np.asarray(Image.open(path)).astype(np.int64)
        rgb[..., 0] = np.clip(rgb[..., 0] + red, 0, 255)
        out.append(Image.fromarray(rgb.astype(np.uint8)))
    return save(out, folder, "shift")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def reference(workdir: Path) -> list[str]:
    """Four smooth 128 × 64 images: 8 crops of 32 px each, 32 samples."""
    rng = np.random.default_rng(0)
    return save([smooth_image(rng, 128, 64) for _ in range(4)], workdir / "reference", "ref")


@pytest.fixture(scope="module")
def clip_folder(workdir: Path) -> Path:
    return tiny_clip_folder(workdir / "clip")


def test_fid_and_kid_of_a_set_against_itself_and_shifted_copies(workdir: Path, reference: list[str]) -> None:
    features = TinyFeatures()
    same = evaluate(reference, reference, crop=32, features=features)["summary"]
    red30 = evaluate(reference, shifted(reference, workdir / "red30", 30), crop=32, features=features)["summary"]
    red80 = evaluate(reference, shifted(reference, workdir / "red80", 80), crop=32, features=features)["summary"]

    assert abs(same["fid"]) < 1e-3
    assert 1e-2 < red30["fid"] < red80["fid"]  # FID grows with the colour shift (measured ≈ 0.13, 0.94)

    # KID against itself: torchmetrics' unbiased estimator on all n ≤ 50 samples is exactly
    # 2·(mean off-diagonal k(x, x') − mean k(x, x')) = −O(1/n), the cross term pairing each sample with itself.
    x = image_features(features, torch.cat([sample_crops(load_image(p), 32) for p in reference]))
    n, d = x.shape
    k = (x @ x.T / d + 1) ** 3
    expected = 2 * (k.sum() - k.diagonal().sum()) / (n * (n - 1)) - 2 * k.sum() / n**2
    assert same["kid"] == pytest.approx(float(expected), abs=1e-9)
    assert abs(same["kid"]) < red30["kid"] / 4 < red80["kid"] / 4  # measured ≈ −0.027, 0.147, 1.52
    assert same["images"] == same["reference"] == 4


def test_command_takes_a_torchscript_extractor(workdir: Path, reference: list[str], capsys) -> None:
    extractor = str(save_features(workdir / "features.pt"))
    assert run([*reference, "--reference", str(workdir / "reference"), "--crop", "32", "--features", extractor]) == 0
    table = capsys.readouterr().out.splitlines()
    header = ["image", "crop", "crops", "clip_score", "intra_lpips", "intra_style", "giqa", "fid", "kid", "kid_std"]
    assert table[0].split() == header
    assert len(table) == 1 + 4 + 1 and table[-1].startswith("all (4 vs 4 reference)")

    argv = [*reference, "--reference", str(workdir / "reference"), "--crop", "32", "--features", extractor]
    assert run([*argv, "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    in_process = evaluate(reference, reference, crop=32, features=TinyFeatures())["summary"]
    assert abs(result["summary"]["fid"]) < 1e-3
    assert result["summary"]["giqa"] == pytest.approx(in_process["giqa"], abs=1e-9)  # the scripted = the module
    assert [r["crops"] for r in result["images"]] == [8] * 4


def test_giqa_is_lower_for_reference_like_images_than_for_noise(workdir: Path, reference: list[str]) -> None:
    rng = np.random.default_rng(1)
    close = shifted(reference[:2], workdir / "close", 6)  # the reference, 6 levels redder
    noise = save([noise_image(rng, 128, 64) for _ in range(2)], workdir / "noise", "noise")
    scores = {}
    for k in (1, 5):
        rows = evaluate(close + noise, reference, crop=32, features=TinyFeatures(), k=k)["images"]
        scores[k] = [r["giqa"] for r in rows]
    assert max(scores[5][:2]) < min(scores[5][2:]), scores  # measured ≈ 0.24, 0.26 vs 0.28, 0.30
    # Each close crop's nearest reference crop is its own unshifted self: far nearer than any noise crop's.
    assert max(scores[1][:2]) < min(scores[1][2:]) / 2, scores  # measured ≈ 0.07 vs 0.22


def direct_clip_score(folder: Path, path: str, prompt: str) -> float:
    """100 · max(cos, 0) averaged over the image's crops, through CLIPModel's own forward (logits / scale)."""
    from transformers import CLIPModel, CLIPTokenizer

    model, tokenizer = CLIPModel.from_pretrained(folder).eval(), CLIPTokenizer.from_pretrained(folder)
    image = Image.open(path).convert("RGB")
    side = image.height
    crops = [image.crop((x, 0, x + side, side)) for x in range(0, image.width - side + 1, side)]
    pixels = np.stack([np.asarray(c.resize((32, 32), Image.Resampling.BICUBIC)) for c in crops]) / 255.0
    pixels = torch.from_numpy((pixels - 0.5) / 0.25).permute(0, 3, 1, 2).float()  # the folder's mean / std
    with torch.no_grad():
        out = model(pixel_values=pixels, **tokenizer([prompt], return_tensors="pt"))
    cosine = out.logits_per_image.reshape(-1) / model.logit_scale.exp()
    return float((100 * cosine.detach().clamp(min=0)).double().mean())


def test_clip_score_equals_a_direct_computation(clip_folder: Path, reference: list[str]) -> None:
    row = evaluate(reference[:1], prompt="snowy peaks", clip=load_clip(str(clip_folder)))["images"][0]
    assert row["crops"] == 2 and row["prompt"] == "snowy peaks"
    assert row["clip_score"] > 1  # the tiny model's crops are ≈ 0.3 cosine from this prompt
    assert row["clip_score"] == pytest.approx(direct_clip_score(clip_folder, reference[0], "snowy peaks"), abs=1e-5)


def test_prompt_is_read_from_pngs_the_cli_wrote(workdir: Path, clip_folder: Path, capsys) -> None:
    from tests.helpers.cli import exit_code

    out = workdir / "fox.png"
    argv = ["panorama", "a red fox", "--model", "toy", "--width", "128", "--height", "64", "--steps", "2"]
    assert exit_code([*argv, "--seed", "0", "--out", str(out), "-q"]) == 0
    assert read_prompt(str(out)) == "a red fox"
    assert run([str(out), "--clip", str(clip_folder), "--json", "-q"]) == 0
    row = json.loads(capsys.readouterr().out)["images"][0]
    assert row["prompt"] == "a red fox"
    assert row["clip_score"] == pytest.approx(direct_clip_score(clip_folder, str(out), "a red fox"), abs=1e-5)

    a1111 = workdir / "a1111.png"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a quiet lake\nat dawn\nNegative prompt: blurry\nSteps: 20, Seed: 1")
    Image.new("RGB", (64, 32)).save(a1111, pnginfo=info)
    assert read_prompt(str(a1111)) == "a quiet lake\nat dawn"
    assert read_prompt(str(reference_png_without_text(workdir))) is None


def reference_png_without_text(folder: Path) -> Path:
    path = folder / "plain.png"
    Image.new("RGB", (64, 32)).save(path)
    return path


def test_missing_weights_print_na_after_one_warning_each(workdir: Path, reference: list[str], monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(workdir / "empty_torch_home"))  # no cached Inception, no VGG16
    argv = [reference[0], "--reference", str(workdir / "reference"), "--prompt", "a lake"]
    assert run([*argv, "--clip", str(workdir / "no_clip_here")]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert all(w.startswith("warning: ") for w in warnings), warnings
    assert sum("--clip" in w for w in warnings) == 1
    assert sum("--inception" in w and "--features" in w for w in warnings) == 1
    summary = captured.out.splitlines()[-1].split()
    assert summary[-3:] == ["n/a", "n/a", "n/a"]  # fid, kid, kid_std
    assert "n/a" in captured.out.splitlines()[1]  # the image's CLIP score and GIQA


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("not_an_image", "not an image file"),
        ("empty_reference", "holds no image files"),
        ("one_crop_each", "at least 2 crops"),
        ("bad_features", "not a TorchScript module"),
    ],
)
def test_bad_input_is_one_invalid_input_error(workdir: Path, reference: list[str], case: str, message: str) -> None:
    folder = workdir / f"bad_{case}"
    folder.mkdir()
    square = save([Image.new("RGB", (64, 64), (90, 120, 150))], folder, "square")
    text = folder / "text.png"
    text.write_text("not pixels")
    argv = {
        "missing": [str(folder / "nope.png")],
        "not_an_image": [str(text)],
        "empty_reference": [reference[0], "--reference", str(folder / "empty")],
        "one_crop_each": [*square, "--reference", str(folder / "ref"), "--features", str(text)],
        "bad_features": [reference[0], "--reference", str(workdir / "reference"), "--features", str(text)],
    }[case]
    (folder / "empty").mkdir()
    save([Image.new("RGB", (64, 64))], folder / "ref", "r")
    if case == "one_crop_each":  # the counts are checked before any weights load: use a real extractor
        argv[-1] = str(save_features(folder / "features.pt"))
    with pytest.raises(InvalidInputError, match=message):
        run(argv)


def test_registered_command_exits_2_with_one_line(workdir: Path, capfd) -> None:
    from multidiffusion.interfaces.cli import main as cli
    from tests.helpers.cli import exit_code, one_error_line

    if "eval" not in cli.COMMANDS:
        pytest.skip("the eval subcommand is not registered in interfaces/cli/main.py yet")
    assert exit_code(["eval", str(workdir / "missing.png")]) == 2
    assert "does not exist" in one_error_line(capfd)
