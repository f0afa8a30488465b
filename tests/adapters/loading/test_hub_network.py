"""A hub id with no network and HF_HUB_OFFLINE unset: one line within seconds, not a minute of retries (issue 30,
item 6). No test reaches a real network: the hub endpoint points at closed, silent or local ports, or at a name
that cannot resolve (``.invalid`` is reserved for that)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants

from multidiffusion.adapters.loading import hub_network
from multidiffusion.core.errors import InvalidInputError

BOUND_S = 20.0  # generous: the probe waits at most PROBE_SECONDS; the retries it replaces took 35–65 s
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Hub access switched on (the suite runs with HF_HUB_OFFLINE=1), an empty hub cache in ``tmp_path``."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return monkeypatch


def _closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Answering:
    """A local HTTP server that answers every request 200 and counts the HEAD requests."""

    def __init__(self) -> None:
        seen = self.heads = []

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                seen.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering():
    server = _Answering()
    yield server
    server.close()


def _probe(repo_id: str = "someone/absent") -> tuple[str, float]:
    """The one line :func:`check_hub_reachable` raises, and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(InvalidInputError) as caught:
        hub_network.check_hub_reachable(repo_id)
    return str(caught.value), time.monotonic() - start


def test_a_refused_connection_is_one_line_at_once(online):
    port = _closed_port()
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    line, seconds = _probe()
    assert line.startswith(f"cannot reach the model hub (http://127.0.0.1:{port}: Connection refused)")
    assert "to download 'someone/absent'; connect to the network, or point --model at a local" in line
    assert "HF_HUB_OFFLINE=1" in line and "\n" not in line
    assert seconds < BOUND_S


def test_a_name_that_does_not_resolve_is_one_line_at_once(online):
    online.setattr(constants, "ENDPOINT", "http://nonexistent.invalid")
    line, seconds = _probe()
    assert line.startswith("cannot reach the model hub (http://nonexistent.invalid: ")
    assert "to download 'someone/absent'" in line and "\n" not in line
    assert seconds < BOUND_S


def test_a_hub_that_never_answers_is_given_up_on_after_the_probe_time(online):
    """A port that accepts connections and never answers (a firewall that drops, a dead proxy)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        online.setattr(hub_network, "PROBE_SECONDS", 0.5)
        line, seconds = _probe()
    assert "cannot reach the model hub" in line
    assert ("no answer within 0.5 s" in line) or ("timed out" in line.lower())
    assert 0.4 < seconds < BOUND_S


def test_a_hub_that_answers_passes(online, answering):
    online.setattr(constants, "ENDPOINT", answering.url)
    hub_network.check_hub_reachable("someone/absent")
    assert answering.heads == ["/"]


def test_any_http_status_counts_as_reachable(online):
    """A 404 or 500 from the endpoint is a hub that answers: the download says what it means."""

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert hub_network.unreachable_reason(constants.ENDPOINT) is None
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("switch", ["env", "import"])
def test_offline_mode_asks_nothing(online, answering, switch):
    online.setattr(constants, "ENDPOINT", answering.url)
    if switch == "env":
        online.setenv("HF_HUB_OFFLINE", "1")
    else:
        online.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_network.check_hub_reachable("someone/absent")
    assert answering.heads == []


def _cache(root: Path, repo_id: str, files: dict[str, str]) -> Path:
    """A hub-cache snapshot of ``repo_id`` (main revision) holding ``files``."""
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / SNAPSHOT
    for name, text in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


INDEX = json.dumps(
    {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
    }
)


def test_a_fully_cached_pipeline_asks_nothing(online, answering, tmp_path):
    online.setattr(constants, "ENDPOINT", answering.url)
    files = {"model_index.json": INDEX, "unet/config.json": "{}", "vae/config.json": "{}"}
    _cache(tmp_path, "someone/cached", files)
    assert hub_network.in_local_cache("someone/cached")
    hub_network.check_hub_reachable("someone/cached")
    assert answering.heads == []


def test_a_cached_single_model_with_weights_asks_nothing(online, tmp_path):
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    _cache(tmp_path, "someone/controlnet", {"config.json": "{}", "diffusion_pytorch_model.safetensors": "x"})
    hub_network.check_hub_reachable("someone/controlnet")


@pytest.mark.parametrize(
    "files",
    [
        {"model_index.json": INDEX, "unet/config.json": "{}"},  # the vae was never downloaded
        {"model_index.json": "[1, 2]", "unet/config.json": "{}", "vae/config.json": "{}"},
        {"config.json": "{}"},  # a single model without its weights
    ],
)
def test_a_partly_cached_repo_still_asks(online, tmp_path, files):
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    _cache(tmp_path, "someone/partly", files)
    assert not hub_network.in_local_cache("someone/partly")
    line, _ = _probe("someone/partly")
    assert "cannot reach the model hub" in line and "'someone/partly'" in line


def test_the_endpoint_shown_has_no_credentials_or_path():
    assert hub_network.shown_endpoint("https://user:secret@hub.example.org:8443/mirror/") == (
        "https://hub.example.org:8443"
    )
    assert hub_network.shown_endpoint("https://huggingface.co") == "https://huggingface.co"


def test_the_message_can_name_another_way_out(online):
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(InvalidInputError, match=r"; connect to the network, or give a local control network folder$"):
        hub_network.check_hub_reachable("someone/absent", instead="give a local control network folder")


@pytest.mark.parametrize("endpoint", ["REFUSED", "http://nonexistent.invalid"])
def test_the_command_line_says_so_within_seconds(tmp_path, endpoint):
    """The whole command, as a user runs it: exit 2, one line, no file, in seconds (HF_ENDPOINT is read by
    huggingface_hub at import, so this runs in a fresh process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}" if endpoint == "REFUSED" else endpoint
    env["HF_HOME"] = str(tmp_path / "hf")
    out = tmp_path / "x.png"
    argv = [sys.executable, "-m", "multidiffusion", "panorama", "a lake", "--model", "someone/absent"]
    start = time.monotonic()
    proc = subprocess.run([*argv, "--out", str(out), "-q"], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the model hub ("), proc.stderr[-2000:]
    assert "to download 'someone/absent'" in lines[0]
    assert not out.exists()
    assert seconds < BOUND_S
