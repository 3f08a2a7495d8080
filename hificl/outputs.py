"""A run's output directory, written as one unit: staged beside it, then renamed into place.

    OUTPUT_DIR/method/            the trained method (hificl.methods.io)
    OUTPUT_DIR/predictions.json   one entry per evaluation sample
    OUTPUT_DIR/result.json        the result row, written last into the stage

`OutputDir.prepare` runs before any model is loaded: it refuses an output directory that already holds files
unless `overwrite` is set, checks that the parent is writable by creating the stage there, and finishes or
cleans up the stages that a killed run left. `commit` swaps the stage in with renames only, so a kill at any
moment leaves either the old outputs or the new ones, never a new adapter beside an old result. The package
deletes only the names it writes (OWNED); anything else a user put in the directory is carried over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hificl.config import expand_path
from hificl.errors import ConfigError

OWNED = ("method", "predictions.json", "result.json")
STAGE, TRASH = "hificl-stage", "hificl-trash"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_owned(directory: Path) -> None:
    """Delete the package's own entries of `directory`, then the directory if nothing else is left in it."""
    for name in OWNED:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (directory / _OwnerFile.NAME).unlink(missing_ok=True)
    if not any(directory.iterdir()):
        directory.rmdir()
    else:
        left = sorted(p.name for p in directory.iterdir())
        warnings.warn(f"{directory} holds files the package did not write ({left}); left in place.", stacklevel=2)


def _method_files() -> tuple[str, ...]:
    """What the package writes inside its own `method/` directory; anything else there is the user's."""
    from hificl.methods.exports import EXPORTS
    from hificl.methods.io import CONFIG, WEIGHTS

    return (WEIGHTS, CONFIG, *EXPORTS)


def _move_foreign(source: Path, target: Path, owned: tuple[str, ...] = OWNED) -> None:
    """Move every entry of `source` that the package did not write into `target` (renames, same file system),
    the user's files inside the package's own `method/` directory included."""
    for entry in sorted(source.iterdir()):
        if entry.name == "method" and entry.is_dir() and not entry.is_symlink() and (target / "method").is_dir():
            _move_foreign(entry, target / "method", _method_files())
        elif entry.name not in owned and entry.name != _OwnerFile.NAME and not (target / entry.name).exists():
            os.replace(entry, target / entry.name)


class _OwnerFile:
    """`.owner` in a stage or trash directory: the host and pid of the run that made it."""

    NAME = ".hificl-owner.json"

    @staticmethod
    def write(directory: Path) -> None:
        (directory / _OwnerFile.NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))

    @staticmethod
    def is_dead(directory: Path) -> bool:
        """True when the run that made `directory` ran on this host and is gone (or left no readable owner)."""
        try:
            owner = json.loads((directory / _OwnerFile.NAME).read_text())
            host, pid = owner["host"], int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return True
        return host == socket.gethostname() and not _pid_alive(pid)


@dataclass
class OutputDir:
    """The staging of one run's outputs; `path` is where they land, `stage` where they are written first."""

    path: Path
    stage: Path
    created: list[Path]  # parent directories prepare made (removed again if the run fails and they are empty)

    @classmethod
    def prepare(cls, output_dir: str | Path, *, overwrite: bool = False) -> OutputDir:
        path = Path(expand_path(output_dir)).absolute()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output_dir {path} exists and is not a directory.")
        recover(path)
        if path.is_dir():
            held = sorted(p.name for p in path.iterdir())
            if held and not overwrite:
                shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
                raise ConfigError(
                    f"output_dir {path} already holds files ({shown}); pass --overwrite (output dir "
                    "overwrite=true) to replace the package's own files in it, or choose another directory."
                )
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(f"output_dir {path} is not writable.")
            if held and (os.path.ismount(path) or Path.cwd().is_relative_to(path)):
                # the commit renames the directory itself: impossible for a mount point, unkind to a working dir
                raise ConfigError(
                    f"output_dir {path} is a mount point or holds the working directory; use a subdirectory."
                )
        parent = _existing_parent(path)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"output_dir {path} cannot be created: {parent} is not a writable directory.")
        created = [p for p in reversed(path.parents) if not p.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.{STAGE}-", dir=path.parent))
            stage.chmod(0o755)  # mkdtemp makes it private; the renamed output directory should not be
            _OwnerFile.write(stage)
        except OSError as err:
            _remove_empty(created)
            raise ConfigError(f"output_dir {path} cannot be written ({err.strerror or err}).") from None
        return cls(path, stage, created)

    def commit(self) -> Path:
        """Swap the stage in: the old directory's foreign files move over, its own files go to the trash."""
        (self.stage / _OwnerFile.NAME).unlink(missing_ok=True)
        if not self.path.exists():
            os.replace(self.stage, self.path)
            return self.path
        _move_foreign(self.path, self.stage)
        trash = self.stage.with_name(self.stage.name.replace(STAGE, TRASH))
        os.replace(self.path, trash)
        os.replace(self.stage, self.path)
        _remove_owned(trash)
        return self.path

    def discard(self) -> None:
        """A failed run: drop the stage (it holds only what this run wrote)."""
        if self.stage.exists():
            _remove_owned(self.stage)
        _remove_empty(self.created)


def _remove_empty(directories: list[Path]) -> None:
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            return


def _rank_zero() -> bool:
    """Lightning starts ranks > 0 with LOCAL_RANK / NODE_RANK set; only rank 0 writes outputs."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


@contextmanager
def staged_outputs(output_dir: str | None, *, overwrite: bool = False) -> Iterator[OutputDir | None]:
    """The run's stage (None without an output_dir, or on ranks > 0): committed by the caller, dropped on error."""
    outputs = OutputDir.prepare(output_dir, overwrite=overwrite) if output_dir and _rank_zero() else None
    try:
        yield outputs
    except BaseException:
        if outputs is not None:
            outputs.discard()
        raise


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def recover(path: Path) -> None:
    """Finish or undo what killed runs left beside `path`: a stage whose commit had begun is completed, a stage
    of a run that never committed is removed (its foreign files, if any, go back), a trash is emptied."""
    if not path.parent.is_dir():
        return
    for stage in sorted(path.parent.glob(f".{path.name}.{STAGE}-*")):
        trash = stage.with_name(stage.name.replace(STAGE, TRASH))
        if (stage / _OwnerFile.NAME).exists() and not _OwnerFile.is_dead(stage):
            continue  # another live run's stage
        if not (stage / _OwnerFile.NAME).exists() and not path.exists() and trash.exists():
            os.replace(stage, path)  # killed between the two renames of commit: finish it
        elif path.is_dir():
            _move_foreign(stage, path)
            _remove_owned(stage)
        else:
            _remove_owned(stage)
    for trash in sorted(path.parent.glob(f".{path.name}.{TRASH}-*")):
        if path.exists():
            _move_foreign(trash, path)
            _remove_owned(trash)
