"""Cube faces cut from an equirectangular sphere (pipeline/files/cubemap.py): each face shows the sphere in its
direction, and no edge between two faces shows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from multidiffusion.pipeline.files.cubemap import FACES, cube_faces, face_directions, write_cubemap


def _colour(directions: np.ndarray) -> np.ndarray:
    """A smooth colour for each unit direction (…, 3): three different linear ramps, 0…255."""
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    return np.stack([127.5 + 120 * x, 127.5 + 120 * y, 127.5 + 120 * (0.6 * z + 0.8 * x * y)], axis=-1)


def _sphere(height: int = 256) -> np.ndarray:
    """The equirectangular picture (height, 2 · height, 3) uint8 of :func:`_colour`."""
    width = 2 * height
    longitude = ((np.arange(width) + 0.5) / width * 2 - 1) * math.pi
    latitude = (0.5 - (np.arange(height) + 0.5) / height) * math.pi
    lon, lat = np.meshgrid(longitude, latitude)
    rays = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], axis=-1)
    return np.rint(_colour(rays)).astype(np.uint8)


def test_each_face_shows_the_sphere_in_its_direction():
    faces = cube_faces(_sphere(), size=64)
    assert list(faces) == list(FACES)
    for name, face in faces.items():
        assert face.shape == (64, 64, 3) and face.dtype == np.uint8
        truth = _colour(face_directions(name, 64))
        # bilinear interpolation of a 256-row sphere and rounding: within 2 levels of the exact colour
        assert np.abs(face.astype(np.float64) - truth).max() <= 2.0, name


def test_the_faces_meet_without_an_edge():
    """Along each of the 12 edges the step from one face's border pixel to the other face's equals, to rounding, the
    step between a face's last two pixels (the faces sample one continuous sphere at neighbouring points)."""
    size = 64
    faces = {k: v.astype(np.float64) for k, v in cube_faces(_sphere(), size=size).items()}
    borders = {"top": (slice(0, 1), slice(None)), "bottom": (slice(-1, None), slice(None))}
    borders |= {"left": (slice(None), slice(0, 1)), "right": (slice(None), slice(-1, None))}
    directions = {name: face_directions(name, size) for name in FACES}
    edges = 0
    for a in FACES:
        for side_a, index_a in borders.items():
            for b in FACES:
                for side_b, index_b in borders.items():
                    if a >= b:
                        continue
                    da = directions[a][index_a].reshape(-1, 3)
                    db = directions[b][index_b].reshape(-1, 3)
                    if np.abs(da - db).max() > 2.0 / size and np.abs(da - db[::-1]).max() > 2.0 / size:
                        continue  # not the shared edge: adjacent pixels are 2/size apart at most
                    flip = np.abs(da - db).max() > np.abs(da - db[::-1]).max()
                    pa, pb = faces[a][index_a].reshape(-1, 3), faces[b][index_b].reshape(-1, 3)
                    across = np.abs(pa - (pb[::-1] if flip else pb)).mean()
                    inner = np.abs(np.diff(faces[a], axis=0 if side_a in ("top", "bottom") else 1)).mean()
                    assert across <= 1.5 * inner + 1.0, (a, side_a, b, side_b, across, inner)
                    edges += 1
    assert edges == 12


def test_write_cubemap_names_the_faces_for_game_engines(tmp_path):
    paths = write_cubemap(_sphere(64), tmp_path / "sky")
    assert [p.name for p in paths] == ["front.png", "right.png", "back.png", "left.png", "up.png", "down.png"]
    for path in paths:
        assert Image.open(path).size == (32, 32)


@pytest.mark.parametrize("name", list(FACES))
def test_face_centres_point_where_their_names_say(name):
    centre = face_directions(name, 2).mean(axis=(0, 1))
    assert np.allclose(centre / np.linalg.norm(centre), FACES[name][0])
