"""The six faces of a cube map, cut from an equirectangular sphere, for game engines' skyboxes.

Directions: +Y up, +Z the centre of the equirectangular image (longitude 0), +X a quarter turn to its right. Each face
is seen from inside the cube, and the faces fold out as the usual horizontal cross: ``left front right back`` in a row,
``up`` above ``front`` and ``down`` below it. So the side faces have +Y at their top, ``up`` has ``front`` at its
bottom edge and ``down`` has it at its top edge. These are the names and orientations of Unity's 6-sided skybox
(``_FrontTex`` … ``_DownTex``); three.js and Babylon.js call the same files px (right), nx (left), py (up), ny (down),
pz (front) and nz (back).

Every face pixel samples the decoded sphere at its centre's direction by bilinear interpolation that wraps around in
longitude, so neighbouring pixels of two faces that meet along an edge are neighbouring points of the sphere: no face
has an edge of its own (docs/sphere.md measures it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# name → (forward, image right, image up) of the face, as unit vectors (x, y, z)
FACES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "front": ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
    "right": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "back": ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
    "left": ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
    "up": ((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    "down": ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
}
"""The six faces in the order they are written."""


def face_directions(name: str, size: int) -> np.ndarray:
    """Unit directions (size, size, 3) through the centres of face ``name``'s pixels (row 0 at its top)."""
    forward, right, up = (np.asarray(v, dtype=np.float64) for v in FACES[name])
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0  # −1 … 1 across the face
    u, v = coords[None, :, None], coords[:, None, None]  # u: rightwards; v: downwards
    rays = forward + u * right - v * up
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def sample_equirectangular(image: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C), an equirectangular sphere (longitude −180°…180° left to right, latitude 90°…−90° top to
    bottom, pixel centres at half steps), sampled bilinearly at unit ``directions`` (…, 3): wraps around in longitude,
    clamps at the poles. Returns float64 (…, C)."""
    height, width = image.shape[:2]
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    longitude = np.arctan2(x, z)  # 0 at +Z, +90° at +X
    latitude = np.arcsin(np.clip(y, -1.0, 1.0))
    col = (longitude + math.pi) / (2 * math.pi) * width - 0.5
    row = np.clip((math.pi / 2 - latitude) / math.pi * height - 0.5, 0.0, height - 1.0)
    c0, r0 = np.floor(col), np.floor(row)
    fc, fr = (col - c0)[..., None], (row - r0)[..., None]
    c0, r0 = c0.astype(np.int64), r0.astype(np.int64)
    c1, r1 = (c0 + 1) % width, np.minimum(r0 + 1, height - 1)
    c0 %= width
    pixels = image.astype(np.float64)
    top = pixels[r0, c0] * (1 - fc) + pixels[r0, c1] * fc
    bottom = pixels[r1, c0] * (1 - fc) + pixels[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def cube_faces(image: np.ndarray, size: int | None = None) -> dict[str, np.ndarray]:
    """The six faces (size, size, C) of the equirectangular ``image`` (H, W, C) uint8, in :data:`FACES` order;
    ``size`` defaults to W / 4, the sphere's own density at the equator."""
    size = size if size is not None else max(1, image.shape[1] // 4)
    return {
        name: np.clip(np.rint(sample_equirectangular(image, face_directions(name, size))), 0, 255).astype(np.uint8)
        for name in FACES
    }


def write_cubemap(image: np.ndarray, folder: str | Path, size: int | None = None) -> list[Path]:
    """Write the six faces of the equirectangular ``image`` (H, W, 3) uint8 as ``front.png`` … ``down.png`` into
    ``folder`` (made if missing), each atomically; returns their paths."""
    from io import BytesIO

    from PIL import Image

    from multidiffusion.pipeline.files.atomic import ordinary_mode, write_atomically

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, face in cube_faces(image, size).items():
        buffer = BytesIO()
        Image.fromarray(face).save(buffer, format="PNG")
        path = out / f"{name}.png"
        write_atomically(path, buffer.getvalue(), mode=ordinary_mode(path))
        paths.append(path)
    return paths
