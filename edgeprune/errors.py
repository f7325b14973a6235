"""The error tree. Every error a user can cause is an EdgepruneError: it says what was received,
what was expected and how to fix it, and knows the exit code the CLI returns for it."""

from __future__ import annotations

import re


class EdgepruneError(Exception):
    """Bad input or a refused request: the CLI prints one line and exits with `exit_code` (2)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message.rstrip(".")
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message
        if self.hint:
            text += f"; {self.hint.rstrip('.')}"
        text = " ".join(text.split())
        return text if text.endswith(("?", "!", ".")) else text + "."


class InputFileError(EdgepruneError):
    """A file or folder the user named is missing, unreadable or corrupt."""


class RecipeError(EdgepruneError):
    """The recipe (or a CLI override of it) is invalid."""


class ModelError(EdgepruneError):
    """A model that edgeprune cannot work on (Keras 3, subclassed, wrong shape...)."""


class DataError(EdgepruneError):
    """A dataset that is missing or does not fit the model."""


class OutputError(EdgepruneError):
    """An output path that cannot be written, or would overwrite something."""


class PruningError(EdgepruneError):
    """Pruning did not reach what was asked (a target missed, a pattern violated, a layer refused)."""


class DeviceError(EdgepruneError):
    """A device target that cannot be reached, authorized or used."""


class SchemaError(EdgepruneError):
    """A saved JSON value with an unknown or unsupported schema version, or a malformed one."""


class RegressionFound(EdgepruneError):
    """`edgeprune compare` found a regression above the threshold: exit code 3, for CI."""

    exit_code = 3


class InternalError(EdgepruneError):
    """A failure that is edgeprune's fault, not the user's: exit code 1."""

    exit_code = 1


def toml_problem(error: Exception) -> tuple[str, str | None]:
    """A tomllib.TOMLDecodeError as (what is wrong, where): ("invalid value", "line 6, column 5").
    `where` is None when the parser gave no position."""
    if getattr(error, "lineno", None):  # Python 3.14 and later keep the position apart
        what, where = str(getattr(error, "msg", error)), f"line {error.lineno}, column {error.colno}"
    else:
        m = re.fullmatch(r"(.*) \(at (line \d+, column \d+|end of document)\)", str(error), re.S)
        what, where = (m.group(1), m.group(2)) if m else (str(error), None)
        where = "the end of the file" if where == "end of document" else where
    return what[:1].lower() + what[1:], where
