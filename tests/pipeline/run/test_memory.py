"""A canvas whose decode would not fit in the memory available is refused before any denoising."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli.main import main
from multidiffusion.pipeline.run import memory
from tests.helpers.spies import counted_rows


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
        with pytest.raises(
            InvalidInputError, match=r"needs about .* [GM]iB .* available here; make the canvas smaller"
        ):
            small_pipe("sky", height=128, width=512, num_inference_steps=1, progress=False)
        assert calls == []  # refused before the first model call
        out = small_pipe("sky", height=128, width=512, num_inference_steps=1, progress=False, output_type="latent")
        assert out.latents.shape == (1, 4, 16, 64)  # latents need no decode


@pytest.mark.parametrize("command", ["panorama", "upscale", "outpaint", "regions"])
def test_cli_refuses_before_loading_exits_2_and_writes_nothing(small_folder, tmp_path, monkeypatch, capfd, command):
    """The folder's VAE config is read unloaded, so the refusal comes before the model loads (with the same
    estimate as after loading: the tiny VAE's c₀ = 8, float32, untiled)."""
    import json

    from PIL import Image

    from multidiffusion.interfaces.cli import launch

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 8 << 20)
    loads: list[str] = []
    monkeypatch.setattr(launch, "load_pipeline", lambda args, model, *a, **k: loads.append(model))
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (256, 64)).save(inputs / "photo.png")
    (inputs / "layout.json").write_text(json.dumps({"width": 512, "height": 128, "background": "sky"}))
    argv = {
        "panorama": ["panorama", "sky", "--height", "128", "--width", "512"],
        "upscale": ["upscale", str(inputs / "photo.png"), "--scale", "2"],
        "outpaint": ["outpaint", str(inputs / "photo.png"), "--left", "128", "--right", "128", "--prompt", "sky"],
        "regions": ["regions", "--regions-file", str(inputs / "layout.json")],
    }[command]
    out = tmp_path / "x.png"
    assert main([*argv, "--model", str(small_folder), "--steps", "1", "--out", str(out), "-q"]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "make the canvas smaller" in errors[0]
    assert loads == [] and not out.exists()


def test_pre_load_estimate_equals_the_loaded_codecs(small_folder, small_pipe):
    """Before and after loading, one estimate: the same bytes for whole and tiled decodes."""
    from multidiffusion.adapters.codecs.vae import decode_bytes_estimate
    from multidiffusion.adapters.loading.resolve import config_before_loading

    vae = config_before_loading(str(small_folder), "vae/config.json")
    codec = small_pipe.model.codec
    for tiled in (False, True):
        codec.tiled = tiled
        try:
            expected = codec.decode_bytes(1, 128, 512)
        finally:
            codec.tiled = None
        assert decode_bytes_estimate(1, 128, 512, vae["block_out_channels"][0], 4, tiled) == expected


def test_available_memory_is_read():
    assert memory.host_available_bytes() > 0
    assert memory.device_free_bytes(torch.device("cpu")) > 0


def test_model_and_view_that_do_not_fit_are_refused_before_loading(small_folder, tmp_path, monkeypatch, capfd):
    """Weights (1.24 MB, read from the safetensors headers) plus one 128-px view row (2 MiB in float32) against 2 MiB
    free: refused before the model loads, with the setting that fits (half precision: 1.6 MB)."""
    from multidiffusion.interfaces.cli import launch

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2 << 20)
    loads: list[str] = []
    monkeypatch.setattr(launch, "load_pipeline", lambda args, model, *a, **k: loads.append(model))
    out = tmp_path / "x.png"
    argv = ["panorama", "sky", "--height", "128", "--width", "256", "--model", str(small_folder), "--out", str(out)]
    assert main([*argv, "--steps", "1", "-q"]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "this run needs about" in errors[0] and "--dtype bfloat16" in errors[0], errors
    assert loads == [] and not out.exists()


def test_pre_load_estimate_equals_the_loaded_models(small_folder, small_pipe):
    """The weights' bytes from the safetensors headers are the loaded parameters'; the view row's are the loaded
    model's ``bytes_per_view_cell`` times the view's cells."""
    from multidiffusion.adapters.families import sd
    from multidiffusion.adapters.loading.resolve import config_before_loading, weights_bytes_before_loading

    parts = small_pipe.model.components
    loaded = sum(p.numel() * 4 for k in ("unet", "vae", "text_encoder") for p in parts[k].parameters())
    assert weights_bytes_before_loading(small_folder, 4) == loaded
    unet = config_before_loading(str(small_folder), "unet/config.json")
    assert sd.view_cell_bytes(unet, 4) == small_pipe.model.bytes_per_view_cell


@pytest.mark.parametrize(
    ("weights", "row", "free", "itemsize", "advice"),
    [
        (4 << 30, 2 << 30, 8 << 30, 4, None),  # fits
        (4 << 30, 2 << 30, 4 << 30, 4, "pass --dtype bfloat16"),  # half precision: 3 GiB
        (2 << 30, 4 << 30, 3 << 30, 2, "pass --window 256"),  # 1 GiB left: a quarter of the row → half the side
        (6 << 30, 1 << 30, 4 << 30, 2, "the weights alone leave no room"),
    ],
)
def test_memory_advice_names_the_setting_that_fits(weights, row, free, itemsize, advice):
    text = memory.model_memory_advice(weights, row, free, itemsize, 512, 8, "cuda:0")
    if advice is None:
        assert text is None
    else:
        assert advice in text and "cuda:0 has" in text and "\n" not in text


def test_a_view_too_large_for_the_device_is_refused_before_the_first_step(small_pipe, monkeypatch):
    """After loading (the API): one 128-px view row needs 2 MiB in float32; with 1.5 MiB free the run is refused
    before any model call, naming half precision."""
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 3 << 19)
    with counted_rows(small_pipe.model) as calls:
        with pytest.raises(InvalidInputError, match=r"this run needs about .* --dtype bfloat16"):
            small_pipe("sky", height=128, width=256, num_inference_steps=1, progress=False, output_type="latent")
        assert calls == []


