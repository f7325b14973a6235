"""Muting native (C++) stderr chatter: TensorFlow's CUDA probing on import and LiteRT's
"Created TensorFlow Lite XNNPACK delegate" line on every interpreter. EDGEPRUNE_DEBUG=1 keeps it."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    """Points file descriptor 2 at /dev/null while the block runs. Python exceptions still
    propagate as usual; only text that native code writes straight to fd 2 is dropped."""
    if os.environ.get("EDGEPRUNE_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
