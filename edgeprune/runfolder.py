"""Run folders: built under a temporary sibling and renamed into place when complete, so a
crash never leaves a half-written run, and an existing run is replaced only with --force."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgeprune.errors import OutputError

RUN_MARKERS = ("report.json", "bench.json")


def holds_run(path: Path) -> bool:
    return any((path / m).is_file() for m in RUN_MARKERS)


class RunFolder:
    """Use as a context manager: write into `.path` (a temp folder); on success it becomes `final`."""

    def __init__(self, final: Path | str, force: bool = False):
        self.final = Path(final)
        self.force = force
        if self.final.exists():
            if not self.final.is_dir():
                raise OutputError(f"the output path {self.final} is a file, not a folder", "choose another --out")
            if any(self.final.iterdir()):
                if not holds_run(self.final):
                    raise OutputError(f"the output folder {self.final} holds files that are not an edgeprune run",
                                      "choose an empty or new folder with --out")
                if not force:
                    raise OutputError(f"the output folder {self.final} already holds a run",
                                      "pass --force to replace it, or choose another --out")
        # the folders made for it (innermost first), removed again if the run fails
        self.made = [d for d in [self.final.parent, *self.final.parent.parents] if not d.exists()]
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent))
            os.chmod(self.path, 0o777 & ~_umask())  # as a plain mkdir would
        except OSError as e:
            raise OutputError(f"cannot write the output folder {self.final}: {e.strerror or e}",
                              "choose a writable location with --out") from None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            for d in self.made:
                try:
                    d.rmdir()
                except OSError:  # not empty: something else is in it now
                    break
            return
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """0o666 less the process umask: what a plain open() would have given the file."""
    return 0o666 & ~_umask()


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Writes to a temp name in the same folder, syncs, and renames over `path`, so readers see
    the old file or the new one, never half of it. The file gets the usual umask permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model_atomic(model, path: Path | str) -> None:
    """model.save() to a temp name in the same folder, then a rename over `path`, as
    write_bytes_atomic does, with the same umask permissions (mkstemp alone would leave 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".keras")
    os.close(fd)
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def check_output_file(path: Path | str, inputs: list[Path | str], force: bool) -> Path:
    """An output file must not be one of the inputs, and exists only with --force."""
    p = Path(path)
    for i in inputs:
        if Path(i).exists() and p.exists() and os.path.samefile(p, i):
            raise OutputError(f"the output {p} is the input file", "write the result to a new file with --out")
    if p.exists() and not force:
        raise OutputError(f"{p} already exists", "pass --force to replace it, or choose another --out")
    if p.exists() and p.is_dir():
        raise OutputError(f"{p} is a folder", "give a file name with --out")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {p}: the folder {parent} does not exist", "create it or choose another --out")
    return p


def check_output_folder(path: Path | str, inputs: list[Path | str | None]) -> None:
    """A run folder replaced with --force must not hold one of the run's inputs."""
    out = Path(path)
    if not out.is_dir():
        return
    root = out.resolve()
    for i in inputs:
        if i is not None and Path(i).exists() and Path(i).resolve().is_relative_to(root):
            raise OutputError(f"the output folder {out} holds an input of the run ({i})",
                              "choose another --out")
