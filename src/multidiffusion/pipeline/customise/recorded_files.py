"""The files a customised run used, recorded by name and SHA-256, and found again to rerun it.

A recipe is untrusted (docs/security.md), so it never names a path that is opened. A LoRA, an embedding, a
ControlNet folder and a guide image are recorded by their own name (no folder) with the SHA-256 of their contents
(:func:`recorded_digests`; a ControlNet given as a hub repo id is recorded as that id). A rerun looks for each name
only inside the folders the user gives (:class:`FileFolders`: ``--controlnet-dir``, ``--lora-dir``,
``--embedding-dir``) and the model's own folder, hashes what it finds and compares, all before anything loads
(:func:`recorded_customisation`). A name that is missing, or whose file's hash differs, is one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError

KINDS: Mapping[str, tuple[str, str]] = {
    "controlnet": ("ControlNet", "--controlnet-dir"),
    "lora": ("LoRA", "--lora-dir"),
    "embedding": ("embedding", "--embedding-dir"),
    "guide": ("control image", "--controlnet-dir"),
}
"""Kind of recorded file → (what it is called in messages, the option that names its folders)."""

DIGEST_KINDS: tuple[str, ...] = ("controlnet", "lora", "embedding")
"""The kinds a recipe's ``customisation.sha256`` maps by name (a guide image records its own ``sha256``)."""


def safe_name(name: str) -> bool:
    """Whether ``name`` is one file's or folder's own name: not empty, no separator, not ``.`` or ``..``, no NUL."""
    return bool(name) and not any(c in name for c in "/\\\0") and name not in (".", "..")


@dataclass(frozen=True)
class FileFolders:
    """Where a rerun looks for the files its recipe names (each name in each folder, in order, then beside the model).

    Attributes:
        controlnet: Folders holding the recorded ControlNet folders and their guide images.
        lora: Folders holding the recorded LoRA files.
        embedding: Folders holding the recorded embedding files.
        model: The model's own folder (a diffusers folder, or the folder of a single-file checkpoint); None: none
            (a hub id or a model spec).
        allow_pickle: Also load pickled files found (``.ckpt``, ``.bin``, ``.pt``), which can run code when loaded.
    """

    controlnet: tuple[Path, ...] = ()
    lora: tuple[Path, ...] = ()
    embedding: tuple[Path, ...] = ()
    model: Path | None = None
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        for kind in DIGEST_KINDS:
            folders = tuple(Path(f).expanduser() for f in getattr(self, kind))
            for folder in folders:
                if not folder.is_dir():
                    raise InvalidInputError(f"{KINDS[kind][1]} {str(folder)!r} is not a folder")
            object.__setattr__(self, kind, folders)

    @classmethod
    def beside(
        cls,
        model: str | os.PathLike[str] | None,
        *,
        controlnet: Sequence[str | os.PathLike[str]] = (),
        lora: Sequence[str | os.PathLike[str]] = (),
        embedding: Sequence[str | os.PathLike[str]] = (),
        allow_pickle: bool = False,
    ) -> FileFolders:
        """The folders given, and ``model``'s own folder when it is a local folder or file (else none)."""
        home = None
        if model is not None:
            path = Path(model).expanduser()
            home = path if path.is_dir() else path.parent if path.is_file() else None
        folders = (tuple(map(Path, controlnet)), tuple(map(Path, lora)), tuple(map(Path, embedding)))
        return cls(*folders, home, allow_pickle)

    def where(self, kind: str) -> tuple[Path, ...]:
        """The folders searched for a file of ``kind`` (a guide image: the ControlNet folders), model folder last."""
        own = self.controlnet if kind == "guide" else getattr(self, kind)
        return (*own, *([self.model] if self.model is not None else []))


