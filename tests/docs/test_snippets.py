"""Every code block in README.md and docs/*.md runs, with a tiny model standing in for downloaded weights.

Each fenced block is one test case, named ``file:line`` (the line of its opening fence). New blocks are
picked up automatically. What a block's language tag means here:

- ``python``: executed as written (``exec``) in a temporary folder that holds a copy of ``examples/``,
  so paths are relative to the repository root, as a user running it from a clone would have them.
  Each block stands alone: it imports and defines everything it uses. A line ``print(…)  # True…`` or
  ``# False…`` must print what its comment says (the printed lines are checked in order).
- ``bash`` / ``sh`` / ``shell``: each command (lines joined at ``\\``, split at ``&&`` and ``;``,
  ``# …`` comments dropped, leading ``VAR=value`` set in the environment) runs in the same kind of
  folder. ``multidiffusion …`` runs in-process through the CLI's ``main()`` and must exit 0 and write
  every ``--out`` / ``--segmentation`` file it names. ``python -c …`` runs in a subprocess and must exit
  0. ``pip install …`` is not run (it changes this
  environment and needs the network; CI runs the README's install-and-test line verbatim, see
  ``.ci/run`` and ``tests/docs/test_readme.py``), nor is ``python -m pytest`` (the suite this test is part
  of). Any other command fails the test: add a rule here, or mark the block (below).
- ``json``: parsed; an object with ``regions`` is also validated as a region layout, with mask paths
  relative to the copy of ``examples/``.
- ``text``: a listing (the CLI reference, which ``tests/docs/test_readme.py`` checks against the parser;
  program output), not code: reported as skipped.
- Any other tag, or none, fails: give the block a tag.

A block can be left out explicitly with ``<!-- no-test: REASON -->`` on the line just before its fence;
it is reported as skipped with that reason.

Substitutions, so that blocks need no downloads, no GPU and finish in seconds (the whole file takes
about 40 s of CPU time on a 2-core x86 machine):

1. Model: the Stable Diffusion 512-px hub ids in ``SD_512_IDS`` (and the CLI's default model, which is
   one of them) load a tiny random SD model with SD's geometry (scale factor 8, native window 64 latent
   cells = 512 px, ε-prediction, SD's DDIM configuration) saved to a temporary folder. So windows,
   strides and sizes are checked against the same rules as for the real model. The other families' hub ids
   in ``FAMILY_IDS`` load tiny random models of that family with its real geometry (SDXL 1024 px views,
   SDXL-Turbo 512 px with its trailing-spacing scheduler, SD 3 and Flux 1024 px views of 16 px cells, Flux dev
   with guidance embedding and schnell without), built on first use. Any other hub id fails (the hub is
   offline).
2. Device and dtype: ``device="cuda"`` → ``"cpu"`` and ``dtype="float16"`` → ``"float32"`` at
   ``MultiDiffusionPipeline.from_pretrained``; ``--device cuda…`` → ``cpu`` and ``--dtype float16`` →
   ``float32`` on the command line.
3. Steps: every pipeline call runs at most ``MAX_STEPS`` denoising steps.
4. SyncDiffusion (a backward pass through the UNet and the VAE decoder per view): a synchronised
   panorama is at most ``MAX_SYNC_WIDTH`` px wide, and synchronises at most ``MAX_SYNC_STEPS`` step.

Substitutions 3 and 4 apply to ``MultiDiffusionPipeline.__call__``, ``.settings``, ``.regions`` and ``.check_regions``
themselves (the command line resolves its settings through the last two), so the CLI's own argument checks still see
the values the block wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from multidiffusion.core.features.sync import SyncSettings
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(?P<reason>.+?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
LISTING = {"text"}

SD_512_IDS = {
    "stabilityai/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2-1-base",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
    "CompVis/stable-diffusion-v1-4",
}
FAMILY_IDS = {
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "stabilityai/sdxl-turbo": "sdxl-turbo",
    "stabilityai/stable-diffusion-3.5-medium": "sd3",
    "black-forest-labs/FLUX.1-dev": "flux-dev",
    "black-forest-labs/FLUX.1-schnell": "flux-schnell",
}
MAX_STEPS = 2
MAX_SYNC_WIDTH = 768
MAX_SYNC_STEPS = 1


@dataclass(frozen=True)
class Block:
    """A fenced code block: its file, the 1-based line of its opening fence, language tag and text."""

    path: Path
    line: int
    lang: str
    code: str
    no_test: str | None  # the reason of a ``<!-- no-test: … -->`` marker, if any

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file (fences at the start of a line, as in these docs)."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: code block never closed")
        marker = NO_TEST.match(lines[start - 1].strip()) if start > 0 else None
        reason = marker.group("reason") if marker else None
        blocks.append(Block(path, start + 1, match.group("lang"), "\n".join(body) + "\n", reason))
        i += 1
    return blocks


BLOCKS = [block for path in DOC_FILES for block in extract_blocks(path)]


# --- the tiny stand-in model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers folder of a tiny random SD model with SD 1.x/2.x geometry (native window 512 px).

    The suite's 64-cell components (``tiny_models.make_components``) with a cheaper UNet and VAE of the
    same kinds: the UNet's attention sits at its 16×16 level, the VAE has 4 channels per block (still
    4 blocks: scale factor 8).
    """
    import torch
    from diffusers import UNet2DConditionModel

    from tests.helpers.tiny_models import make_components, save_model_folder, tiny_vae

    tmp = tmp_path_factory.mktemp("docs_model")
    components = make_components(tmp, sample_size=64)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)  # test helper only: reproducible random weights
        components["unet"] = UNet2DConditionModel(
            block_out_channels=(8, 8, 16),
            layers_per_block=1,
            sample_size=64,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=4,
        ).eval()
        components["vae"] = tiny_vae(channels=4, sample_size=512).eval()
    finally:
        torch.random.set_rng_state(state)
    return save_model_folder(components, tmp / "tiny-sd-512")


