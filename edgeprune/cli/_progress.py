"""The CLI's progress reporter: bars on stderr when it is a terminal, start/end lines otherwise."""

from __future__ import annotations

import sys
import threading
import time

import click

from edgeprune import progress


class _BarTask(progress.Task):
    def __init__(self, label, total, tty):
        super().__init__(label, total)
        self.tty = tty
        self.start = time.monotonic()
        self.status = ""
        self._last = 0.0
        if not tty:
            click.echo(f"  {label}" + (f" ({total} steps)" if total else "") + " ...", err=True)
        else:
            self._draw(force=True)

    def _draw(self, force=False):
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self.start
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 24)
            text = f"  {self.label} [{bar:<24}] {self.done}/{self.total} {elapsed:5.0f}s {self.status}"
        else:
            text = f"  {self.label} ... {elapsed:5.0f}s {self.status}"
        click.echo("\r" + text[:110].ljust(110), err=True, nl=False)

    def advance(self, n=1, status=None):
        super().advance(n, status)
        if status:
            self.status = status
        if self.tty:
            self._draw()
        elif self.total and self.total >= 20:
            # Not a terminal (a log file, CI): one line per tenth of the work.
            tenth = self.done * 10 // self.total
            if tenth > getattr(self, "_tenth", 0) and self.done < self.total:
                self._tenth = tenth
                click.echo(f"  {self.label}: {self.done}/{self.total} {time.monotonic() - self.start:.0f}s "
                           f"{self.status}".rstrip(), err=True)

    def abandon(self):
        if self.tty:
            click.echo("", err=True)  # end the bar's line; the error that follows says what happened

    def close(self):
        elapsed = time.monotonic() - self.start
        if self.tty:
            self._draw(force=True)
            click.echo("", err=True)
        else:
            click.echo(f"  {self.label}: done in {elapsed:.1f}s {self.status}".rstrip(), err=True)


class ClickReporter(progress.Reporter):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def task(self, label, total):
        if self.quiet:
            return progress.Task(label, total)
        # Device workers report from their own threads at once: one redrawn bar would garble, so
        # they get plain lines.
        tty = self.tty and threading.current_thread() is threading.main_thread()
        return _BarTask(label, total, tty)

    def log(self, message):
        if not self.quiet:
            click.echo(message, err=True)


def install(quiet: bool = False) -> None:
    progress.set_reporter(ClickReporter(quiet))
