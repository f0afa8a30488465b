"""The regression gate's cases, in one place: what the recorder writes and what the test recomputes.

Why this exists: issue 25 redesigns the package and moves source files (``multidiffusion.adapters.stable_diffusion``
may become ``multidiffusion.adapters.families.sd``, …). Moving code must not change a single output, so the outputs
below were recorded before the move (``record_golden.py``) and ``test_golden_outputs.py`` checks that every one of
them is still bit-identical on the same CPU kernel path.

To survive the move, the cases call only public entry points: ``MultiDiffusionPipeline`` from the package top level,
``from_pretrained`` of ``"toy"`` or of tiny model folders saved by the suite's builders, ``pipe(...)``,
``pipe.regions``, ``pipe.upscale`` / ``outpaint`` / ``inpaint``, ``Customisation`` with ControlNets and LoRAs, the
command line (``python -m multidiffusion``) and the existing ``torchrun`` worker. The one name not exported at the
top level (``Region``) is imported here and nowhere else in ``tests/regression``: after the move, fix this one
import (:data:`REGION_IMPORT`) and nothing else.

Every case is a zero-argument function returning a tensor, registered in :data:`CASES` under its name; its
docstring is its description (recorded in ``golden.json``). :func:`compute` runs one with one intra-op thread (the
recorder and the test alike), so the thread count of the machine cannot change the summation order.
"""

from __future__ import annotations

import atexit
import os
import runpy
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch

from multidiffusion import ControlSpec, Customisation, LoraSpec, MultiDiffusionPipeline

# The one import of a non-top-level name (the redesign may move it; fix it here only).
from multidiffusion.core.features.regions import Region

REGION_IMPORT = "multidiffusion.core.features.regions.Region"

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests.helpers, when this file runs as a script
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.tiny_control import guide_image, save_network, tiny_controlnet  # noqa: E402
from tests.helpers.tiny_flux import make_flux_components, save_flux_folder  # noqa: E402
from tests.helpers.tiny_lora import save_lora  # noqa: E402
from tests.helpers.tiny_models import make_components, save_model_folder  # noqa: E402
from tests.helpers.tiny_sd3 import make_sd3_components, save_sd3_folder  # noqa: E402
from tests.helpers.tiny_sdxl import make_sdxl_components, save_sdxl_folder  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
GOLDEN_TENSORS = DATA / "golden.safetensors"
GOLDEN_JSON = DATA / "golden.json"
PNG_DIR = DATA / "pngs"

CASES: dict[str, Callable[[], torch.Tensor]] = {}