def _sdxl_unet(sample_size: int) -> Any:
    """A cheap SDXL UNet at the real geometry: attention only at its lowest level (32² tokens at 1024 px)."""
    from diffusers import UNet2DConditionModel

    from tests.helpers.tiny_sdxl import HIDDEN, PROJECTION, TIME_EMBED

    return UNet2DConditionModel(
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        sample_size=sample_size,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + PROJECTION,
        cross_attention_dim=2 * HIDDEN,
        norm_num_groups=4,
    ).eval()


def _build_family_folder(kind: str, root: Path) -> Path:
    """A tiny random model of a family with its real geometry, saved with ``save_pretrained``."""
    import torch

    tmp = root / kind
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)  # test helper only: reproducible random weights
        if kind.startswith("sdxl"):
            from diffusers import EulerAncestralDiscreteScheduler

            from tests.helpers.tiny_sdxl import make_sdxl_components, save_sdxl_folder

            c = make_sdxl_components(tmp)
            c["unet"] = _sdxl_unet(128 if kind == "sdxl" else 64)
            if kind == "sdxl-turbo":  # what SDXL-Turbo ships: Euler ancestral, trailing spacing
                c["scheduler"] = EulerAncestralDiscreteScheduler.from_config(
                    c["scheduler"].config, timestep_spacing="trailing"
                )
            return save_sdxl_folder(c, tmp / "model")
        if kind == "sd3":
            from diffusers import SD3Transformer2DModel

            from tests.helpers.tiny_sd3 import JOINT, PROJECTION, make_sd3_components, save_sd3_folder

            c = make_sd3_components(tmp, with_t5=False)
            c["transformer"] = SD3Transformer2DModel(
                sample_size=128,  # VAE latent cells: 1024 px, SD 3's native size
                patch_size=2,
                in_channels=16,
                num_layers=1,
                attention_head_dim=8,
                num_attention_heads=2,
                caption_projection_dim=16,
                joint_attention_dim=JOINT,
                pooled_projection_dim=2 * PROJECTION,
                out_channels=16,
                pos_embed_max_size=64,
            ).eval()
            return save_sd3_folder(c, tmp / "model")
        from tests.helpers.tiny_flux import make_flux_components, save_flux_folder

        return save_flux_folder(make_flux_components(tmp, guidance_embeds=kind == "flux-dev"), tmp / "model")
    finally:
        torch.random.set_rng_state(state)


_FAMILY_FOLDERS: dict[str, Path] = {}


