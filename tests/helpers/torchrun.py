"""Launching ``torchrun`` from a test: one free loopback port, the tests' environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(nproc: int, args: tuple[str, ...], log_dir: Path | None) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        f"--master-port={free_port()}",
        "--master-addr=127.0.0.1",
    ]
    if log_dir is not None:  # each rank's stdout and stderr in its own file (see rank_log)
        command += [f"--log-dir={log_dir}", "--redirects=3"]
    return [*command, *args], env


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command, env = _command(nproc, args, None)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def torchrun_started(nproc: int, *args: str, log_dir: Path) -> subprocess.Popen[str]:
    """``torchrun`` started, not waited for; each rank's output goes to its files under ``log_dir``."""
    command, env = _command(nproc, args, log_dir)
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def rank_log(log_dir: Path, rank: int, stream: str = "stderr") -> str:
    """What local rank ``rank`` wrote to ``stream`` (``stdout`` or ``stderr``) under ``torchrun_started``."""
    found = sorted(log_dir.glob(f"*/attempt_*/{rank}/{stream}.log"))
    return found[-1].read_text(errors="replace") if found else ""