TOY_16K = ["panorama", "x", "--model", "toy:max_window=512", "--height", "16384", "--width", "16384"]
TOY_16K += ["--window", "512", "--stride", "512", "--steps", "1", "--seed", "1", "-q"]


def _toy_estimate(height: int, width: int, window: int, stride: int, decode: bool = True) -> memory.RunEstimate:
    """The estimate of a one-canvas toy panorama (cells are pixels) laid out by the panorama's own layout."""
    from multidiffusion.adapters.families import toy
    from multidiffusion.core.engine.views import layout_views

    model = toy.load("toy", device=torch.device("cpu"))
    views = layout_views(height, width, window, stride)
    return memory.estimate_run_bytes(model, (1, height, width), (window, window), len(views) * window**2, 1, decode)


def test_the_estimate_counts_every_allocation_that_grows_with_the_canvas():
    """16384² toy canvas (3 float32 channels: 3 GiB a copy), 1024 views of 512 px: 8 canvas copies (noise, latents,
    fused sums, the step's temporaries), 20 bytes per view cell of the fusion plan, 5 per canvas cell for its
    denominator, one view row (120 bytes a cell), and the decode (two copies, the codec's float copy, the image)."""
    cells = 16384 * 16384
    canvas = 3 * 4 * cells
    need = _toy_estimate(16384, 16384, 512, 512)
    assert need.row == 120 * 512 * 512
    assert need.denoise == 8 * canvas + 20 * cells + 5 * cells + need.row
    assert need.decode == 3 * canvas + cells * memory.IMAGE_BYTES_PER_PX
    assert need.denoise / 2**30 == pytest.approx(30.3, abs=0.05)
    # A denser layout costs more plan: stride 128 makes 125² views of 512² cells, about 15 × the canvas.
    dense = _toy_estimate(16384, 16384, 512, 128)
    assert dense.denoise - need.denoise == 20 * (125**2 * 512**2 - cells)
    assert _toy_estimate(16384, 16384, 512, 512, decode=False).decode == 0


