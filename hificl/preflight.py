"""Checks run before the first training step, so that a bad file fails in seconds instead of after training."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from hificl.errors import DataError


def check_images(records: Iterable[Any]) -> None:
    """Open every record's image far enough to read its header (format, size): a missing, unreadable or
    non-image file is named now; decoding every pixel would cost as much as the run's own data loading."""
    for path in sorted({Path(r.image_path) for r in records}):
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - the header has been parsed once size is known
        except FileNotFoundError:
            raise DataError(f"image file {path} does not exist.") from None
        except PermissionError:
            raise DataError(f"image file {path} cannot be read (permission denied).") from None
        except UnidentifiedImageError:
            raise DataError(f"image file {path} is not an image PIL can read (corrupt or wrong format).") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"image file {path} cannot be read: {err}.") from None
