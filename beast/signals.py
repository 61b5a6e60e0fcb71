"""Ctrl-C and SIGTERM as an orderly stop, for the modes that run until told (train, serve)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

# A terminal's Ctrl-C reaches a torchrun rank twice, at once: from the terminal and forwarded by torchrun. Signals
# this close to the first are that one request; a later one is the user asking again, to interrupt at once.
SAME_REQUEST_S = 1.0


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (a second one, `SAME_REQUEST_S` or more later, raises KeyboardInterrupt); the old
    handlers come back after."""
    first: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if not first:
            first.append(now)
            stop.set()
        elif now - first[0] >= SAME_REQUEST_S:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
