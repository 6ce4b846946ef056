"""The CLI as a subprocess: `maskcls-hpo dashboard` on a free port (:class:`DashboardProcess`) and a thread that
reads its pages like an open browser tab (:class:`DashboardPoller`)."""

from __future__ import annotations

from pathlib import Path

import pytest


def maskcls_hpo_command() -> list[str]:
    """argv prefix of the `maskcls-hpo` console script of this interpreter's environment."""
    import sys

    script = Path(sys.executable).with_name("maskcls-hpo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "maskcls_hpo"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for CLI subprocesses: no MASKCLS_HPO_STORAGE / OPTUNA_STORAGE from the caller, one torch
    thread."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MASKCLS_HPO_STORAGE", "OPTUNA_STORAGE")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """GET `url` -> (HTTP status, body); HTTP errors are returned as their status, not raised."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` for a child that a test stops with Ctrl-C (SIGINT): the default handling, as in a terminal.

    A shell without job control (a CI runner, `make test &` from a script) starts background commands with SIGINT
    ignored, and every child inherits that; the product leaves an ignored SIGINT alone (hpo/signals.py: background
    jobs), so such a child would never see the test's Ctrl-C. The test must not depend on how the suite was
    started.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DashboardProcess:
    """`maskcls-hpo dashboard` as a real subprocess on a free port; `.base` is http://127.0.0.1:PORT."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        import subprocess

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            maskcls_hpo_command() + ["dashboard", *args, "--port", str(self.port)],
            cwd=cwd,
            env=env or subprocess_env(),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            preexec_fn=sigint_as_in_a_terminal,
        )

    def wait_ready(self, timeout: float = 120.0) -> DashboardProcess:
        """Wait until `/api/meta` answers 200; fail with the process output if it exits or times out."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dashboard exited with {self.proc.returncode}: {self.output()}")
            try:
                if http_get(self.base + "/api/meta", timeout=5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"dashboard not ready after {timeout:.0f} s: {self.output()}")

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> str:
        """Stop it with Ctrl-C (SIGINT), as a user would; returns its output."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._fh.close()
        return self.log.read_text(encoding="utf-8", errors="replace")


DASHBOARD_TRIALS_TTL_S = 2.0
"""How long optuna-dashboard reuses a study's trial list of fewer than 100 trials (its ``get_trials`` cache)."""


class DashboardPoller:
    """Reads the dashboard every `interval` seconds on a thread, like an open browser tab that refreshes.

    Each round GETs `/dashboard` (the page), `/api/studies` and, once the study exists, `/api/studies/<id>`
    (what the study page loads). `polls` holds (path, HTTP status or the error's text); `states` the
    trial states the study detail showed in each round. Leaving the block stops the thread and then reads once
    more (`final_states`, also appended to `states`), so the last read is after whatever ran inside the block
    ended, however late the thread was scheduled: tests compare it with the stored study, never with timing.
    """

    def __init__(self, base: str, study_name: str, interval: float = 0.5):
        import threading

        self.base, self.study_name, self.interval = base, study_name, interval
        self.polls: list[tuple[str, object]] = []
        self.states: list[list[str]] = []
        self.final_states: list[str] | None = None
        self._study_id: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _get(self, path: str) -> bytes | None:
        try:
            status, body = http_get(self.base + path)
        except OSError as err:
            self.polls.append((path, f"{type(err).__name__}: {err}"))
            return None
        self.polls.append((path, status))
        return body if status == 200 else None

    def _round(self) -> list[str] | None:
        """One read of the page, the study list and the study detail; the detail's trial states (None: none)."""
        import json

        self._get("/dashboard")
        body = self._get("/api/studies")
        if body is not None and self._study_id is None:
            for s in json.loads(body)["study_summaries"]:
                if s["study_name"] == self.study_name:
                    self._study_id = s["study_id"]
        if self._study_id is None:
            return None
        detail = self._get(f"/api/studies/{self._study_id}")
        if detail is None:
            return None
        states = [t["state"] for t in json.loads(detail)["trials"]]
        self.states.append(states)
        return states

    def _run(self) -> None:
        while not self._stop.is_set():
            self._round()
            self._stop.wait(self.interval)

    def __enter__(self) -> DashboardPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        self._stop.set()
        self._thread.join(timeout=60)
        # optuna-dashboard serves a study's trials from its own cache for up to DASHBOARD_TRIALS_TTL_S after it
        # read them (optuna_dashboard/_storage.py `get_trials`); the last read must come after that
        time.sleep(DASHBOARD_TRIALS_TTL_S + 0.5)
        self.final_states = self._round()  # after the block's work ended (the thread has stopped)
