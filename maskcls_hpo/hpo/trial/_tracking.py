"""Experiment tracking of trials: TensorBoard scalars for every trial, an MLflow run per trial with `--mlflow`.

The objective (:func:`maskcls_hpo.hpo.trial.make_objective`) feeds a :class:`TrialTracker` every
epoch's :class:`~maskcls_hpo.train.EpochResult` from its `on_epoch` hook (one :class:`TrialRun` per trial)
and :meth:`TrialTracker.wrap` ends each run with the trial's state; `train.py` knows nothing of it.

TensorBoard (needs the ``tensorboard`` package; without it nothing is written and a sweep runs as before):
one folder per trial, ``<tensorboard root>/<study>/trial_<number:05d>/`` (the root is ``tensorboard/``
beside an SQLite database, see :func:`maskcls_hpo.hpo.store.storage_folder`), with per epoch (step =
epoch, 1-based) the scalars ``train/loss``, ``val/loss``, ``val/macro_f1``, ``val/accuracy``, ``lr`` and
``epoch/seconds``, and the trial's params as hparams (TensorBoard's HPARAMS tab; its metrics are
``val/macro_f1`` (last epoch) and ``best/val_macro_f1``, the trial's value, written when it completes).
View them with ``tensorboard --logdir <tensorboard root>/<study>``.

MLflow (``pip install 'maskcls-hpo[mlflow]'``; used only with a tracking URI, e.g. ``sqlite:///mlflow.db``
or ``http://host:5000``): one experiment per study (named like the study), one run per trial named
``trial_<number>`` with the params, the tags ``optuna.study``, ``optuna.trial``, ``state`` and ``reason``,
the metrics ``train_loss``, ``val_loss``, ``val_macro_f1``, ``val_accuracy``, ``lr`` per epoch (step =
epoch) and ``best_val_macro_f1`` (the trial's value) at the end; the run ends FINISHED (COMPLETE or PRUNED),
FAILED (FAIL) or KILLED (the worker was stopped). MLflow's own client API is used (not Optuna's
``MLflowCallback``, which needs ``study.optimize``; the workers run their own ask/tell loop).

Tracking never fails a trial: an error of a backend is logged once as a warning and that backend is off
for the rest of the trial. :func:`check_mlflow` runs once in `launch`, before any worker starts, so a bad
URI or a missing package is one clear line instead of a warning per trial.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.signals import Interrupted
from maskcls_hpo.hpo.store import mask_password

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.writer import FileWriter

    from maskcls_hpo.train import EpochResult

log = logging.getLogger(__name__)

SCALARS = {
    "train/loss": "train_loss",
    "val/loss": "val_loss",
    "val/macro_f1": "val_f1",
    "val/accuracy": "val_accuracy",
    "lr": "lr",
    "epoch/seconds": "seconds",
}
"""TensorBoard tag -> :class:`~maskcls_hpo.train.EpochResult` field, written every epoch."""

MLFLOW_METRICS = {"train_loss": "train_loss", "val_loss": "val_loss", "val_macro_f1": "val_f1"}
MLFLOW_METRICS |= {"val_accuracy": "val_accuracy", "lr": "lr"}
BEST_TAG = "best/val_macro_f1"
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "KILLED": "KILLED"}


def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard`` can be imported (it needs the ``tensorboard`` package)."""
    try:
        import torch.utils.tensorboard  # lazy: optional tensorboard package (and torch)  # noqa: F401
    except ImportError:
        return False
    return True


def _file_writer(writer: SummaryWriter) -> FileWriter:
    """The writer's event file writer (``SummaryWriter`` opens it in ``__init__``; typed Optional by torch)."""
    file_writer = writer.file_writer
    assert file_writer is not None
    return file_writer


def trial_log_dir(root: Path, trial_number: int) -> Path:
    """TensorBoard folder of one trial: ``<root>/trial_<number:05d>`` (root = ``<tensorboard>/<study>``)."""
    return Path(root) / f"trial_{trial_number:05d}"


def _hparam(value: Any) -> bool | int | float | str:
    return value if isinstance(value, bool | int | float | str) else str(value)


