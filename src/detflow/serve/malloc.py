"""Cap glibc's malloc arenas in the server process.

glibc gives each thread that meets contention its own malloc arena (up to 8 per core), and
memory freed into one is rarely returned or reused by another. The server's threads (event
loop, request threads, one worker per session, ONNX Runtime's pools) each decode and allocate
images of many sizes, so RSS climbed for the first few thousand requests before it settled:
+122 MB over 10,000 requests with 2 sessions, +35 MB with the arenas capped at 2
(docs/benchmarks.md). Same effect as ``MALLOC_ARENA_MAX=2``; a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
SERVER_ARENAS = 2


def cap_malloc_arenas(arenas: int = SERVER_ARENAS) -> bool:
    """``mallopt(M_ARENA_MAX, arenas)`` when this process runs on glibc; call it before the
    threads start. Returns whether the cap was set."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
    done = bool(mallopt(M_ARENA_MAX, int(arenas)))
    log.debug("malloc arenas capped at %d: %s", arenas, done)
    return done
