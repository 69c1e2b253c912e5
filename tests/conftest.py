"""Shared fixtures: the repository, its bundled dataset, the shared real datasets, and
`run` for real subprocess calls of DVC and the stage scripts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
THERMAL = REPO / "data" / "sources" / "thermal_dogs_people"
SHARED = REPO.parent / "shared" / "datasets"


def run(args, cwd, *, check=True, env=None, timeout=900) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment first on PATH; output captured."""
    full_env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    result = subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """One tiny reproduced detflow repository (tests/repo_helpers.py) shared by the slow test
    modules; a module that changes its workspace puts it back."""
    from repo_helpers import make_tiny_repo

    return make_tiny_repo(tmp_path_factory.mktemp("detflow") / "repo")


@pytest.fixture(autouse=True)
def _no_python_sigchld_handler():
    """After each test, SIGCHLD back at its default action when a test left a Python handler.

    torch's DataLoader installs one (once per process) when a test iterates it with workers.
    In a worker that then ran OpenVINO bf16 inference on its main thread
    (tests/deploy/test_optimize.py), the next child exit killed the worker with a SIGSEGV
    sent by the kernel (``si_code`` SI_KERNEL, in ``poll``: it could not build the handler's
    signal frame), in that module or in the next one that started a child. Reproduced with
    tests/train/test_train.py before test_optimize.py; gone without the bf16 variant or
    without the handler; not reproduced with OpenVINO alone. No detflow command trains and
    runs OpenVINO in one process. torch does not install it again (it keeps a flag); a
    DataLoader then finds a dead worker by its own timeout checks."""
    yield
    handler = signal.getsignal(signal.SIGCHLD)
    if callable(handler):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


@pytest.fixture
def thermal_source() -> Path:
    return THERMAL


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (real datasets beside the checkout)")
    return SHARED


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``make test``: ``-n auto``) a module's tests run on one worker, so
    each module-scoped fixture is built once; the modules that use the session's
    ``tiny_repo`` share one worker, so that repository is built once and its workspace is
    never changed by two tests at a time. (xdist's own ``--dist loadgroup`` marks do not
    reach its scheduler under pytest 9, which no longer reads ``item._nodeid``.)"""
    from xdist.scheduler import LoadScopeScheduling

    shared = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "tests").rglob("test_*.py")
        if re.search(r"\btiny_repo\b", path.read_text())  # the fixture, not make_tiny_repo
    }

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return "tiny_repo" if module in shared else module

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    """(model.onnx, images folder) for the server tests (tests/serve_helpers.py)."""
    from serve_helpers import export_served_model

    return export_served_model(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture
def serve(tmp_path):
    """``serve(args)`` starts ``detflow serve`` on a free loopback port (stopped after the
    test; it must exit 0 without having imported torch)."""
    from serve_helpers import ServeProcess

    started = []

    def start(args: list[str]):
        server = ServeProcess(args, cwd=tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        code, output = server.stop()
        assert code == 0, output[-3000:]
