"""Progress reporting hook. The library never prints: long work reports here, and the CLI
installs a reporter that draws bars on stderr. The default reporter is silent."""

from __future__ import annotations

import contextlib
from typing import Iterator


class Task:
    """One unit of long work with a known (or unknown, None) total."""

    def __init__(self, label: str, total: int | None):
        self.label = label
        self.total = total
        self.done = 0

    def advance(self, n: int = 1, status: str | None = None) -> None:
        self.done += n

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        """The work stopped before its end (an error, Ctrl-C): never reported as done."""


class Reporter:
    """Silent by default. Subclass and pass to `set_reporter` to show progress."""

    def task(self, label: str, total: int | None) -> Task:
        return Task(label, total)

    def log(self, message: str) -> None:
        pass


_reporter: Reporter = Reporter()


def set_reporter(reporter: Reporter) -> Reporter:
    """Install `reporter`; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def get_reporter() -> Reporter:
    return _reporter


@contextlib.contextmanager
def task(label: str, total: int | None = None) -> Iterator[Task]:
    t = _reporter.task(label, total)
    try:
        yield t
    except BaseException:
        t.abandon()
        raise
    t.close()


def log(message: str) -> None:
    _reporter.log(message)
