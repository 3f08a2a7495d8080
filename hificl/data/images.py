"""Opening record images: loaders only carry paths, so a bad image surfaces here, named, whether it is read
whole (training, evaluation) or only as far as its header (the preflight before the first training step)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hificl.errors import DataError


@contextmanager
def _named_errors(path: Path) -> Iterator[None]:
    """One sentence naming the path for every way PIL can fail on a file."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist.") from None
    except PermissionError:
        raise DataError(f"image file {path} cannot be read (permission denied).") from None
    except UnidentifiedImageError:
        raise DataError(f"image file {path} is not an image PIL can read (corrupt or wrong format).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image file {path} cannot be decoded: {exc}.") from None


def open_image(path: Path) -> Image.Image:
    """Decode one image as RGB; a missing, unreadable or corrupt file raises DataError naming the path."""
    with _named_errors(path), Image.open(path) as image:
        return image.convert("RGB")  # convert() decodes fully, so truncated files fail here, not later


def check_image_header(path: Path) -> None:
    """Open an image far enough to read its header (format, size): cheap, and names a missing or non-image file."""
    with _named_errors(path), Image.open(path) as image:
        image.size  # noqa: B018 - the header has been parsed once size is known
