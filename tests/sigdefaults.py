"""Signal dispositions for tests that send SIGINT, whatever way pytest was started.

A shell gives a background job (``make test &``, ``nohup make test &``) SIGINT ignored, and a
process started with a signal ignored keeps it ignored: Python then installs no
KeyboardInterrupt handler, and neither does ``tracking.stage_run`` (by design, an ignored
Ctrl-C stays ignored in a real stage). Tests that check what Ctrl-C does must therefore set
the disposition they test themselves:

- in-process: the ``sigint_default`` fixture (tests/conftest.py) installs Python's
  ``signal.default_int_handler`` for the test's duration;
- in a child process: ``subprocess.Popen(..., preexec_fn=default_signals)`` starts the child
  with SIGINT and SIGTERM at SIG_DFL, so that Python installs its handler as it would when
  started from a terminal; ``preexec_fn=ignore_sigint`` starts it the way a background job is.

``preexec_fn`` runs in the child between fork and exec: use it from the main thread only
(``relkit.run_many`` runs subprocesses from threads and does not use it).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


def default_signals() -> None:
    """preexec_fn: the child starts with SIGINT and SIGTERM at their default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def ignore_sigint() -> None:
    """preexec_fn: the child starts with SIGINT ignored, as a background job of a shell does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def python_sigint() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in this process (Python's own handler) until exit."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