def test_a_16k_canvas_under_a_12_gb_cap_is_refused_before_any_allocation(tmp_path, monkeypatch, capfd):
    """Issue 31 item 9: the toy model has no decode estimate, yet its canvas, plans and view batch are counted: a
    16384² canvas with 12 GB free is refused with one line and the size that fits, before the noise is drawn."""
    from multidiffusion.pipeline.run import generate

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 12_000_000_000)
    drawn: list[tuple[int, ...]] = []
    monkeypatch.setattr(generate, "initial_noise", lambda shape, *a, **k: drawn.append(shape))
    out = tmp_path / "x.png"
    assert main([*TOY_16K, "--out", str(out)]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: a 16384×16384 px canvas needs about 30.3 GiB of memory (its canvases, view plans and one view batch "
        "while denoising, then the decode) and 11.2 GiB is available here; make the canvas smaller (about "
        "9664×9664 px fits, or a larger stride makes fewer views)"
    ]
    assert drawn == [] and not out.exists()


def test_the_size_that_fits_does_fit():
    free = 12_000_000_000
    need = _toy_estimate(16384, 16384, 512, 512)
    scale = (memory.FIT_MARGIN * (free - need.row) / (need.denoise - need.row)) ** 0.5
    side = int(16384 * scale) // 64 * 64
    assert side == 9664  # the size the refusal names
    fits = _toy_estimate(side, side, 512, 512)
    assert max(fits.denoise, fits.decode) <= free < max(need.denoise, need.decode)


def test_latents_skip_the_decode_but_not_the_canvas(small_pipe, monkeypatch):
    """With 1 MiB free even latents are refused: the loop's canvases and plans (not the decode) do not fit; the
    message does not suggest latents then."""
    need = memory.RunEstimate(denoise=4 << 20, row=1 << 10, decode=0)
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 1 << 20)
    with pytest.raises(InvalidInputError, match=r"make the canvas smaller \(about \d+×\d+ px fits") as caught:
        memory.check_run_memory(small_pipe.model, need, (1, 16, 64))
    assert "output_type='latent'" not in str(caught.value)


def test_address_space_and_cgroup_limits_are_honoured():
    """``ulimit -v`` (RLIMIT_AS) bounds what this process can allocate whatever MemAvailable says: the figure is at
    most the limit less the process's virtual size."""
    import subprocess
    import sys

    limit = 6 << 30
    code = (
        f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}));"
        "from multidiffusion.pipeline.run import memory; print(memory.host_available_bytes())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    available = int(proc.stdout.split()[-1])
    assert 0 < available < limit


@pytest.mark.heavy
def test_a_real_address_space_cap_gives_the_refusal_not_an_allocator_traceback(tmp_path):
    """The CLI under a real 12 GB RLIMIT_AS (as ``prlimit --as`` sets it): refused in one line, exit 2, before the
    canvas is allocated (so this is fast)."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (12_000_000_000, 12_000_000_000))

    out = tmp_path / "x.png"
    code = "import sys; from multidiffusion.interfaces.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, *TOY_16K, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a 16384×16384 px canvas needs about 30.3 GiB" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_dense_views_whose_weight_maps_cannot_fit_are_refused_before_the_layout_is_built(tmp_path, monkeypatch, capfd):
    """With stride 128 the 16384² canvas has 125² views, whose 512² float32 weight maps alone are 16.4 GB: refused in
    one line before any map is built (they are built with the tasks, before the run's own estimate)."""
    from multidiffusion.core.engine import tasks

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 12_000_000_000)
    built: list[int] = []
    monkeypatch.setattr(tasks, "view_weights", lambda views, *a, **k: built.append(len(views)))
    argv = [*TOY_16K, "--out", str(tmp_path / "x.png")]
    argv[argv.index("--stride") + 1] = "128"
    assert main(argv) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the 15,625 views of this canvas need about 15.3 GiB for their weight maps alone and 11.2 GiB is "
        "available here: use a larger stride (fewer views) or a smaller canvas"
    ]
    assert built == [] and not (tmp_path / "x.png").exists()
