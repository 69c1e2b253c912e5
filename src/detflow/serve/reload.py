"""Hot reload: a thread that watches each model file and swaps a new one in.

Every ``interval_s`` it reads each file's size and modification time; when they change and
then hold still for one more interval (``dvc checkout`` or a copy has finished), it loads the
new file, runs it once and hands it to the model's worker, which uses it from its next run
on: queued and running requests finish, nothing is dropped. A file that does not load keeps
the old model (a warning and ``detflow_model_reloads_total{result="failed"}``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from detflow.serve.batching import BatchWorker, LoadedModel, load_model

log = logging.getLogger(__name__)


def _stat(path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class ModelWatcher:
    """Watches the files of ``workers`` (name → worker); ``on_swap(name, old, new)`` and
    ``on_fail(name, error)`` report what happened."""

    def __init__(
        self,
        workers: dict[str, BatchWorker],
        *,
        interval_s: float,
        provider: str,
        threads: int,
        sessions: int = 1,
        on_swap: Callable[[str, LoadedModel, LoadedModel], None],
        on_fail: Callable[[str, str], None],
    ):
        self.workers, self.interval_s = workers, interval_s
        self.provider, self.threads, self.sessions = provider, threads, sessions
        self.on_swap, self.on_fail = on_swap, on_fail
        self._seen = {name: _stat(w.model.path) for name, w in workers.items()}
        self._pending: dict[str, tuple[int, int] | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="serve-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def check(self) -> None:
        """One pass over the files (the thread calls it every ``interval_s``)."""
        for name, worker in self.workers.items():
            now = _stat(worker.model.path)
            if now is None or now == self._seen[name]:
                self._pending.pop(name, None)
                continue
            if self._pending.get(name) != now:  # changed: wait until it holds still
                self._pending[name] = now
                continue
            self._pending.pop(name)
            self._seen[name] = now
            old = worker.model
            try:
                new = load_model(
                    name,
                    old.path,
                    provider=self.provider,
                    threads=self.threads,
                    sessions=self.sessions,
                )
            except Exception as exc:  # noqa: BLE001 - a bad file keeps the old model
                log.warning("%s: new model not loaded, keeping %s (%s)", name, old.model_id, exc)
                self.on_fail(name, str(exc))
                continue
            if new.sha256 == old.sha256:
                continue
            worker.swap(new)
            log.warning("%s: reloaded %s -> %s", name, old.model_id, new.model_id)
            self.on_swap(name, old, new)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()
