"""Images as files: read from a path or from file bytes, probed without decoding, listed from folders, and
written back as PNG bytes. Every failure is one :class:`~hpcm_deploy.errors.InputError` line."""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}


def read_image(path: str | Path):
    """A PIL image from a file; a clear :class:`InputError` when it is missing or not an image."""
    return _open_image(path, load=True)


def probe_image(path: str | Path) -> None:
    """Refuse, as :func:`read_image` would, a file that is missing or not an image, reading only its header
    (milliseconds: a lone bad input is refused before any model is loaded)."""
    _open_image(path, load=False)


def _open_image(path: str | Path, load: bool):
    """The file's image decoded (``load``) or only its header read; one :class:`InputError` for a missing file
    or one that is not an image."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such file: {p}")
    try:
        with Image.open(p) as img:
            if not load:
                return None
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{p} is not a readable image ({str(exc).splitlines()[0]})") from None


def list_images(paths: list[str | Path], suffixes: set[str]) -> list[tuple[Path, Path]]:
    """``(file, path relative to its input root)`` for files and (recursively) folders."""
    out: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            out += [(f, f.relative_to(p)) for f in files]
        elif p.exists():
            out.append((p, Path(p.name)))
        else:
            raise InputError(f"no such file or folder: {p}")
    return out


def image_from_bytes(data: bytes):
    """A PIL image from encoded file bytes (PNG, JPEG, ...); an :class:`InputError` when they are not an image."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.copy()
    except UnidentifiedImageError:
        raise InputError(f"not a readable image: {len(data)} bytes in no image format that Pillow reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"not a readable image ({str(exc).splitlines()[0]})") from None


def png_bytes(image) -> bytes:
    """A decoded PIL image as PNG file bytes (greyscale and 16-bit stay as such)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
