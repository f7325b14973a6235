"""Detecting and reading Keras 3 files (no Keras import needed)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

from edgeprune.errors import InputFileError


_KERAS_ARCHIVE_FILES = {"config.json", "metadata.json", "model.weights.h5"}


@dataclasses.dataclass(frozen=True)
class Source:
    path: Path
    format: str  # "keras" | "h5"
    keras_version: str
    config: dict  # the model config: {"class_name", "config", ...}


def is_keras3_version(version: Any) -> bool:
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    if not isinstance(version, str):
        return False
    major = version.split(".", 1)[0]
    return major.isdigit() and int(major) >= 3


def _h5_attr(attrs, key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def is_keras3_file(path) -> bool:
    """True for a `.keras` zip archive (config.json, metadata.json, model.weights.h5) saved by
    Keras >= 3, or an HDF5 model file whose `keras_version` attribute is >= 3. Decided by the
    file's content, not its name; a missing or unreadable file is not a Keras 3 file."""
    p = Path(path)
    if not p.is_file():
        return False
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as archive:
                if not _KERAS_ARCHIVE_FILES <= set(archive.namelist()):
                    return False
                metadata = json.loads(archive.read("metadata.json"))
        except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError):
            return False
        return isinstance(metadata, dict) and is_keras3_version(metadata.get("keras_version"))
    import h5py

    if not h5py.is_hdf5(p):
        return False
    try:
        with h5py.File(p, "r") as f:
            return "model_config" in f.attrs and is_keras3_version(_h5_attr(f.attrs, "keras_version"))
    except OSError:
        return False


def read_source(path: Path) -> Source:
    if not path.is_file():
        raise InputFileError(f"model file {path} does not exist", hint="check the path")
    if not is_keras3_file(path):
        raise InputFileError(
            f"{path} is not a model saved by Keras 3 (a .keras archive or .h5 with keras_version >= 3)",
            hint="load tf_keras models with the ordinary model loader",
        )
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                metadata = json.loads(archive.read("metadata.json"))
                config = json.loads(archive.read("config.json"))
            return Source(path, "keras", str(metadata["keras_version"]), config)
        import h5py

        with h5py.File(path, "r") as f:
            version = _h5_attr(f.attrs, "keras_version")
            config = json.loads(_h5_attr(f.attrs, "model_config"))
        return Source(path, "h5", version, config)
    except (OSError, KeyError, json.JSONDecodeError, zipfile.BadZipFile) as e:
        raise InputFileError(
            f"cannot read the Keras 3 model file {path}: {e}", hint="the file looks corrupt; save it again"
        ) from e
