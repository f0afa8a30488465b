"""Layouts uploaded to the web UI, unpacked within caps into a folder of their own (docs/ui.md).

An upload is ``layout.json`` or a zip of it with the files it names. A zip is checked from its directory before
anything is written: how many members, each member's declared size, their total, and each member's compression
ratio. Then only ``layout.json`` and the files it names are written, each copied with a cap on the bytes actually
read, since a member's declared size may lie. The folder holds nothing else, and the layout is loaded with that
folder as its root (:func:`~multidiffusion.pipeline.inputs.region_file.load_region_file`), so it can name no file
outside its upload, and messages name files as the layout writes them, never by a server path.
"""

from __future__ import annotations

import posixpath
import zipfile
import zlib
from pathlib import Path
from typing import IO

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.inputs.region_file import MAX_LAYOUT_BYTES, named_files, parse_json

LAYOUT_NAME = "layout.json"
# A layout names at most two files per region (its mask and control image; MAX_REGIONS is 256) and an init_image
# with its mask; a zip holding more members than this is no layout.
MAX_ZIP_MEMBERS = 1024
# Masks and pictures are PNG or JPEG, already compressed, so a member expands little beyond its share of the 20 MB
# upload limit (app.MAX_UPLOAD); a larger declared size is a bomb, or a format no layout needs (BMP).
MAX_MEMBER_BYTES = 32 * 2**20
# Declared sizes of all members together, and bytes written in all: a layout zip is at most the upload limit of
# PNGs and a few kB of JSON.
MAX_TOTAL_BYTES = 64 * 2**20
# Uncompressed / compressed size. Deflate shrinks PNG and JPEG data ~1:1 and JSON ~5:1; zeros shrink ~1000:1.
# Members under RATIO_FLOOR bytes are not checked: they cannot fill a disk.
MAX_RATIO = 100
RATIO_FLOOR = 2**20
CHUNK = 2**16  # bytes copied at a time
EOCD_SIZE, MAX_COMMENT = 22, 0xFFFF  # a zip's end-of-directory record, and the longest comment that may follow it


