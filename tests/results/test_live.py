"""results/live.py, the live views of `launch`: the plain-line renderer and the terminal table, drawn from
`Progress` snapshots (the reader of a real study: tests/hpo/workers/test_progress.py)."""

from __future__ import annotations

from rich.console import Console

from maskcls_hpo.hpo.store import StudyCounts
from maskcls_hpo.hpo.workers import FinishedTrial, Progress, RunningTrial
from maskcls_hpo.results.live import ProgressLines, clock, progress_table


def snap(elapsed, counts, running=(), finished=(), best=None, best_trial=None, phase="running", workers=2, eta=None):
    return Progress(
        "smoke",
        4,
        counts,
        best,
        list(running),
        elapsed,
        best_trial=best_trial,
        workers=workers,
        phase=phase,
        finished=list(finished),
        eta=eta,
    )


def test_clock():
    assert [clock(s) for s in (None, 0, 59.6, 61, 3599, 3600, 3723)] == [
        "-",
        "0:00",
        "1:00",
        "1:01",
        "59:59",
        "1:00:00",
        "1:02:03",
    ]


def test_plain_lines_for_a_known_sequence_of_snapshots():
    lines = ProgressLines()
    out = []
    out += lines(snap(3, StudyCounts(), phase="starting"))
    out += lines(snap(4, StudyCounts(), phase="starting"))  # said once only
    t0 = RunningTrial(0, 1, 4, 0.25, {1: 0.25}, 10.0, 30.0)
    out += lines(snap(21, StudyCounts(running=1), running=[t0]))
    out += lines(snap(22, StudyCounts(running=1), running=[t0]))  # nothing new
    # two epochs of trial 0 between two snapshots, trial 1 started
    t0 = RunningTrial(0, 3, 4, 0.5, {1: 0.25, 2: 0.375, 3: 0.5}, 30.0, 10.0)
    t1 = RunningTrial(1, 1, 4, 0.125, {1: 0.125}, 8.0, 24.0)
    out += lines(snap(40, StudyCounts(running=2), running=[t0, t1]))
    # trial 0 reported epoch 4 and completed before the next snapshot; trial 1 was pruned at epoch 2
    done0 = FinishedTrial(0, "COMPLETE", 0.625, 4, 4, {1: 0.25, 2: 0.375, 3: 0.5, 4: 0.625}, "", 41.0)
    pruned1 = FinishedTrial(
        1, "PRUNED", None, 2, 4, {1: 0.125, 2: 0.0625}, "pruned at epoch 2 (val macro F1 0.0625)", 20.5
    )
    after = StudyCounts(complete=1, pruned=1)
    out += lines(snap(50, after, finished=[done0, pruned1], best=0.625, best_trial=0))
    failed2 = FinishedTrial(2, "FAIL", None, 0, 4, {}, "TypeError: bad lr", 1.0)
    oom3 = FinishedTrial(3, "PRUNED", None, 0, None, {}, "oom", None)
    out += lines(
        snap(61, StudyCounts(complete=1, pruned=2, failed=1), finished=[failed2, oom3], best=0.625, best_trial=0)
    )
    out += lines(
        snap(75, StudyCounts(complete=1, pruned=2, failed=2, waiting=1), best=0.625, best_trial=0, phase="interrupted")
    )
    tail = "| 2/4 finished (1 complete, 1 pruned), 0 failed; best val macro F1 0.6250 (trial 0)"
    tail3 = "| 3/4 finished (1 complete, 2 pruned), 1 failed; best val macro F1 0.6250 (trial 0)"
    assert out == [
        "[0:03] starting 2 worker(s)",
        "[0:21] trial 0 epoch 1/4: val macro F1 0.2500",
        "[0:40] trial 0 epoch 2/4: val macro F1 0.3750",
        "[0:40] trial 0 epoch 3/4: val macro F1 0.5000",
        "[0:40] trial 1 epoch 1/4: val macro F1 0.1250",
        "[0:50] trial 0 epoch 4/4: val macro F1 0.6250",
        f"[0:50] trial 0 COMPLETE: val macro F1 0.6250 after 4/4 epochs in 0:41 {tail}",
        "[0:50] trial 1 epoch 2/4: val macro F1 0.0625",
        f"[0:50] trial 1 PRUNED at epoch 2/4 (val macro F1 0.0625) in 0:20 {tail}",
        f"[1:01] trial 2 FAIL at epoch 0/4: TypeError: bad lr in 0:01 {tail3}",
        f"[1:01] trial 3 PRUNED at epoch 0: oom {tail3}",
        "[1:15] interrupted: 3/4 finished (1 complete, 2 pruned), 2 failed; best val macro F1 0.6250 (trial 0)",
        "[1:15] interrupted: no trial of this launch runs; 1 trial(s) queued to resume with the next launch",
    ]


def render(p: Progress) -> str:
    console = Console(width=120, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    console.print(progress_table(p))
    return console.export_text()


def test_terminal_view_shows_epochs_f1_elapsed_eta_and_starting_workers():
    text = render(snap(12, StudyCounts(), phase="starting", workers=8))
    assert "0/4 finished" in text and "8 worker(s) starting" in text and "best: none yet" in text
    t = RunningTrial(5, 2, 4, 0.4321, {1: 0.3, 2: 0.4321}, 65.0, 61.0)
    text = render(snap(125, StudyCounts(complete=1, running=1), running=[t], best=0.5, best_trial=2, eta=300))
    row = next(line for line in text.splitlines() if line.split()[:1] == ["5"])
    assert row.split() == ["5", "2/4", "0.4321", "1:05", "1:01"]
    assert "best val macro F1 0.5000 (trial 2)" in text and "elapsed 2:05, ETA 5:00" in text
    assert "1 worker(s) between trials" in text
    final = render(snap(130, StudyCounts(complete=1, failed=1, waiting=1), running=[t], phase="interrupted"))
    assert "interrupted: no trial of this launch runs; 1 trial(s) queued to resume" in final
    assert "2/4" not in final and "0.4321" not in final  # no trial shown as running after Ctrl-C


def test_a_trial_that_ended_between_the_snapshots_two_reads_is_written_once():
    """The reader lists RUNNING trials and trials finished since the last snapshot with two queries; a trial that
    ends between them is in both lists (seen in `make demo` on a loaded machine: its epochs printed twice)."""
    lines = ProgressLines()
    lines(snap(10, StudyCounts(running=1), running=[RunningTrial(7, 2, 4, 0.5, {1: 0.25, 2: 0.5}, 10.0, 10.0)]))
    values = {1: 0.25, 2: 0.5, 3: 0.625, 4: 0.75}
    done = FinishedTrial(7, "COMPLETE", 0.75, 4, 4, values, "", 20.0)
    still = RunningTrial(7, 4, 4, 0.75, values, 20.0, 0.0)
    out = lines(snap(20, StudyCounts(complete=1), running=[still], finished=[done], best=0.75, best_trial=7))
    out += lines(snap(21, StudyCounts(complete=1), running=[still], best=0.75, best_trial=7))  # a late read too
    assert out[:2] == ["[0:20] trial 7 epoch 3/4: val macro F1 0.6250", "[0:20] trial 7 epoch 4/4: val macro F1 0.7500"]
    assert len(out) == 3 and "trial 7 COMPLETE" in out[2]