def case(name: str) -> Callable[[Callable[[], torch.Tensor]], Callable[[], torch.Tensor]]:
    """Register a zero-argument function as the case ``name`` (its docstring is the description)."""

    def register(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return register


def describe(name: str) -> str:
    """The case's description: its function's docstring on one line."""
    return " ".join((CASES[name].__doc__ or name).split())


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: the same summation order whatever the machine's core count (and fastest here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compute(name: str) -> torch.Tensor:
    """Run the case ``name``: a contiguous float32 CPU tensor."""
    with one_thread():
        out = CASES[name]()
    return out.detach().to("cpu", torch.float32).contiguous()


def environment() -> dict[str, str]:
    """What decides the kernel path (capability, torch) and, for diagnosis, the libraries the weights come from."""
    import diffusers
    import transformers

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def same_kernel_path(recorded: dict[str, Any]) -> bool:
    """Whether this process takes the recorded kernel path (same CPU capability and torch): then bit-identical."""
    now = environment()
    return recorded.get("cpu_capability") == now["cpu_capability"] and recorded.get("torch") == now["torch"]


# --- scratch space and model folders (built once per process, from seeded builders) ------------------------------


@cache
def workdir() -> Path:
    """A temporary folder for the tiny model folders and networks, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="multidiffusion-golden-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build_components(family: str) -> dict[str, Any]:
    """Fresh tiny random components of ``family`` (``sd``, ``sdxl``, ``sd3``, ``flux``), seeded: every call gives the
    same weights (the gate checks that too)."""
    tmp = Path(tempfile.mkdtemp(dir=workdir()))
    if family == "sd":
        return make_components(tmp, seed=1, sample_size=16)  # native window 16 cells = 128 px
    if family == "sdxl":
        return make_sdxl_components(tmp, seed=0)  # native 128 px
    if family == "sd3":
        return make_sd3_components(tmp, seed=0)  # native 256 px, 16 px per canvas cell
    if family == "flux":
        return make_flux_components(tmp, guidance_embeds=True, seed=0)  # dev-style: guidance embedding
    raise ValueError(family)


@cache
def components(family: str) -> dict[str, Any]:
    """The components of ``family``, built once (never changed: LoRA files are made on copies)."""
    return build_components(family)


@cache
def model_folder(family: str) -> str:
    """``family``'s components saved with ``save_pretrained`` (a diffusers folder ``from_pretrained`` loads)."""
    save = {"sd": save_model_folder, "sdxl": save_sdxl_folder, "sd3": save_sd3_folder, "flux": save_flux_folder}
    return str(save[family](components(family), workdir() / f"tiny-{family}"))


def load(source: str) -> MultiDiffusionPipeline:
    """A fresh pipeline (never shared between cases: a LoRA or ControlNet run must not leak into another)."""
    return MultiDiffusionPipeline.from_pretrained(source, device="cpu", dtype="float32")


def seed(k: int) -> torch.Generator:
    return torch.Generator().manual_seed(k)


# --- the toy model (the exact Gaussian field: no weights, pixels are the latents) ------------------------------

TOY = dict(window=32, stride=16, num_inference_steps=4, progress=False, output_type="latent")


def _picture(height: int, width: int) -> torch.Tensor:
    """A smooth deterministic stand-in photo in [0, 1], (3, H, W)."""
    return torch.linspace(0, 1, 3 * height * width).reshape(3, height, width)


@case("toy_panorama")
def toy_panorama() -> torch.Tensor:
    """toy model, panorama 32×96 px, window 32 stride 16 (5 views), 4 DDIM steps, seed 1, latents."""
    return load("toy")("red or blue", height=32, width=96, generator=seed(1), **TOY).latents


@case("toy_regions")
def toy_regions() -> torch.Tensor:
    """toy model, regions: two boxes and a background on 32×96 px, 4 steps (bootstrap 0.5), seed 2, latents."""
    regions = [Region("a yellow sun", box=(8, 4, 40, 20)), Region("a dark blue sea", box=(48, 16, 96, 32))]
    out = load("toy").regions(
        regions, "an orange sky", height=32, width=96, generator=seed(2), bootstrap_fraction=0.5, **TOY
    )
    return out.latents


@case("toy_sync")
def toy_sync() -> torch.Tensor:
    """toy model, SyncDiffusion (loss builtin) panorama 32×96 px, 4 steps, seed 3, latents."""
    pipe = load("toy")
    return pipe("red or blue", height=32, width=96, sync=True, sync_loss="builtin", generator=seed(3), **TOY).latents


@case("toy_global_view")
def toy_global_view() -> torch.Tensor:
    """toy model, panorama 32×128 px with a global view (ω = 2, first 3/4 of the steps), 4 steps, seed 4, latents."""
    pipe = load("toy")
    out = pipe("green", height=32, width=128, global_view=2.0, global_view_until=0.75, generator=seed(4), **TOY)
    return out.latents


@case("toy_upscale")
def toy_upscale() -> torch.Tensor:
    """toy model, upscale ×2 of a 16×32 picture (lanczos), strength 0.6 with 2 noise-inversion steps, seed 5."""
    pipe = load("toy")
    out = pipe.upscale(_picture(16, 32), 2, "grey", strength=0.6, noise_inversion_steps=2, generator=seed(5), **TOY)
    return out.latents


@case("toy_outpaint")
def toy_outpaint() -> torch.Tensor:
    """toy model, outpaint a 32×32 picture by 16 px left and 32 px right (feather 4), 4 steps, seed 6, latents."""
    out = load("toy").outpaint(_picture(32, 32), "blue", left=16, right=32, feather=4.0, generator=seed(6), **TOY)
    return out.latents


@case("toy_inpaint")
def toy_inpaint() -> torch.Tensor:
    """toy model, inpaint the right half of a 32×64 picture (mask white there), strength 0.8, seed 7, latents."""
    mask = torch.zeros(32, 64)
    mask[:, 32:] = 1.0
    out = load("toy").inpaint(_picture(32, 64), mask, "red", strength=0.8, generator=seed(7), **TOY)
    return out.latents


# --- tiny random networks of each family (saved folders loaded with from_pretrained) ------------------------------

NETS = dict(num_inference_steps=3, progress=False, output_type="latent")


@case("sd_panorama")
def sd_panorama() -> torch.Tensor:
    """tiny SD (make_components seed 1, native 128 px), panorama 128×256 px, stride 64 (3 views), 3 DDIM steps,
    CFG 7.5, seed 11, latents."""
    pipe = load(model_folder("sd"))
    return pipe("a mountain lake", height=128, width=256, stride=64, generator=seed(11), **NETS).latents


@case("sd_panorama_decoded")
def sd_panorama_decoded() -> torch.Tensor:
    """tiny SD, panorama 128×192 px, stride 64 (2 views), 3 steps, seed 12, decoded by the VAE (output_type pt)."""
    pipe = load(model_folder("sd"))
    out = pipe("a mountain lake", height=128, width=192, stride=64, generator=seed(12), **{**NETS, "output_type": "pt"})
    return out.images


@case("sd_regions")
def sd_regions() -> torch.Tensor:
    """tiny SD, regions: two boxes and a background on 128×256 px, stride 64, 3 steps, seed 13, latents."""
    regions = [Region("a red barn", box=(0, 0, 128, 128)), Region("a blue lake", box=(160, 32, 256, 128))]
    out = load(model_folder("sd")).regions(
        regions, "a meadow", height=128, width=256, stride=64, generator=seed(13), **NETS
    )
    return out.latents


@case("sd_sync")
def sd_sync() -> torch.Tensor:
    """tiny SD, SyncDiffusion (loss builtin: its gradient goes through the VAE decoder) 128×256 px, stride 64,
    3 steps, seed 14, latents."""
    pipe = load(model_folder("sd"))
    out = pipe(
        "a mountain lake", height=128, width=256, stride=64, sync=True, sync_loss="builtin", generator=seed(14), **NETS
    )
    return out.latents


@cache
def controlnet_folder() -> str:
    """A tiny random ControlNet for the tiny SD UNet (every weight from a seeded generator), saved."""
    return str(save_network(tiny_controlnet(components("sd")["unet"], seed=1), workdir() / "controlnet"))


@case("sd_controlnet")
def sd_controlnet() -> torch.Tensor:
    """tiny SD with a tiny random ControlNet (seed 1; random guide image seed 0; scale 0.8 over 0–75 % of the
    steps), panorama 128×256 px, stride 64, 3 steps, seed 15, latents."""
    spec = ControlSpec(controlnet_folder(), guide_image(128, 256, seed=0), 0.8, 0.0, 0.75)
    pipe = load(model_folder("sd"))
    out = pipe(
        "a castle on a hill",
        height=128,
        width=256,
        stride=64,
        generator=seed(15),
        customise=Customisation(control=(spec,)),
        **NETS,
    )
    return out.latents


@cache
def lora_file() -> str:
    """A tiny random LoRA (UNet and text encoder, rank 4, α 8) for the tiny SD model, saved as safetensors."""
    from diffusers import StableDiffusionPipeline

    return str(save_lora(StableDiffusionPipeline, components("sd"), workdir() / "lora" / "style.safetensors", seed=0))


@case("sd_lora")
def sd_lora() -> torch.Tensor:
    """tiny SD with a tiny random LoRA (seed 0) at scale 0.7, panorama 128×256 px, stride 64, 3 steps, seed 16,
    latents."""
    pipe = load(model_folder("sd"))
    custom = Customisation(loras=(LoraSpec(lora_file(), 0.7),))
    out = pipe(
        "a photo of the dolomites", height=128, width=256, stride=64, generator=seed(16), customise=custom, **NETS
    )
    return out.latents


@case("sdxl_panorama")
def sdxl_panorama() -> torch.Tensor:
    """tiny SDXL (seed 0, native 128 px, Euler), panorama 128×192 px, stride 64 (2 views), 3 steps, seed 21,
    latents."""
    pipe = load(model_folder("sdxl"))
    return pipe("a photo of the dolomites", height=128, width=192, stride=64, generator=seed(21), **NETS).latents


@case("sd3_panorama")
def sd3_panorama() -> torch.Tensor:
    """tiny SD 3 (seed 0, with T5; native 256 px, flow-matching Euler), panorama 256×384 px, stride 128 (2 views),
    3 steps, seed 31, latents."""
    pipe = load(model_folder("sd3"))
    return pipe("a sandy beach", height=256, width=384, stride=128, generator=seed(31), **NETS).latents


@case("flux_panorama")
def flux_panorama() -> torch.Tensor:
    """tiny Flux dev-style (seed 0, guidance embedding, dynamic shift), panorama 128×192 px, window 128 stride 64
    (2 views), 3 steps, seed 41, latents."""
    pipe = load(model_folder("flux"))
    out = pipe("a red fox", height=128, width=192, window=128, stride=64, generator=seed(41), **NETS)
    return out.latents


# --- two ranks (torchrun, gloo on the CPU): the existing worker's runs, rank 0's latents ---------------------------

WORKER = ROOT / "tests" / "helpers" / "distributed_worker.py"
WORKER_RUNS = ("panorama", "regions", "sync", "outpaint", "upscale")  # tests/helpers/distributed_worker.py's RUNS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@cache
def two_ranks() -> dict[str, torch.Tensor]:
    """Every run of tests/helpers/distributed_worker.py on the tiny SD folder on 2 ranks (one torchrun launch)."""
    out = Path(tempfile.mkdtemp(dir=workdir()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        f"--master-port={_free_port()}",
        "--master-addr=127.0.0.1",
        str(WORKER),
        model_folder("sd"),
        str(out),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {name: torch.load(out / f"{name}.pt", map_location="cpu") for name in WORKER_RUNS}


def _rank_case(run: str) -> Callable[[], torch.Tensor]:
    def fn() -> torch.Tensor:
        return two_ranks()[run]

    fn.__doc__ = (
        f"tiny SD on 2 ranks (torchrun, gloo): the worker's {run!r} run (3 steps, view batch 2), rank 0's latents"
    )
    return fn


for _run in WORKER_RUNS:
    case(f"ranks2_{_run}")(_rank_case(_run))


# --- reference PNGs made by the command line on the toy model -------------------------------------------------------

TOY_CLI = ["--model", "toy", "--window", "32", "--stride", "8", "--steps", "4", "-q"]

REGIONS_LAYOUT = {
    "width": 96,
    "height": 32,
    "background": "an orange sky",
    "regions": [
        {"name": "sun", "prompt": "a yellow sun", "box": [8, 4, 40, 20], "guidance_scale": 3.0},
        {"name": "sea", "prompt": "a dark blue sea", "box": [40, 16, 96, 32]},
    ],
}

PNGS: dict[str, tuple[str, list[str]]] = {
    "toy_panorama.png": (
        "CLI panorama on the toy model, 32×96 px, window 32 stride 8, 4 steps, seed 1",
        ["panorama", "red or blue", *TOY_CLI, "--height", "32", "--width", "96", "--seed", "1"],
    ),
    "toy_sync.png": (
        "CLI panorama with --sync (loss builtin, stop at step 3) on the toy model, 32×96 px, 4 steps, seed 2",
        [
            *("panorama", "red or blue", *TOY_CLI, "--height", "32", "--width", "96", "--seed", "2"),
            *("--sync", "--sync-loss", "builtin", "--sync-stop", "3"),
        ],
    ),
    "toy_regions.png": (
        "CLI regions from a two-box layout (REGIONS_LAYOUT) on the toy model, 32×96 px, 4 steps, seed 3",
        ["regions", "--layout", "{layout}", *TOY_CLI, "--seed", "3"],
    ),
}
"""name → (description, CLI arguments without ``--out``; ``{layout}`` is a file holding :data:`REGIONS_LAYOUT`)."""


def cli(argv: list[str]) -> int:
    """``python -m multidiffusion ARGV`` in this process (one intra-op thread): the command line, by its module name
    (which survives a move of the CLI module); returns the exit status."""
    saved = sys.argv
    sys.argv = ["multidiffusion", *argv]
    try:
        with one_thread():
            runpy.run_module("multidiffusion", run_name="__main__", alter_sys=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0


def png_argv(name: str, out: Path) -> list[str]:
    """The CLI arguments that make the PNG ``name`` at ``out`` (a layout file is written beside it when needed)."""
    import json

    argv = list(PNGS[name][1])
    if "{layout}" in argv:
        layout = out.parent / (out.stem + "-layout.json")
        layout.write_text(json.dumps(REGIONS_LAYOUT))
        argv[argv.index("{layout}")] = str(layout)
    return [*argv, "--out", str(out)]


def png_pixels(path: Path) -> torch.Tensor:
    """A PNG's pixels as a (H, W, C) uint8 tensor."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB")))
