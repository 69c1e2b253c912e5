"""The server caps glibc's malloc arenas (detflow.serve.malloc) on a glibc system."""

import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_the_arena_cap_is_set_on_glibc():
    code = "from detflow.serve.malloc import cap_malloc_arenas; print(cap_malloc_arenas(2))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_the_server_caps_the_arenas_before_it_starts_threads():
    import inspect

    from detflow.serve import app

    source = inspect.getsource(app.run)
    assert source.index("cap_malloc_arenas()") < source.index("Server(options)")
