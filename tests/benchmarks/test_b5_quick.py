"""benchmarks/b5_tuning_quality.py --quick: one CI-sized draw through all four arms, the JSON it records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import subprocess_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_b5_quick_records_the_arms_gains_and_compute(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "b5_tuning_quality.py"), "--quick", "--procedural"]
        + ["--out", str(tmp_path), "--work", str(tmp_path / "work")],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads((tmp_path / "b5_tuning_quality.json").read_text())
    s = r["settings"]
    assert s["known_good"] == {
        "optimizer": "adam",
        "scheduler": "step",
        "batch_size": 32,
        "lr": 1e-3,
        "dropout": 0.5,
        "loss": "cross_entropy",
        "head": "single",
    }
    assert s["draws"] == [0] and s["quick"] is True
    for key in ("d_minus_a", "d_minus_b_eq", "d_minus_r"):
        g = r["summary"]["gain"][key]
        assert g["ci95"][0] <= g["estimate"] <= g["ci95"][1]
    arms = r["summary"]["arms"]
    assert arms["a"]["epochs"] == 2 and arms["a"]["epochs_vs_one_hand_run"] == 1
    draw = r["draws"][0]
    # d's epochs are its ledger's: sweep + confirm + finalize; b_eq buys as many 2-epoch models (cap 4)
    ledger = draw["d"]["ledger"]
    assert (
        arms["d"]["epochs"]
        == ledger["total"]["epochs"]
        == sum(ledger[s]["epochs"] for s in ("sweep", "confirm", "finalize"))
    )
    assert ledger["finalize"]["epochs"] in (2, 4)  # finalize --seeds 1: the winner, or a mixture of 2 configs
    assert draw["b_eq_models"] == min(4, round(ledger["total"]["epochs"] / 2))
    assert any("known-good" in line for line in draw["d"]["messages"])
    assert not list(tmp_path.glob("work/draw_*"))  # work folders removed