def digest_of(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a file, or of a folder's weight files (the model fingerprint's, cached by path, size and time)."""
    from multidiffusion.adapters.loading.fingerprint import weights_sha256

    return weights_sha256(path)


def recorded_digests(
    loras: Sequence[Any], embeddings: Sequence[Any], controls: Sequence[Any]
) -> dict[str, dict[str, str | None]]:
    """``{"controlnet": {name: sha256}, "lora": {…}, "embedding": {…}}`` of the local files a run used (specs with a
    ``path``, ControlNet specs with a ``model``; a ControlNet hub id has no entry). Two different files of one name
    map it to None: a rerun finds files by name, so it could not tell them apart (it refuses in one line)."""
    record: dict[str, dict[str, str | None]] = {}
    sources = {
        "lora": [spec.path for spec in loras],
        "embedding": [spec.path for spec in embeddings],
        "controlnet": [str(spec.model) for spec in controls if Path(str(spec.model)).exists()],
    }
    for kind, paths in sources.items():
        names: dict[str, str | None] = {}
        for path in paths:
            name, digest = Path(path).name, digest_of(path)
            names[name] = digest if names.get(name, digest) == digest else None
        if names:
            record[kind] = names
    return record


def find_file(kind: str, name: str, digest: Any, folders: FileFolders | None) -> Path:
    """The file (or ControlNet folder) named ``name`` with SHA-256 ``digest`` in the folders searched for ``kind``.

    Raises:
        InvalidInputError: the name is not a plain file name, its digest was not recorded (or two files shared
            the name), no folder was given, no folder holds it, or the one found has another hash. One line.
    """
    what, option = KINDS[kind]
    shown = repr(name[:80])
    if not safe_name(name):
        raise InvalidInputError(f"the recipe names the {what} {shown}, which is not a plain file name")
    if not isinstance(digest, str):
        raise InvalidInputError(
            f"the recipe records no single sha256 for the {what} {shown} (two different files of that name, or "
            "none), so it cannot be found again"
        )
    searched = folders.where(kind) if folders is not None else ()
    if not searched:
        raise InvalidInputError(
            f"this run used the {what} {shown} (sha256 {digest[:12]}…), which its PNG does not hold; give the "
            f"folder that holds it with {option}"
        )
    differs = None
    for folder in searched:
        candidate = folder / name
        if not (candidate.is_file() or (kind == "controlnet" and candidate.is_dir())):
            continue
        found = digest_of(candidate)
        if found == digest:
            return candidate
        differs = differs or (candidate, found)
    if differs is not None:
        found = differs[1] or "none: no weights in it"
        raise InvalidInputError(
            f"the {what} {shown} found in {str(differs[0].parent)!r} has sha256 {found[:12]}…, not the recorded "
            f"{digest[:12]}…: it is another file; give the folder of the one the image was made with ({option})"
        )
    raise InvalidInputError(
        f"the {what} {shown} (sha256 {digest[:12]}…) is in none of the folders given with {option} nor beside the "
        "model; give the folder that holds it"
    )


@dataclass(frozen=True)
class RecordedCustomisation:
    """What a recipe's ``customisation`` rebuilds, its files found and checked.

    Attributes:
        custom: The run's own :class:`~multidiffusion.pipeline.customise.customisation.Customisation`.
        regional: Per condition of the run (in its order; for regions the background first, when it has one),
            its :class:`~multidiffusion.pipeline.customise.customisation.RegionExtras`; empty: none recorded.
    """

    custom: Any
    regional: tuple[Any, ...] = ()


def uses_files(record: Mapping[str, Any] | None) -> bool:
    """Whether a checked ``customisation`` record names files (anything besides prompt weighting)."""
    return bool(record) and any(key != "prompt_weighting" for key in record)


def recorded_customisation(record: Mapping[str, Any], folders: FileFolders | None) -> RecordedCustomisation:
    """The customisation a checked ``customisation`` record (see the recipe schema) describes, each file found in
    ``folders`` by :func:`find_file` and its hash compared before anything loads.

    Raises:
        InvalidInputError: a file is missing or differs, a guide image was not a file (the run's input image, or
            one given in memory), or a label does not read as a name and a scale or token. One line.
    """
    from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
    from multidiffusion.adapters.customise.lora import LoraSpec
    from multidiffusion.pipeline.customise.customisation import Customisation, RegionExtras

    digests: Mapping[str, Any] = record.get("sha256") or {}

    def loras(labels: Sequence[str], where: str) -> tuple[Any, ...]:
        specs = []
        for label in labels:
            name, _, scale = label.rpartition(":")
            try:
                value = float(scale)
            except ValueError:
                value = math.nan
            if not name or not math.isfinite(value):
                raise InvalidInputError(f"recipe key {where} holds {label[:80]!r}; a LoRA is recorded as NAME:SCALE")
            specs.append(LoraSpec(str(find_file("lora", name, (digests.get("lora") or {}).get(name), folders)), value))
        return tuple(specs)

    def controls(items: Sequence[Mapping[str, Any]], where: str) -> tuple[Any, ...]:
        return tuple(_control(item, f"{where}[{i}]", digests, folders) for i, item in enumerate(items))

    embeddings = []
    known = digests.get("embedding") or {}
    for label in record.get("embeddings") or ():
        name = next((label[:i] for i in range(len(label) - 1, 0, -1) if label[i] == ":" and label[:i] in known), None)
        if name is None:
            raise InvalidInputError(
                f"the recipe's embedding {label[:80]!r} names no file with a recorded sha256 (NAME:TOKEN)"
            )
        path = find_file("embedding", name, known[name], folders)
        embeddings.append(EmbeddingSpec(str(path), label[len(name) + 1 :]))
    custom = Customisation(
        control=controls(record.get("control") or (), "customisation.control"),
        loras=loras(record.get("loras") or (), "customisation.loras"),
        embeddings=tuple(embeddings),
        prompt_weighting=record.get("prompt_weighting", True),
        allow_pickle=folders.allow_pickle if folders is not None else False,
    )
    region_control = record.get("region_control") or []
    region_loras = record.get("region_loras") or []
    count = max(len(region_control), len(region_loras))
    regional = tuple(
        RegionExtras(
            controls(region_control[i], f"customisation.region_control[{i}]") if i < len(region_control) else (),
            loras(region_loras[i], f"customisation.region_loras[{i}]") if i < len(region_loras) else (),
        )
        for i in range(count)
    )
    return RecordedCustomisation(custom, regional)


def _control(item: Mapping[str, Any], where: str, digests: Mapping[str, Any], folders: FileFolders | None) -> Any:
    """One recorded ControlNet: its folder found by name (or its hub id as recorded) and its guide image found."""
    from multidiffusion.adapters.loading.resolve import looks_like_repo_id
    from multidiffusion.pipeline.customise.control_spec import ControlSpec

    name = item["model"]
    image = item.get("image")
    if not isinstance(image, Mapping):
        how = "the run's input image" if image == "input image" else "an image given in memory"
        raise InvalidInputError(
            f"the ControlNet {name[:80]!r} was guided by {how}, which its PNG does not hold; run it again with the "
            "same --control-image and the settings its PNG records"
        )
    known = digests.get("controlnet") or {}
    if name in known:
        source = str(find_file("controlnet", name, known[name], folders))
    elif looks_like_repo_id(name) and not Path(name).exists():
        source = name  # a hub id, loaded as one (from the hub cache offline)
    else:
        raise InvalidInputError(
            f"recipe key {where}.model {name[:80]!r} is neither a hub repo id nor a folder with a recorded sha256"
        )
    guide = find_file("guide", image["name"], image["sha256"], folders)
    settings = (item["scale"], item.get("start", 0.0), item.get("end", 1.0), item.get("resize", "stretch"))
    return ControlSpec(source, str(guide), *settings)
