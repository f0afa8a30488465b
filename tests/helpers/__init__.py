"""What the tests share: tiny random models built in-process, the CLI's and numerics' helpers, spies, the direct
per-view implementation of Eq. 5, the distributed worker. Tests import them as ``tests.helpers.<module>``."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder (README, docs, bench and scripts live there)."""
