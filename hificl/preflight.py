"""Checks run before the first training step, so that a bad file fails in seconds instead of after training."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hificl.data.images import check_image_header


def check_images(records: Iterable[Any]) -> None:
    """Open every record's image far enough to read its header (format, size): a missing, unreadable or
    non-image file is named now; decoding every pixel would cost as much as the run's own data loading."""
    for path in sorted({Path(r.image_path) for r in records}):
        check_image_header(path)
