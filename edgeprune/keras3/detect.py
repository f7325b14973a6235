"""Which Keras wrote a model file, told from its content (no Keras import needed), and reading a
Keras 3 file's config. The one detector of Keras 3 files: edgeprune.models and load_keras3 both
use `model_file`.

A `.keras` file is a zip archive (config.json, metadata.json with `keras_version`,
model.weights.h5); an `.h5` model file is HDF5 with `model_config` and `keras_version`
attributes. Both Kerases write both; a `keras_version` of 3 or more means Keras 3, anything else
(2.x, or none recorded) tf_keras."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

from edgeprune.errors import InputFileError

_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A Keras model file as its content describes it."""

    path: Path
    container: str  # "keras" (zip archive) | "h5" (HDF5)
    keras_version: str | None  # as the file records it; None when it records none

    @property
    def keras3(self) -> bool:
        return is_keras3_version(self.keras_version)

    @property
    def format(self) -> str:
        """"keras3" for a file saved by Keras 3, otherwise the tf_keras container: "keras" or "h5"."""
        return "keras3" if self.keras3 else self.container

    @property
    def readable_names(self) -> tuple[str, ...]:
        """The endings the file's name needs for Keras to read it (none: any name). Keras picks its
        reader by the name, except tf_keras for HDF5, which it recognises by content."""
        if self.container == "keras":
            return (".keras",)
        return (".h5", ".hdf5") if self.keras3 else ()


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


def _is_hdf5(path: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _read_archive(path: Path) -> ModelFile:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError, EOFError) as e:
        raise InputFileError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})",
                             "the file is corrupt or truncated: save the model again") from None
    if "config.json" not in names:
        raise InputFileError(f"{path} is a zip file but not a Keras model (no config.json)", "check the file")
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return ModelFile(path, "keras", None if version is None else str(version))


def _read_hdf5(path: Path) -> ModelFile:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            has_config = "model_config" in f.attrs
            version = _h5_attr(f.attrs, "keras_version")
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"{path} is not a readable .h5 file ({' '.join(str(e).split())[:120]})",
                             "the file is corrupt or truncated: save the model again") from None
    if not has_config:
        raise InputFileError(f"{path} is an HDF5 file without a Keras model config (weights only?)",
                             "save the whole model with model.save('model.h5')")
    return ModelFile(path, "h5", version)


def _unknown_type(path: Path) -> InputFileError:
    return InputFileError(f"{path} has an unknown model file type {path.suffix.lower() or '(none)'}",
                          "give a .keras or .h5 file or a SavedModel folder")


def model_file(path) -> ModelFile:
    """What a Keras model file is, decided by its content whatever its name: a zip archive or an
    HDF5 file, saved by Keras 3 or tf_keras. A file that is neither is refused (InputFileError)
    with what its name promised: a `.keras` file that is no zip archive is unreadable, a file with
    another name is of an unknown model file type."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{p} is a folder, not a Keras model file", "give a .keras or .h5 file")
    if not p.exists():
        raise InputFileError(f"model file not found: {p}", "check the path")
    suffix = p.suffix.lower()
    if zipfile.is_zipfile(p):
        read = _read_archive
    elif _is_hdf5(p):
        read = _read_hdf5
    elif suffix == ".keras":
        read = _read_archive  # fails, saying why the file is no archive
    elif suffix in (".h5", ".hdf5"):
        read = _read_hdf5
    else:
        raise _unknown_type(p)
    try:
        return read(p)
    except InputFileError:
        if suffix not in _KERAS_SUFFIXES:  # a zip or HDF5 file that is no Keras model, nor named like one
            raise _unknown_type(p) from None
        raise


def check_name(file: ModelFile) -> None:
    """Refuses a file whose name would make Keras pick the wrong reader, naming the right one."""
    names = file.readable_names
    if not names or file.path.name.endswith(names):
        return
    kind = "a .keras archive" if file.container == "keras" else "an .h5 model"
    saved_by = f" saved by Keras {file.keras_version}" if file.keras_version else ""
    raise InputFileError(
        f"{file.path} holds {kind}{saved_by}, but its name does not end in {' or '.join(names)}",
        f"Keras picks its reader by the name: rename it to {file.path.with_suffix(names[0]).name}",
    )


def is_keras3_file(path) -> bool:
    """True for a `.keras` zip archive whose metadata.json records keras_version >= 3, or an HDF5
    model file whose `keras_version` attribute is >= 3. Decided by the file's content, not its
    name; a missing or unreadable file is not a Keras 3 file."""
    try:
        return model_file(path).keras3
    except InputFileError:
        return False


def read_source(path: Path) -> Source:
    if not path.is_file():
        raise InputFileError(f"model file {path} does not exist", hint="check the path")
    try:
        file = model_file(path)
    except InputFileError:
        file = None
    if file is None or not file.keras3:
        raise InputFileError(
            f"{path} is not a model saved by Keras 3 (a .keras archive or .h5 with keras_version >= 3)",
            hint="load tf_keras models with the ordinary model loader",
        )
    check_name(file)
    try:
        if file.container == "keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            return Source(path, "keras", file.keras_version, config)
        import h5py

        with h5py.File(path, "r") as f:
            config = json.loads(_h5_attr(f.attrs, "model_config"))
        return Source(path, "h5", file.keras_version, config)
    except (OSError, KeyError, json.JSONDecodeError, zipfile.BadZipFile) as e:
        raise InputFileError(
            f"cannot read the Keras 3 model file {path}: {e}", hint="the file looks corrupt; save it again"
        ) from e
