"""Sub-commands of the ``dynface`` CLI (see dynface.cli)."""

from __future__ import annotations

from collections.abc import Callable


def sigterm_as_ctrl_c() -> Callable[[], None]:
    """Make SIGTERM (``timeout``, systemd, Slurm, a cluster's pre-emption) raise KeyboardInterrupt, so that a command
    stops as on Ctrl-C (its clean-up and summary run). Returns the function that puts the old handler back; does
    nothing outside the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, old)
