"""Ctrl-C as an orderly stop: one request sets the stop event, a second one later interrupts."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from beast.signals import SAME_REQUEST_S, stop_on_signals


def test_signals_at_once_are_one_request_and_a_later_one_interrupts() -> None:
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C...
        os.kill(os.getpid(), signal.SIGINT)  # ...and torchrun's forwarded copy of it
        time.sleep(0.05)
        assert stop.is_set()
        time.sleep(SAME_REQUEST_S)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