def _stand_in(source: str, folder: Path, family_root: Path) -> str:
    """Substitution 1: SD 512-px hub ids → the tiny folder, other families' ids → a tiny model of the family;
    local paths and ``toy`` pass through."""
    from multidiffusion.adapters.loading.resolve import looks_like_repo_id

    if source in SD_512_IDS:
        return str(folder)
    if source in FAMILY_IDS:
        kind = FAMILY_IDS[source]
        if kind not in _FAMILY_FOLDERS:
            _FAMILY_FOLDERS[kind] = _build_family_folder(kind, family_root)
        return str(_FAMILY_FOLDERS[kind])
    if looks_like_repo_id(source) and not Path(source).exists():
        pytest.fail(f"no tiny stand-in for hub model {source!r}: add one to SD_512_IDS, FAMILY_IDS or a new rule")
    return source


def _capped(method: Callable[..., Any], panorama: bool) -> Callable[..., Any]:
    """Substitutions 3 and 4 on a pipeline method, whichever way its arguments were passed."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        a["num_inference_steps"] = min(a["num_inference_steps"], MAX_STEPS)
        if a.get("sync"):
            sync = SyncSettings() if a["sync"] is True else a["sync"]
            stop = sync.stop_step
            a["sync"] = dataclasses.replace(
                sync, stop_step=MAX_SYNC_STEPS if stop is None else min(stop, MAX_SYNC_STEPS)
            )
            if panorama:
                a["width"] = min(a["width"], MAX_SYNC_WIDTH)
        return method(*bound.args, **bound.kwargs)

    return wrapper


@pytest.fixture(scope="module")
def family_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the other families' tiny stand-ins are saved (each built the first time a block names it)."""
    return tmp_path_factory.mktemp("docs_families")


@pytest.fixture
def doc_env(
    tiny_sd_folder: Path, family_root: Path, one_thread: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A temporary working folder with ``examples/``, and the substitutions of the module docstring (one
    intra-op thread: fastest for tiny tensors)."""
    from multidiffusion.pipeline import MultiDiffusionPipeline

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from_pretrained = MultiDiffusionPipeline.from_pretrained.__func__

    def substituted(cls: type, repo_or_folder: str, **kwargs: Any) -> Any:
        if str(kwargs.get("device") or "").startswith("cuda"):
            kwargs["device"] = "cpu"  # substitution 2
        if kwargs.get("dtype") in ("float16", "fp16"):
            kwargs["dtype"] = "float32"
        return from_pretrained(cls, _stand_in(repo_or_folder, tiny_sd_folder, family_root), **kwargs)

    monkeypatch.setattr(MultiDiffusionPipeline, "from_pretrained", classmethod(substituted))
    for name, panorama in (("__call__", True), ("settings", True), ("regions", False), ("check_regions", False)):
        monkeypatch.setattr(MultiDiffusionPipeline, name, _capped(getattr(MultiDiffusionPipeline, name), panorama))
    return tmp_path


# --- running blocks ------------------------------------------------------------------------------------


def shell_commands(code: str) -> Iterator[list[str]]:
    """The commands of a shell block as argv lists (see the module docstring)."""
    joined = re.sub(r"\\\n", " ", code)
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        argv: list[str] = []
        for token in lexer:
            if token in ("&&", ";"):
                if argv:
                    yield argv
                argv = []
            else:
                argv.append(token)
        if argv:
            yield argv


def _cli_argv(args: list[str]) -> list[str]:
    """Substitution 2 on a ``multidiffusion`` command line."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--device" and out[i + 1].startswith("cuda"):
            out[i + 1] = "cpu"
        if arg == "--dtype" and out[i + 1] in ("float16", "fp16"):
            out[i + 1] = "float32"
    return out


def run_shell(block: Block, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the block's commands; returns the reasons of the commands not run."""
    from multidiffusion.interfaces.cli.main import main

    not_run: list[str] = []
    for argv in shell_commands(block.code):
        while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
            name, value = argv.pop(0).split("=", 1)
            monkeypatch.setenv(name, value)
        if argv[:2] == ["pip", "install"]:
            not_run.append(f"`{shlex.join(argv)}`: installs packages (CI runs the README's install line)")
        elif argv[:3] == ["python", "-m", "pytest"]:
            not_run.append("`python -m pytest`: the test suite itself")
        elif argv[:2] == ["python", "-c"]:
            proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, check=False)
            assert proc.returncode == 0, f"{block.name}: `{shlex.join(argv)}` failed: {proc.stderr}"
        elif argv[0] == "multidiffusion":
            args = _cli_argv(argv[1:])
            status = main(args)
            assert status == 0, f"{block.name}: `{shlex.join(argv)}` exited with {status}"
            from multidiffusion.interfaces.cli.launch import output_paths

            count = int(args[args.index("--num-images") + 1]) if "--num-images" in args else 1
            for flag in ("--out", "--segmentation"):
                if flag in args:
                    value = args[args.index(flag) + 1]
                    for written in map(Path, output_paths(value, count) if flag == "--out" else [value]):
                        assert written.is_file(), f"{block.name}: `{shlex.join(argv)}` wrote no {written}"
        else:
            pytest.fail(f"{block.name}: no rule to run `{shlex.join(argv)}`; add one or mark the block no-test")
    return not_run


PRINT_CLAIM = re.compile(r"^\s*print\(.*\)\s*#\s*(?P<claim>True|False)\b")


def run_python(block: Block) -> None:
    """Execute the block; check the ``print(…)  # True/False`` claims against what it printed."""
    claims = [m.group("claim") for m in map(PRINT_CLAIM.match, block.code.splitlines()) if m]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.code, block.name, "exec"), {"__name__": "__doc_snippet__"})
    printed = iter(out.getvalue().splitlines())
    for claim in claims:  # in order, among everything printed
        found = any(line.strip() == claim for line in printed)
        assert found, f"{block.name}: a print claims {claim}; printed {out.getvalue()!r}"


