"""The XMP packet that marks an equirectangular PNG as a 360° photo sphere (Google's GPano namespace), which photo
sites and viewers read to show it as 360° instead of as a flat picture."""

from __future__ import annotations

XMP_KEY = "XML:com.adobe.xmp"
"""The keyword of the PNG ``iTXt`` chunk that holds an XMP packet (XMP Specification Part 3, §1.1.5)."""


def gpano_xmp(width: int, height: int) -> str:
    """The XMP packet of a full equirectangular sphere of ``width`` × ``height`` px (width = 2 · height): GPano's
    ProjectionType ``equirectangular``, the full panorama's size and the cropped area, which is all of it."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a photo sphere needs a positive size, got {width}×{height}")
    fields = {
        "UsePanoramaViewer": "True",
        "ProjectionType": "equirectangular",
        "FullPanoWidthPixels": width,
        "FullPanoHeightPixels": height,
        "CroppedAreaImageWidthPixels": width,
        "CroppedAreaImageHeightPixels": height,
        "CroppedAreaLeftPixels": 0,
        "CroppedAreaTopPixels": 0,
        "PoseHeadingDegrees": 0,
    }
    attributes = "\n".join(f'    GPano:{name}="{value}"' for name, value in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"\n'
        f"{attributes}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
