"""Shared pytest fixtures. Each group of fixtures sits under its own heading; add yours in a new section.

Data layout fixtures (owner: data layer): `make_layout` writes a tiny dataset in the competition layout
(docs/architecture.md, "Data layout") with the real set's quirks, so tests never depend on `demo-data`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# NOTE One torch thread per process (set before torch is imported; subprocesses inherit it): the suite runs
# several training processes at once on 2 cores, where 2 threads each run 5-8x slower than 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# --- data layout fixtures ---------------------------------------------------------------------------

LAYOUT_MASK_FILES = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")

# Extensions cycle through every accepted spelling, so each person mixes .jpg/.JPEG/.png/.jpeg/.PNG.
LAYOUT_EXTENSIONS = (".jpg", ".JPEG", ".png", ".jpeg", ".PNG", ".jpg", ".png")

# Image modes that are not RGB, as in the real set: mask2 of every person is grayscale (a grayscale
# JPEG), mask3 has an alpha channel (PNG). Everything else is RGB.
LAYOUT_MODES = {"mask2": "L", "mask3": "RGBA"}

# (id, gender, age): ids with leading zeros and a suffix, and the ids the `known` corrections preset names.
LAYOUT_PERSONS = (
    ("000001", "female", 45),
    ("000020", "male", 62),  # `known`: incorrect_mask <-> normal swapped
    ("001498-1", "male", 25),  # `known`: male -> female
    ("006359", "female", 33),  # `known`: female -> male
)


def layout_color(person_index: int, file_index: int) -> tuple[int, int, int]:
    """The solid RGB colour `write_layout` paints image `file_index` of person `person_index` with."""
    return ((40 * person_index + 13) % 256, (30 * file_index + 50) % 256, (7 * person_index + 200) % 256)


def layout_gray(color: tuple[int, int, int]) -> int:
    """The gray value a grayscale image gets for `color` (PIL's ITU-R 601-2 luma, rounded)."""
    return int(Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0)))


