"""Every repository path the docs cite (``tests/…``, ``src/…``, ``bench/…``, ``scripts/…``) exists: a doc that
points at a moved or deleted file misleads whoever follows it."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"(?<![\w/.])((?:tests|src|bench|scripts)/[\w./-]*\w)")


def exists(path: str) -> bool:
    """The file or folder, or the module of a ``module.function`` citation (``tests/helpers/reference_impl.f``)."""
    return (REPO_ROOT / path).exists() or (REPO_ROOT / f"{path.rsplit('.', 1)[0]}.py").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_path_exists(doc):
    missing = sorted({path for path in CITED.findall(doc.read_text()) if not exists(path)})
    assert not missing, f"{doc.name} cites paths that do not exist: {missing}"
