"""A canvas whose decode would not fit in the memory available is refused before any denoising."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import main
from multidiffusion.pipeline import memory
from spies import counted_rows


def test_decode_estimate_follows_the_vae(small_pipe):
    codec = small_pipe.model.codec  # tiny VAE: c0 = 8 channels at full resolution, float32
    assert codec.decode_bytes(1, 128, 256) == 128 * 256 * 8 * 8 * 4  # whole: ~8 activations of c0
    codec.tiled = True
    try:
        assert codec.decode_bytes(2, 128, 256) == 2 * 128 * 256 * 4 * 8 * 4  # tiled: ~4 parked canvases
    finally:
        codec.tiled = None


def test_too_large_for_this_machine_is_refused_before_denoising(small_pipe, monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 8 << 20)  # 8 MiB free
    with counted_rows(small_pipe.model) as calls:
        with pytest.raises(InvalidInputError, match=r"needs about .* GiB .* available here; make the canvas smaller"):
            small_pipe("sky", height=128, width=512, num_inference_steps=1, progress=False)
        assert calls == []  # refused before the first model call
        out = small_pipe("sky", height=128, width=512, num_inference_steps=1, progress=False, output_type="latent")
        assert out.latents.shape == (1, 4, 16, 64)  # latents need no decode


def test_cli_exits_2_and_writes_nothing(small_folder, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 8 << 20)
    out = tmp_path / "x.png"
    argv = ["panorama", "sky", "--model", str(small_folder), "--height", "128", "--width", "512", "--steps", "1"]
    assert main([*argv, "--out", str(out), "-q"]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "make the canvas smaller" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_available_memory_is_read():
    assert memory.host_available_bytes() > 0
    assert memory.device_free_bytes(torch.device("cpu")) > 0
