"""Test-only fault injection at named points of a commit (off unless ``RETRIEVER_TEST_FAULT`` is set).

``RETRIEVER_TEST_FAULT=<point>`` makes the process kill itself with SIGKILL at that point, as a power cut or
an OOM kill would; ``<point>:<seconds>`` makes it sleep there instead (to line up concurrent processes).
Points: ``after-index-write`` (the next version's FAISS file is written), ``before-manifest-rename`` (the
temporary manifest is written and synced, not yet renamed), ``after-manifest-rename`` (committed, superseded
files not yet removed).
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "RETRIEVER_TEST_FAULT"


def fault_point(name: str) -> None:
    """Die or sleep at ``name`` when ``RETRIEVER_TEST_FAULT`` names it; otherwise return at once."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, seconds = wanted.partition(":")
    if point != name:
        return
    if seconds:
        time.sleep(float(seconds))
    else:
        os.kill(os.getpid(), signal.SIGKILL)
