"""The watchdog for hung trials (hpo/workers/_watchdog.py) with real worker processes under LocalWorkers."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.store import HeartbeatSettings, count_trials, open_storage, resolve_storage_url
from maskcls_hpo.hpo.trial import load_sweep, stage_ledger
from maskcls_hpo.hpo.workers import EXIT_HUNG, LocalWorkers, RunOptions, Watchdog, WorkerSettings

# A backbone whose forward blocks for good in the first training step after a validation pass (= epoch 2),
# once: the marker file is removed before blocking, so the re-queued copy (a new process) runs through.
HANG_MODEL = """
import os, time
import torch
from timm.models import register_model

MARKER = "MARKER_PATH"
_seen_eval = False

class HangInEpoch2(torch.nn.Module):
    num_features = 8
    def __init__(self, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
    def forward(self, x):
        global _seen_eval
        if not self.training:
            _seen_eval = True
        elif _seen_eval and os.path.exists(MARKER):
            os.remove(MARKER)
            while True:  # a dead data path / a stuck collective: the heartbeat thread keeps beating
                time.sleep(3600)
        return self.conv(x).mean((2, 3))

@register_model
def hang_in_epoch_2(pretrained=False, **kwargs):
    return HangInEpoch2(**kwargs)

BASE_CONFIG["model"] = "hang_in_epoch_2"
"""


@pytest.mark.slow
def test_trial_hung_in_epoch_2_is_failed_requeued_once_and_its_worker_replaced(tmp_path, tiny_sweep):
    marker = tmp_path / "hang-once"
    marker.write_text("1")
    sweep_path = tiny_sweep(epochs=3, extra=HANG_MODEL.replace("MARKER_PATH", str(marker)))
    url = resolve_storage_url(str(tmp_path / "study.db"))
    heartbeat = HeartbeatSettings(interval=1, grace_period=60)  # the hung trial keeps beating: never stale
    prepare_study(load_sweep(sweep_path), open_storage(url, heartbeat), "hang", 2)
    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="hang",
        n_trials=2,
        options=RunOptions(
            heartbeat=heartbeat,
            checkpoints=tmp_path / "ckpt",
            logs=tmp_path / "logs",
            poll_interval=0.2,
            watchdog=Watchdog(seconds=4, factor=2),
        ),
    )
    pool = LocalWorkers(settings, workers=1)
    deadline = time.monotonic() + 420  # nothing may wait forever
    try:
        pool.start()
        first = pool.procs[0].process
        while pool.replace_hung() or pool.alive():
            assert time.monotonic() < deadline, "not finished: " + pool.procs[0].log_path.read_text()[-3000:]
            time.sleep(0.5)
        codes = pool.returncodes()
    finally:
        pool.stop(term_timeout=10)
        pool.close()
    assert first.returncode == EXIT_HUNG and pool.replaced == 1 and codes == [0]
    study = optuna.load_study(study_name="hang", storage=url)
    trials = study.trials
    hung = trials[0]
    assert hung.state == TrialState.FAIL
    assert hung.user_attrs["reason"].startswith("hung: no epoch finished within ")
    assert "of its last epoch (slowest epoch so far" in hung.user_attrs["reason"]
    assert list(hung.intermediate_values) == [1]  # epoch 1 finished, epoch 2 never did
    copies = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(copies) == 1  # re-queued once
    (copy,) = copies
    assert copy.state == TrialState.COMPLETE and copy.params == hung.params
    assert copy.user_attrs["resumed_from"].endswith("trial_00000/last.pt")  # resumed at epoch 2
    assert "reason" not in copy.user_attrs
    c = count_trials(open_storage(url, heartbeat), study._study_id)
    assert (c.finished, c.running, c.failed, c.waiting) == (2, 0, 1, 0)
    # the compute ledger: epoch 1 of the hung trial, epochs 2-3 of its copy (resumed after epoch 1), 3 of the other
    assert copy.user_attrs["resumed_at_epoch"] == 1
    ledger = stage_ledger(trials)
    assert ledger["epochs"] == 1 + 2 + 3 and ledger["trials"] == 3
    assert ledger["image_epochs"] == 6 * copy.user_attrs["train_images"] > 0
    assert study.user_attrs["ledger"]["epochs"] == 6  # written by the worker when it stopped
    log = " ".join((tmp_path / "logs" / "hang" / "worker-0.log").read_text().split())  # rich wraps long lines
    assert "this worker process exits (code 4) to be replaced" in log
    assert "exited after a hung trial (code 4); a new process starts" in log