def make_persons(n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """`n` persons `(id, gender, age)` with ids 000100.., genders alternating and ages over 18..70."""
    rng = np.random.default_rng(seed)
    ages = rng.integers(18, 71, size=n)
    return [(f"{100 + i:06d}", ("male", "female")[i % 2], int(a)) for i, a in enumerate(ages)]


def write_layout(
    root: Path,
    persons=LAYOUT_PERSONS,
    size: tuple[int, int] = (24, 32),
    eval_images: int = 5,
    hidden: bool = True,
    race: str = "Asian",
) -> Path:
    """Write a dataset in the competition layout under `root` and return `root`.

    Train: `train/train.csv` (id, gender, race, age, path) and `train/images/<id>_<gender>_<race>_<age>/`
    with the 7 files, extensions from LAYOUT_EXTENSIONS, modes from LAYOUT_MODES, each a solid
    `layout_color(person_index, file_index)` image of `size` = (W, H) pixels, plus a hidden `._mask1.jpg`
    of junk bytes when `hidden`. Eval: `eval/info.csv` (ImageID, ans empty) and `eval_images` flat images
    named by a hex hash, listed in an order that is not sorted. Images are RGB PNG/JPEG as the extension says.
    """
    root = Path(root)
    images_dir = root / "train" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = ["id,gender,race,age,path"]
    for p, (pid, gender, age) in enumerate(persons):
        folder = f"{pid}_{gender}_{race}_{age}"
        rows.append(f"{pid},{gender},{race},{age},{folder}")
        person_dir = images_dir / folder
        person_dir.mkdir(exist_ok=True)
        for f, stem in enumerate(LAYOUT_MASK_FILES):
            write_solid_image(
                person_dir / f"{stem}{LAYOUT_EXTENSIONS[f]}", layout_color(p, f), size, LAYOUT_MODES.get(stem, "RGB")
            )
        if hidden:
            (person_dir / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (root / "train" / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    eval_dir = root / "eval" / "images"
    eval_dir.mkdir(parents=True, exist_ok=True)
    names = [hashlib.sha1(f"eval{i}".encode()).hexdigest()[:16] + ".jpg" for i in range(eval_images)]
    for i, name in enumerate(names):
        write_solid_image(eval_dir / name, layout_color(i, 6 - i % 7), size, "RGB")
    (root / "eval" / "info.csv").write_text("ImageID,ans\n" + "".join(f"{n},\n" for n in names), encoding="utf-8")
    return root


def write_solid_image(path: Path, color: tuple[int, int, int], size: tuple[int, int], mode: str = "RGB") -> Path:
    """One solid-colour image of `size` = (W, H); `mode` L (grayscale), RGB or RGBA (alpha 128)."""
    im = Image.new("RGB", size, color)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(128)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    im.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


@pytest.fixture
def make_layout():
    """`write_layout` as a fixture: `make_layout(tmp_path / "d", persons=[...])` -> dataset root."""
    return write_layout


@pytest.fixture
def many_persons():
    """`make_persons` as a fixture: `many_persons(40)` -> 40 `(id, gender, age)` tuples for `make_layout`."""
    return make_persons


@pytest.fixture
def layout_helpers():
    """The layout's helpers and constants: `.color(p, f)`, `.gray(color)`, `.write_image(path, color, size,
    mode)`, `.mask_files`, `.persons` (the default persons)."""
    return SimpleNamespace(
        color=layout_color,
        gray=layout_gray,
        write_image=write_solid_image,
        mask_files=LAYOUT_MASK_FILES,
        persons=LAYOUT_PERSONS,
    )


# --- sweep-service fixtures -------------------------------------------------------------------------

# Appended to a tiny sweep: every real trial fails with a TypeError in suggest() (a bug in user code, C1's
# consecutive-failure cap); the dry run's recording trial (number -1) passes, so the sweep file loads.
ALWAYS_FAILING_SUGGEST = """
def suggest(trial):
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    if trial.number >= 0:  # real trials only (the dry run's recording trial has number -1)
        return {"lr": lr + "0.1"}
    return {"lr": lr}
"""

TINY_SWEEP = """
import optuna

BASE_CONFIG = {
    "model": "test_resnet", "pretrained": False, "image_size": [32, 24], "epochs": EPOCHS,
    "val_ratio": 0.25, "augment": False, "data_dir": "DATA_DIR", "cache_dir": "CACHE_DIR", "device": "cpu",
}

def suggest(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }

def make_pruner(config):
    return PRUNER
"""


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 24-person procedural demo set at 36x48 (W x H), written once per test session."""
    from maskcls_hpo.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("tiny_demo") / "data"
    write_demo_dataset(root, persons=24, eval_persons=6, size=(36, 48), seed=1, progress=False)
    return root


@pytest.fixture
def tiny_sweep(tmp_path, tiny_demo):
    """Write a tiny sweep file: `tiny_sweep(epochs=2, pruner="optuna.pruners.NopPruner()", extra="")` -> path.

    `extra` is appended verbatim (e.g. a different `suggest` or a registered timm model).
    """

    def make(
        epochs: int = 2, pruner: str = "optuna.pruners.NopPruner()", extra: str = "", name: str = "tiny.py"
    ) -> Path:
        body = (
            TINY_SWEEP.replace("EPOCHS", str(epochs))
            .replace("DATA_DIR", str(tiny_demo))
            .replace("CACHE_DIR", str(tmp_path / "cache"))
            .replace("PRUNER", pruner)
        )
        path = tmp_path / name
        path.write_text(body + extra)
        return path

    return make


# --- training fixtures (owner: training engine) ------------------------------------------------------
# One procedural demo dataset per test session (written once, read by every training test), and one image
# cache folder shared by those tests, so each image size is decoded once per session.


@pytest.fixture(scope="session")
def demo_data_60(tmp_path_factory) -> Path:
    """A procedural demo dataset (`demo.write_demo_dataset`) of 60 train persons (420 images, 48x64 px,
    seed 0, no eval part): enough to learn something in 3 epochs on the CPU."""
    from maskcls_hpo.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("demo60")
    write_demo_dataset(out, persons=60, eval_persons=0, size=(48, 64), seed=0, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="session")
def demo_data_20(tmp_path_factory) -> Path:
    """A procedural demo dataset of 20 train persons (140 images, 32x40 px, seed 1, no eval part) for tests
    of the training mechanics (checkpoints, schedules, errors) that need no learning."""
    from maskcls_hpo.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("demo20")
    write_demo_dataset(out, persons=20, eval_persons=0, size=(32, 40), seed=1, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="session")
def train_cache_dir(tmp_path_factory) -> Path:
    """The decoded-image cache folder every training test shares (config `cache_dir`)."""
    return tmp_path_factory.mktemp("train_cache")


# --- dashboard fixtures (owner: dashboard/report) ----------------------------------------------------
# One real sweep per session (sweeps/smoke.py, 3 trials, 2 workers, on `tiny_demo`) with the dashboard
# running against it the whole time and a poller reading its pages every 0.5 s. test_dashboard.py,
# test_artifacts.py and test_report.py read the finished study; the dashboard keeps running for them.

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_STUDY = "smoke-dashboard"


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


class DashboardPoller:
    """Reads the dashboard every `interval` seconds on a thread, like an open browser tab that refreshes.

    Each round GETs `/dashboard` (the page), `/api/studies` and, once the study exists, `/api/studies/<id>`
    (what the study page loads). `polls` holds (path, HTTP status or the error's text); `states` the
    trial states the study detail showed in each round.
    """

    def __init__(self, base: str, study_name: str, interval: float = 0.5):
        import threading

        self.base, self.study_name, self.interval = base, study_name, interval
        self.polls: list[tuple[str, object]] = []
        self.states: list[list[str]] = []
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

    def _run(self) -> None:
        import json

        study_id = None
        while not self._stop.is_set():
            self._get("/dashboard")
            body = self._get("/api/studies")
            if body is not None and study_id is None:
                for s in json.loads(body)["study_summaries"]:
                    if s["study_name"] == self.study_name:
                        study_id = s["study_id"]
            if study_id is not None:
                detail = self._get(f"/api/studies/{study_id}")
                if detail is not None:
                    self.states.append([t["state"] for t in json.loads(detail)["trials"]])
            self._stop.wait(self.interval)

    def __enter__(self) -> DashboardPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture(scope="session")
def swept_study(tmp_path_factory, tiny_demo):
    """A study made by `maskcls-hpo launch sweeps/smoke.py --n-trials 3 --workers 2` on SQLite while the
    dashboard runs on it and a :class:`DashboardPoller` reads it every 0.5 s.

    The database sits at `<root>/storage/maskcls_hpo.db` (the default path relative to `root`). Yields a
    namespace: root, db, url, study (name), dashboard (running :class:`DashboardProcess`), poller,
    launch_rc, launch_output, checkpoints.
    """
    import subprocess

    from maskcls_hpo.hpo._optuna import rdb_of
    from maskcls_hpo.hpo.store import open_storage, resolve_storage_url

    root = tmp_path_factory.mktemp("swept")
    db = root / "storage" / "maskcls_hpo.db"
    url = resolve_storage_url(db)
    rdb_of(open_storage(url)).engine.dispose()  # an empty Optuna database, so the dashboard can start first
    dashboard = DashboardProcess(["--storage", str(db)], cwd=root, log=root / "dashboard.log").wait_ready()
    checkpoints = root / "checkpoints"
    cmd = maskcls_hpo_command() + [
        "launch",
        str(REPO_ROOT / "sweeps" / "smoke.py"),
        "--n-trials",
        "3",
        "--workers",
        "2",
        "--storage",
        str(db),
        "--study",
        SMOKE_STUDY,
        "--data-dir",
        str(tiny_demo),
        "--checkpoints",
        str(checkpoints),
    ]
    try:
        with DashboardPoller(dashboard.base, SMOKE_STUDY) as poller:
            launched = subprocess.run(cmd, cwd=root, env=subprocess_env(), capture_output=True, text=True, timeout=540)
        yield SimpleNamespace(
            root=root,
            db=db,
            url=url,
            study=SMOKE_STUDY,
            dashboard=dashboard,
            poller=poller,
            launch_rc=launched.returncode,
            launch_output=launched.stdout + launched.stderr,
            checkpoints=checkpoints,
        )
    finally:
        dashboard.stop()


# --- PostgreSQL and fault fixtures (owner: PostgreSQL/faults) -----------------------------------------
# tests/pg.py: `pg_admin_url`, `pg_database` (a fresh database per test on the machine's server),
# `private_pg` (a server of its own, to stop and start), `tiny_demo` (24 persons at 36x48).
pytest_plugins = ("pg",)


# --- confirm / finalize fixtures (owner: confirm and finalize) ----------------------------------------
# One finished source study per session: 2 COMPLETE trials of a 1-epoch sweep on `tiny_demo`, run in-process
# by the real worker loop into an SQLite file. Tests copy the file (`confirm_source.copy(folder)`), so each
# confirm/finalize starts from the same study and none sees another's confirm study.

CONFIRM_SWEEP = """
import optuna

BASE_CONFIG = {
    "model": "test_resnet", "pretrained": False, "image_size": [32, 24], "epochs": 1, "val_ratio": 0.25,
    "augment": False, "data_dir": "DATA_DIR", "cache_dir": "CACHE_DIR", "device": "cpu",
}
KNOWN_GOOD = [{"batch_size": 16, "lr": 0.003}, {"batch_size": 32, "lr": 0.008}]

def suggest(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }

def make_pruner(config):
    return optuna.pruners.NopPruner()
"""


@pytest.fixture(scope="session")
def confirm_source(tmp_path_factory, tiny_demo):
    """A finished study `src` (2 COMPLETE trials, 1 epoch each) in an SQLite file; `.copy(folder)` copies the
    database into `folder` and returns its path. Also: `.sweep` (the sweep file), `.data` (the dataset),
    `.cache` (the shared image cache folder), `.study` ("src")."""
    from maskcls_hpo.hpo.launch import prepare_study
    from maskcls_hpo.hpo.store import HeartbeatSettings, open_storage
    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

    root = tmp_path_factory.mktemp("confirm_source")
    cache = root / "cache"
    sweep_path = root / "src.py"
    sweep_path.write_text(CONFIRM_SWEEP.replace("DATA_DIR", str(tiny_demo)).replace("CACHE_DIR", str(cache)))
    db = root / "src.db"
    url = f"sqlite:///{db}"
    sweep = load_sweep(sweep_path)
    heartbeat = HeartbeatSettings(interval=5, grace_period=60)
    prepare_study(sweep, open_storage(url, heartbeat), "src", n_trials=2)
    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="src",
        options=RunOptions(heartbeat=heartbeat, checkpoints=root / "checkpoints"),
    )
    report = run_worker(settings, sweep)
    assert report.complete == 2, report

    return SimpleNamespace(
        copy=lambda folder: _sqlite_copy(db, folder), sweep=sweep_path, data=tiny_demo, cache=cache, study="src", db=db
    )


def _sqlite_copy(db: Path, folder: Path) -> Path:
    """A consistent copy of SQLite file `db` as `folder/study.db` (sqlite3's backup API: WAL pages included)."""
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "study.db"
    with sqlite3.connect(db) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


@pytest.fixture(scope="session")
def confirmed_source(tmp_path_factory, confirm_source):
    """`confirm_source` after `maskcls-hpo confirm --study src --top 2 --folds 2 --workers 1` (CLI subprocess):
    the study `src-confirm` holds 4 finished runs. Namespace: db, root, rc, stdout, stderr, `.copy(folder)`."""
    import subprocess

    root = tmp_path_factory.mktemp("confirmed")
    db = confirm_source.copy(root)
    done = subprocess.run(
        [*maskcls_hpo_command(), "confirm", "--study", "src", "--top", "2", "--folds", "2", "--workers", "1"]
        + ["--storage", str(db)],
        cwd=root,
        env=subprocess_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=500,
    )
    return SimpleNamespace(
        db=db,
        root=root,
        rc=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        copy=lambda folder: _sqlite_copy(db, folder),
    )


# --- Slurm fixtures (owner: Slurm backend) ---------------------------------------------------------
# `slurm_cluster`: the single-node cluster scripts/test-env.sh starts (`make test` runs it), checked once.


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of the local cluster's node once `sinfo` shows it ready; fails (never skips) saying what to do."""
    import shutil
    import subprocess

    hint = "run scripts/test-env.sh (make test does), or deselect: -m 'not slurm'"
    if shutil.which("sinfo") is None:
        pytest.fail(f"Slurm is not installed (no sinfo on PATH): {hint}", pytrace=False)
    done = subprocess.run(["sinfo", "-h", "-o", "%n|%T"], capture_output=True, text=True, timeout=30, check=False)
    rows = [line.split("|") for line in done.stdout.split() if "|" in line]
    ready = [n for n, state in rows if state in ("idle", "mixed", "allocated", "completing")]
    if done.returncode != 0 or not ready:
        pytest.fail(f"no Slurm node is up ({(done.stderr or done.stdout).strip()[:200]}): {hint}", pytrace=False)
    return ready[0]
