"""A run that produces inf or NaN stops at that step with one line and writes nothing (never a black image)."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core.errors import NonFiniteError
from multidiffusion.interfaces.cli.main import main


def _nan_after(denoiser, calls: int):
    """``denoiser`` that returns NaN from its ``calls``-th call on."""
    count = 0

    def broken(x, t, conds, views=None):
        nonlocal count
        count += 1
        out = denoiser(x, t, conds, views=views)
        return out * float("nan") if count >= calls else out

    return broken


def test_the_engine_names_the_step(small_pipe):
    inner = small_pipe.model.denoiser
    small_pipe.model.denoiser = _nan_after(inner, 2)
    try:
        with pytest.raises(NonFiniteError, match=r"non-finite at step 2 of 3; .* try bfloat16"):
            small_pipe("sky", height=128, width=128, num_inference_steps=3, progress=False)
    finally:
        small_pipe.model.denoiser = inner


def test_the_cli_exits_1_with_one_line_and_no_file(tmp_path, monkeypatch, capfd):
    from multidiffusion.adapters.families import toy

    load = toy.load

    def broken_load(*args, **kwargs):
        model = load(*args, **kwargs)
        model.denoiser = _nan_after(model.denoiser, 1)
        return model

    monkeypatch.setattr(toy, "load", broken_load)
    out = tmp_path / "x.png"
    code = main(["panorama", "sky", "--model", "toy", "--width", "128", "--steps", "3", "--out", str(out), "-q"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1
    assert [line for line in err if line.startswith("error:")] == [
        "error: the canvas became non-finite at step 1 of 3; in half precision try bfloat16 (or float32), and "
        "lower the guidance scale or sync weight if they are large"
    ]
    assert list(tmp_path.iterdir()) == []


def test_non_finite_vae_decode_in_float32_is_an_error(small):
    from multidiffusion.adapters.codecs.vae import VaeCodec

    codec = VaeCodec(small["vae"])
    with pytest.raises(NonFiniteError, match="even in float32"):
        codec.decode(torch.full((1, 4, 4, 4), float("inf")))
