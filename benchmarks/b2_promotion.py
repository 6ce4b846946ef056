"""B2's promotion replay: asynchronous successive halving that resumes a paused trial (Li et al. 2020, ASHA).

Optuna's pruners only stop a trial; ASHA pauses it at a rung and, when it later ranks in the top 1/eta of
the trials that reached that rung, continues it from its checkpoint to the next rung. Replayed here over the
recorded curves for one worker (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020,
Algorithm 2): before each job the worker looks for a promotable trial from the highest rung down; if there is
none it starts the next config of the order at the first rung; a promoted trial continues its recorded curve
(it pays only the epochs from its rung to the next). Rung r_k = min_resource * eta**k epochs, the last one
the trial's full epochs; the value compared at rung k is the F1 reported at epoch r_k (as Optuna's
SuccessiveHalvingPruner compares). A trial that reaches the last rung is COMPLETE with its best epoch's F1.
The sweep ends when every config started and no trial can be promoted.

REPLAY ONLY: the product does not promote yet (issue 23, item "promotion from checkpoints").
"""

from __future__ import annotations


def rungs(epochs: int, min_resource: int, eta: int) -> list[int]:
    """The rung epochs: min_resource * eta**k below `epochs`, then `epochs`."""
    out, r = [], min_resource
    while r < epochs:
        out.append(r)
        r *= eta
    return [*out, epochs]


def _promotable(level: list[int], curves: list[list[float]], ladder: list[int], eta: int, promoted: set) -> tuple:
    """(config, rung index) of the best promotable paused trial, from the highest rung down; None if none."""
    for k in range(len(ladder) - 2, -1, -1):
        reached = [c for c, lv in enumerate(level) if lv >= k]
        if not reached:
            continue
        ranked = sorted(reached, key=lambda c: -curves[c][ladder[k] - 1])
        top = ranked[: len(reached) // eta]
        for c in top:
            if level[c] == k and (c, k) not in promoted:
                return c, k
    return None


def replay_asha(curves: list[list[float]], order: list[int], min_resource: int, eta: int) -> dict:
    """One ASHA sweep over `curves` in `order` (see the module docstring).

    Returns {"trace": [(epochs spent, incumbent or None)] after each job, "pruned": [configs never completed],
    "epochs": total epochs spent, "promotions": jobs that resumed a paused trial}.
    """
    epochs = len(curves[0])
    ladder = rungs(epochs, min_resource, eta)
    level = [-1] * len(curves)  # rung index each config reached (-1: not started)
    promoted: set[tuple[int, int]] = set()
    queue = list(order)
    spent, incumbent, trace, promotions = 0, None, [], 0
    while True:
        job = _promotable(level, curves, ladder, eta, promoted)
        if job is not None:
            c, k = job
            promoted.add((c, k))
            spent += ladder[k + 1] - ladder[k]
            level[c] = k + 1
            promotions += 1
        elif queue:
            c = queue.pop(0)
            spent += ladder[0]
            level[c] = 0
        else:
            break
        if level[c] == len(ladder) - 1:
            value = max(curves[c])
            incumbent = value if incumbent is None else max(incumbent, value)
        trace.append((spent, incumbent))
    pruned = [c for c, lv in enumerate(level) if lv < len(ladder) - 1]
    return {"trace": trace, "pruned": pruned, "epochs": spent, "promotions": promotions}


PROMOTION = {
    "promote_rf2_min1": (1, 2),
    "promote_rf2_min2": (2, 2),
    "promote_rf3_min1": (1, 3),
    "promote_rf2_min4": (4, 2),
}
"""name -> (min_resource, eta) of the ASHA replays (replay only; not in the product)."""