def run_json(block: Block) -> None:
    from multidiffusion.pipeline.inputs.region_file import parse_region_file

    data = json.loads(block.code)
    if isinstance(data, dict) and "regions" in data:
        parse_region_file(data, Path("examples"))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_doc_block_runs(block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.no_test is not None:
        pytest.skip(f"marked no-test: {block.no_test}")
    if block.lang in LISTING:
        pytest.skip("a text listing, not code")
    if block.lang not in PYTHON | SHELL | {"json"}:
        pytest.fail(f"{block.name}: code block with tag {block.lang!r}; use python, bash, json or text")
    request.getfixturevalue("doc_env")
    if block.lang in PYTHON:
        run_python(block)
    elif block.lang == "json":
        run_json(block)
    else:
        not_run = run_shell(block, monkeypatch)
        ran = len(list(shell_commands(block.code))) - len(not_run)
        if ran == 0:
            pytest.skip("; ".join(not_run))


def test_every_doc_file_is_scanned() -> None:
    """The blocks come from the README and every page of docs/, and each fence was parsed."""
    scanned = {b.path for b in BLOCKS}
    assert ROOT / "README.md" in scanned
    for path in DOC_FILES:
        fences = sum(1 for line in path.read_text().splitlines() if line.startswith("```"))
        assert fences == 2 * sum(1 for b in BLOCKS if b.path == path), path.name


def test_block_extraction() -> None:
    """Fences, language tags, the no-test marker and line numbers, on a small document."""
    import tempfile

    text = "# t\n\n```python\nx = 1\n```\n\n<!-- no-test: needs a GPU -->\n```bash\nnvidia-smi\n```\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.md"
        path.write_text(text)
        blocks = extract_blocks(path)
    assert [(b.line, b.lang, b.code, b.no_test) for b in blocks] == [
        (3, "python", "x = 1\n", None),
        (8, "bash", "nvidia-smi\n", "needs a GPU"),
    ]
    commands = list(shell_commands('A=1 pip install -e ".[test]" && multidiffusion x \\\n --out y.png # c\n'))
    assert commands == [["A=1", "pip", "install", "-e", ".[test]"], ["multidiffusion", "x", "--out", "y.png"]]


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)  # no headings inside code blocks
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link of the README and docs/ names an existing file, and an existing heading if any."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for match in LINK.finditer(text):
        target = match.group("target")
        if re.match(r"^[a-z]+:", target):
            continue  # http(s) and other schemes: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: dead link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{path.name}: no heading for #{anchor} in {linked.name}"
