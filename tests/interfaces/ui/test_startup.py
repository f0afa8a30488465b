"""``multidiffusion ui``'s start-up text speaks to a command-line user: it names ``--share`` (and ``--host``), never
the ``share=True`` of Gradio's ``launch()`` that a Python caller would set (issue 30, item 7)."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

from multidiffusion.interfaces.ui.app import startup_text

pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")


def test_the_startup_text_names_the_command_line_options():
    text = startup_text("127.0.0.1", 7860, shared=False)
    assert "http://127.0.0.1:7860" in text and "--share" in text and "--host 0.0.0.0" in text
    assert "share=True" not in text and "launch()" not in text
    shared = startup_text("0.0.0.0", 8000, shared=True)
    assert "http://127.0.0.1:8000" in shared and "--share" not in shared and "--host" not in shared


@pytest.mark.heavy
def test_the_served_command_prints_it_and_not_gradios_share_true(tmp_path):
    """The real command, served on a free port with the toy model until its text is out, then interrupted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "multidiffusion.interfaces.cli.main", "ui", "--model", "toy", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    out = b""
    try:
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 120  # a generous bound for the imports on a loaded machine
        while b"--host 0.0.0.0" not in out and time.monotonic() < deadline and proc.poll() is None:
            if selector.select(timeout=1):
                chunk = os.read(proc.stdout.fileno(), 4096)
                out += chunk
                if not chunk:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    text = (out + rest).decode(errors="replace")
    assert f"serving http://127.0.0.1:{port}" in text and "--share" in text, text
    assert "share=True" not in text, text