def _mlflow_client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient  # lazy: optional extra mlflow

    # MLflow logs its database set-up at INFO on its own handler; the launch's live view has no room for it
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created when missing (a concurrent creation by another worker is fine)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - another worker created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def check_mlflow(uri: str, study_name: str) -> str:
    """Check that MLflow is installed and `uri` works: open it and create the study's experiment.

    Run once before any worker starts (it also runs MLflow's own database set-up for an ``sqlite:///``
    URI, so that the workers do not race to do it).

    Returns:
        The experiment id.

    Raises:
        LaunchError: mlflow is not installed, or the tracking URI cannot be used (URI masked, what to do).
    """
    try:
        import mlflow  # lazy: optional extra mlflow  # noqa: F401
    except ImportError:
        raise LaunchError(
            "--mlflow needs the mlflow package: pip install 'maskcls-hpo[mlflow]' (or leave out --mlflow)"
        ) from None
    try:
        return _experiment_id(_mlflow_client(uri), study_name)
    except Exception as err:  # noqa: BLE001 - any backend error becomes one line
        raise LaunchError(
            f"--mlflow {mask_password(uri)}: cannot open the MLflow tracking store "
            f"({type(err).__name__}: {mask_password(str(err).splitlines()[0] if str(err) else '')}); "
            "pass a working URI (e.g. sqlite:///mlflow.db or http://host:5000) or leave out --mlflow"
        ) from None


class TrialRun:
    """Tracking of one trial (TensorBoard writer and/or MLflow run); every method is a no-op when both are off.

    Made by :meth:`TrialTracker.start`.
    """

    def __init__(
        self,
        number: int,
        writer: SummaryWriter | None = None,
        mlflow: tuple[MlflowClient, str] | None = None,
        hparams: tuple[Any, Any, Any] | None = None,
    ) -> None:
        self.number = number
        self._writer = writer
        self._mlflow = mlflow
        self._hparams = hparams  # (exp, ssi, sei) of torch's hparams summary (untyped protobuf messages)
        self._ended = False

    def _tb(self, what: str, fn: Callable[[SummaryWriter], None]) -> None:
        if self._writer is None:
            return
        try:
            fn(self._writer)
        except Exception as err:  # noqa: BLE001 - tracking never fails a trial
            log.warning("trial %d: TensorBoard %s failed (%s: %s); off", self.number, what, type(err).__name__, err)
            self._close_writer()

    def _ml(self, what: str, fn: Callable[[MlflowClient, str], None]) -> None:
        if self._mlflow is None:
            return
        try:
            fn(*self._mlflow)
        except Exception as err:  # noqa: BLE001 - tracking never fails a trial
            name = type(err).__name__
            log.warning("trial %d: MLflow %s failed (%s: %s); off", self.number, what, name, mask_password(err))
            self._mlflow = None

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    def epoch(self, r: EpochResult) -> None:
        """Log one epoch (an :class:`~maskcls_hpo.train.EpochResult`; step = ``r.epoch``). NaN values are skipped."""

        def tb(w: SummaryWriter) -> None:
            for tag, name in SCALARS.items():
                value = float(getattr(r, name))
                if math.isfinite(value):
                    w.add_scalar(tag, value, r.epoch)
            w.flush()

        def ml(client: MlflowClient, run_id: str) -> None:
            from mlflow.entities import Metric  # lazy: optional extra mlflow

            now = int(time.time() * 1000)
            metrics = [
                Metric(key, float(getattr(r, name)), now, int(r.epoch))
                for key, name in MLFLOW_METRICS.items()
                if math.isfinite(float(getattr(r, name)))
            ]
            client.log_batch(run_id, metrics=metrics)

        self._tb("epoch", tb)
        self._ml("epoch", ml)

    def end(self, state: str, value: float | None = None, reason: str = "") -> None:
        """End the run: `state` is ``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"`` or ``"KILLED"``; `value` the trial's
        value (COMPLETE only). Later calls do nothing."""
        if self._ended:
            return
        self._ended = True
        best = float(value) if value is not None and math.isfinite(value) else None

        def tb(w: SummaryWriter) -> None:
            if best is not None:
                w.add_scalar(BEST_TAG, best, 0)
            if self._hparams is not None:
                _file_writer(w).add_summary(self._hparams[2])
            w.add_text("state", f"{state}{': ' + reason if reason else ''}", 0)

        def ml(client: MlflowClient, run_id: str) -> None:
            from mlflow.entities import Metric, RunTag  # lazy: optional extra mlflow

            tags = [RunTag("state", state)] + ([RunTag("reason", reason[:500])] if reason else [])
            metrics = [Metric("best_val_macro_f1", best, int(time.time() * 1000), 0)] if best is not None else []
            client.log_batch(run_id, metrics=metrics, tags=tags)
            client.set_terminated(run_id, MLFLOW_STATUS.get(state, "FINISHED"))

        self._tb("end", tb)
        self._close_writer()
        self._ml("end", ml)

    def end_with(self, err: BaseException) -> None:
        """End the run for an exception that left the objective: PRUNED, KILLED (stop signal) or FAIL."""

        if isinstance(err, optuna.TrialPruned):
            self.end("PRUNED", reason=str(err))
        elif isinstance(err, KeyboardInterrupt | Interrupted):
            self.end("KILLED", reason="interrupted (worker stopped)")
        else:
            self.end("FAIL", reason=mask_password(f"{type(err).__name__}: {err}"))


