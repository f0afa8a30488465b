"""``result.save(path)`` writes PNGs that carry their recipe, so the images regenerate from the file alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline, ViewSettings


@pytest.fixture(scope="module")
def toy() -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline.from_pretrained("toy")


def run(pipe: MultiDiffusionPipeline, **kwargs):
    return pipe(
        "sky",
        height=32,
        width=96,
        num_inference_steps=3,
        views=ViewSettings(window=32, stride=16),
        generator=torch.Generator().manual_seed(5),
        progress=False,
        **kwargs,
    )


def test_a_saved_image_reproduces_from_its_file(toy, tmp_path):
    result = run(toy)
    [written] = result.save(tmp_path / "x.png")
    assert written == tmp_path / "x.png"
    again = MultiDiffusionPipeline.from_metadata(written).reproduce(written, progress=False)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))


def test_several_images_are_numbered_and_one_can_be_picked(toy, tmp_path):
    result = run(toy, num_images_per_prompt=2)
    assert result.save(tmp_path / "y.png") == [tmp_path / "y-0.png", tmp_path / "y-1.png"]
    assert result.save(tmp_path / "z.png", index=1) == [tmp_path / "z.png"]
    assert (tmp_path / "z.png").read_bytes() == (tmp_path / "y-1.png").read_bytes()
    again = MultiDiffusionPipeline.from_metadata(tmp_path / "z.png").reproduce(tmp_path / "z.png", progress=False)
    assert np.array_equal(np.asarray(again.images[1]), np.asarray(result.images[1]))  # the batch, as recorded


@pytest.mark.parametrize(
    ("kwargs", "path", "message"),
    [
        ({}, "x.jpg", "must end in .png"),
        ({"index": 3}, "x.png", "index must be a whole number in 0…0"),
        ({"index": True}, "x.png", "index must be a whole number"),
    ],
)
def test_bad_saves_are_one_line_and_write_nothing(toy, tmp_path, kwargs, path, message):
    result = run(toy)
    with pytest.raises(InvalidInputError, match=message):
        result.save(tmp_path / path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_only_pil_images_save(toy, tmp_path):
    with pytest.raises(InvalidInputError, match="output_type='pil'"):
        run(toy, output_type="np").save(tmp_path / "x.png")