def unpack_layout(upload: Path, folder: Path, max_pixels: int) -> Path:
    """The layout file of ``upload`` (a layout JSON, or a zip of it with its files) in ``folder`` (an empty folder
    of the caller's), with only the files it names beside it. Its canvas and every picture it names (from their
    headers) have at most ``max_pixels`` px. Raises InvalidInputError, naming no server path."""
    target = folder / LAYOUT_NAME
    if not zipfile.is_zipfile(upload):
        with upload.open("rb") as source:  # one byte over the cap, for load_region_file to refuse
            target.write_bytes(source.read(MAX_LAYOUT_BYTES + 1))
        check_canvas(parse_json(target.read_bytes().decode("utf-8-sig", errors="replace"), "the layout"), max_pixels)
        return target
    count = directory_count(upload)
    if count > MAX_ZIP_MEMBERS:  # before zipfile reads the directory, keeping a record per member in memory
        shown = f"{count:,}" if count < 0xFFFF else f"{count:,} or more"
        raise InvalidInputError(f"the layout zip holds {shown} files; a layout zip holds at most {MAX_ZIP_MEMBERS}")
    try:
        with zipfile.ZipFile(upload) as archive:
            members = check_zip(archive.infolist())
            if LAYOUT_NAME not in members:
                raise InvalidInputError(f"the layout zip holds no {LAYOUT_NAME}")
            budget = MAX_TOTAL_BYTES
            with archive.open(members[LAYOUT_NAME]) as source, target.open("wb") as out:
                budget -= copy_capped(source, out, min(MAX_LAYOUT_BYTES, budget), LAYOUT_NAME)
            data = parse_json(target.read_bytes().decode("utf-8-sig", errors="replace"), f"the zip's {LAYOUT_NAME}")
            check_canvas(data, max_pixels)
            for name in sorted(named_files(data)):
                member = members.get(posixpath.normpath(name))
                if member is None or member.filename == LAYOUT_NAME:
                    continue  # the layout's loader says that it is missing, by the name the layout gives
                with archive.open(member) as source, (folder / member.filename).open("wb") as out:
                    budget -= copy_capped(source, out, min(MAX_MEMBER_BYTES, budget), repr(member.filename))
                width, height = picture_size(str(folder / member.filename), f"the layout zip's {member.filename!r}")
                if width * height > max_pixels:
                    raise InvalidInputError(
                        f"the layout zip's {member.filename!r} is {width}×{height} px; the limit is {max_pixels:,} px"
                    )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise InvalidInputError(
            f"the layout zip is damaged: {str(exc).splitlines()[0] or type(exc).__name__}"
        ) from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted members, compression methods zipfile lacks
        raise InvalidInputError(f"the layout zip cannot be read: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # a full disk; strerror names no path
        raise InvalidInputError(
            f"the layout zip cannot be unpacked here: {exc.strerror or type(exc).__name__}"
        ) from None
    return target


def check_zip(infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """The members of a layout zip by name, from its directory (nothing decompressed): flat names only, at most
    :data:`MAX_ZIP_MEMBERS`, each declared at most :data:`MAX_MEMBER_BYTES` and :data:`MAX_RATIO` times its
    compressed size, all declared at most :data:`MAX_TOTAL_BYTES`."""
    if len(infos) > MAX_ZIP_MEMBERS:
        raise InvalidInputError(
            f"the layout zip holds {len(infos):,} files; a layout zip holds at most {MAX_ZIP_MEMBERS}"
        )
    mib = 2**20
    total = 0
    for info in infos:
        name = info.filename
        if "/" in name or "\\" in name or name.startswith(".") or not name.isprintable():
            raise InvalidInputError(f"the layout zip holds {name!r}; only flat file names are read")
        if info.file_size > MAX_MEMBER_BYTES:
            raise InvalidInputError(
                f"the layout zip's {name!r} is {info.file_size / mib:,.0f} MiB unpacked; "
                f"the limit is {MAX_MEMBER_BYTES // mib} MiB a file"
            )
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
            raise InvalidInputError(
                f"the layout zip's {name!r} unpacks {info.file_size / max(1, info.compress_size):,.0f} times larger "
                f"than it is packed; the limit is {MAX_RATIO} (masks and pictures are PNG or JPEG)"
            )
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise InvalidInputError(
            f"the layout zip unpacks to {total / mib:,.0f} MiB; the limit is {MAX_TOTAL_BYTES // mib} MiB in all"
        )
    return {info.filename: info for info in infos}


def copy_capped(source: IO[bytes], out: IO[bytes], cap: int, what: str) -> int:
    """Copy ``source`` to ``out`` in chunks, refusing (one line) once more than ``cap`` bytes have come, whatever
    size was declared; the bytes copied."""
    copied = 0
    while chunk := source.read(CHUNK):
        copied += len(chunk)
        if copied > cap:
            raise InvalidInputError(f"{what} unpacks to more than {cap / 2**20:,.1f} MiB; a layout's files are smaller")
        out.write(chunk)
    return copied


def check_canvas(data: object, max_pixels: int) -> None:
    """A layout object's canvas (its ``width`` and ``height``, where they are whole numbers) is at most
    ``max_pixels``; the rest is checked by the layout's loader."""
    if not isinstance(data, dict):
        return
    width, height = data.get("width"), data.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0 and width * height > max_pixels:
        raise InvalidInputError(f"the layout's canvas is {width}×{height} px; the page paints up to {max_pixels:,} px")


def picture_size(path: str, what: str = "this file") -> tuple[int, int]:
    """(width, height) in px of the picture at ``path``, from its header (no pixel decoded); one line naming
    ``what``, never the path, when it is no picture."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                return picture.size
    except Image.DecompressionBombError:
        raise InvalidInputError(f"{what} has too many pixels to read") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidInputError(f"{what} is not a picture PIL can read") from None


def directory_count(upload: Path) -> int:
    """The number of members a zip's end-of-directory record declares, read from the file's last 64 kB (the record
    and its comment); 0xFFFF, the mark of a ZIP64 count, where the count is too large for the record."""
    with upload.open("rb") as file:
        file.seek(0, 2)
        size = file.tell()
        file.seek(max(0, size - (EOCD_SIZE + MAX_COMMENT)))
        tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + EOCD_SIZE > len(tail):
        return 0  # no record: zipfile refuses the file as damaged
    return int.from_bytes(tail[at + 10 : at + 12], "little")