class TrialTracker:
    """Starts a :class:`TrialRun` per trial of one study (one per worker process).

    Args:
        study_name: the study (MLflow experiment name).
        tensorboard_dir: ``<tensorboard root>/<study>``; None writes no TensorBoard files.
        mlflow_uri: MLflow tracking URI; None logs nothing to MLflow.
    """

    def __init__(self, study_name: str, tensorboard_dir: Path | None = None, mlflow_uri: str | None = None):
        self.study_name = study_name
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self.mlflow_uri = mlflow_uri
        self._tb_ok: bool | None = None
        self._experiment: str | None = None
        self._runs: dict[int, TrialRun] = {}

    def _writer(
        self, number: int, params: Mapping[str, Any]
    ) -> tuple[SummaryWriter | None, tuple[Any, Any, Any] | None]:
        if self.tensorboard_dir is None:
            return None, None
        if self._tb_ok is None:
            self._tb_ok = tensorboard_available()
            if not self._tb_ok:
                log.info("TensorBoard scalars are off: the tensorboard package is not installed")
        if not self._tb_ok:
            return None, None
        try:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional tensorboard package (and torch)
            from torch.utils.tensorboard.summary import hparams  # lazy: optional tensorboard package (and torch)

            writer = SummaryWriter(log_dir=str(trial_log_dir(self.tensorboard_dir, number)))
            summaries = None
            if params:
                summaries = hparams({k: _hparam(v) for k, v in params.items()}, {"val/macro_f1": 0.0, BEST_TAG: 0.0})
                _file_writer(writer).add_summary(summaries[0])
                _file_writer(writer).add_summary(summaries[1])
            return writer, summaries
        except Exception as err:  # noqa: BLE001 - tracking never fails a trial
            log.warning("trial %d: no TensorBoard scalars (%s: %s)", number, type(err).__name__, err)
            return None, None

    def _mlflow_run(self, number: int, params: Mapping[str, Any]) -> tuple[MlflowClient, str] | None:
        if not self.mlflow_uri:
            return None
        try:
            from mlflow.entities import Param  # lazy: optional extra mlflow

            client = _mlflow_client(self.mlflow_uri)
            if self._experiment is None:
                self._experiment = _experiment_id(client, self.study_name)
            run = client.create_run(
                self._experiment,
                run_name=f"trial_{number}",
                tags={"optuna.study": self.study_name, "optuna.trial": str(number), "state": "RUNNING"},
            )
            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            return client, run.info.run_id
        except Exception as err:  # noqa: BLE001 - tracking never fails a trial
            log.warning(
                "trial %d: no MLflow run at %s (%s: %s)",
                number,
                mask_password(self.mlflow_uri),
                type(err).__name__,
                mask_password(err),
            )
            return None

    def start(self, number: int, params: Mapping[str, Any]) -> TrialRun:
        """Start tracking trial `number` with its sampled `params` (name -> value). Never raises."""
        writer, summaries = self._writer(number, params)
        return TrialRun(number, writer, self._mlflow_run(number, params), summaries)

    def epoch(self, number: int, params: Mapping[str, Any], r: EpochResult) -> None:
        """Log one epoch of trial `number` (its run starts with the first epoch)."""
        if number not in self._runs:
            self._runs[number] = self.start(number, params)
        self._runs[number].epoch(r)

    def wrap(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """The same objective, ending each trial's run with its state (a trial that ended before its first
        epoch, e.g. a bad config, still gets a run with its params and the FAIL state)."""

        def tracked(trial: optuna.Trial) -> float:
            try:
                value = objective(trial)
            except BaseException as err:
                self._run_of(trial).end_with(err)
                raise
            self._run_of(trial).end("COMPLETE", value)
            return value

        return tracked

    def _run_of(self, trial: optuna.Trial) -> TrialRun:
        """The trial's run, taken out of the running ones (started now when it had none)."""
        run = self._runs.pop(trial.number, None)
        return run if run is not None else self.start(trial.number, trial.params)
