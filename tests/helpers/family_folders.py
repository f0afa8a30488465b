"""Saved tiny SDXL, SD 3 and Flux model folders (real geometry, random weights), for tests of loading and checks."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.tiny_flux import make_flux_components, save_flux_folder
from tests.helpers.tiny_sd3 import make_sd3_components, save_sd3_folder
from tests.helpers.tiny_sdxl import make_sdxl_components, save_sdxl_folder


def save_family_folders(root: Path) -> dict[str, Path]:
    """``{"sdxl": folder, "sd3": folder, "flux": folder}`` saved below ``root``."""
    return {
        "sdxl": save_sdxl_folder(make_sdxl_components(root / "sdxl-parts"), root / "tiny-sdxl"),
        "sd3": save_sd3_folder(make_sd3_components(root / "sd3-parts", with_t5=False), root / "tiny-sd3"),
        "flux": save_flux_folder(make_flux_components(root / "flux-parts", guidance_embeds=False), root / "tiny-flux"),
    }
