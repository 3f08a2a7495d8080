"""Opening record images on demand: loaders only carry paths, so a bad image surfaces here, named."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hificl.errors import DataError


def open_image(path: Path) -> Image.Image:
    """Decode one image as RGB; a missing, unreadable or corrupt file raises DataError naming the path."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() decodes fully, so truncated files fail here, not later
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except UnidentifiedImageError:
        raise DataError(f"image file {path} is not an image PIL can read (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image file {path} cannot be decoded: {exc}") from None
