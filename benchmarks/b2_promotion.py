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

The product promotes with the same rule (:func:`maskcls_hpo.hpo.trial.top_fraction`,
hpo/trial/_promotion.py) on top of Optuna's ``SuccessiveHalvingPruner``, which decides at the rung itself
whether a trial goes on (it pauses a trial only when it is not in the top at that moment); the replay here
pauses every trial at every rung and promotes from there, as Li et al.'s Algorithm 2 does.
"""

from __future__ import annotations

from maskcls_hpo.hpo.trial import top_fraction


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
        top = top_fraction({c: curves[c][ladder[k] - 1] for c in reached}, eta)  # the product's rule
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


def _sha_goes_on(value: float, competing: list[float], eta: int, bootstrap_count: int = 0) -> bool:
    """Optuna's ``SuccessiveHalvingPruner`` at a rung: stop while the `n` values at the rung so far (its own
    included) are at most `bootstrap_count`; else go on when `value` is at least the
    ``max(0, floor(n / eta) - 1)``-th largest of them."""
    ranked = sorted([*competing, value], reverse=True)
    if len(ranked) <= bootstrap_count:
        return False
    return value >= ranked[max(0, len(ranked) // eta - 1)]


def replay_sha_promotion(
    curves: list[list[float]], order: list[int], min_resource: int, eta: int, bootstrap_count: int = 0
) -> dict:
    """The product's promotion (hpo/trial/_promotion.py) replayed: Optuna's ``SuccessiveHalvingPruner`` (with
    `bootstrap_count`; the shipped :func:`maskcls_hpo.hpo.trial.asha_pruner` has ``eta - 1``) judges
    each trial at each rung as it gets there (:func:`_sha_goes_on`); a trial it stops is paused, and before
    each new config the worker promotes a paused trial that is now in the top ``floor(n_k / eta)`` of its rung
    (:func:`maskcls_hpo.hpo.trial.top_fraction`, one value per config), highest rung first. A promoted trial
    continues its recorded curve from the epoch it stopped at and is judged at the next rung; the pruner's own
    rung lists hold its earlier rung values twice, as Optuna's do (a copy inherits its source's values).

    Returns the same dict as :func:`replay_asha`.
    """
    epochs = len(curves[0])
    ladder = rungs(epochs, min_resource, eta)[:-1]  # the pruner's rungs; the last epoch is never judged
    pruner_values: list[list[float]] = [[] for _ in ladder]
    values: list[dict[int, float]] = [{} for _ in ladder]  # per rung, one value per config
    paused: dict[int, int] = {}  # config -> rung it stopped at
    done: set[int] = set()
    spent, incumbent, trace, promotions, queue = 0, None, [], 0, list(order)

    def run(c: int, start: int) -> None:
        """Train config `c` from epoch `start` + 1 until the pruner stops it or it completes."""
        nonlocal spent, incumbent
        for k, step in enumerate(ladder):
            if step <= start:
                continue
            value = curves[c][step - 1]
            goes_on = _sha_goes_on(value, pruner_values[k], eta, bootstrap_count)
            pruner_values[k].append(value)
            values[k].setdefault(c, value)
            if not goes_on:
                spent += step - start
                paused[c] = k
                return
        spent += epochs - start
        done.add(c)
        incumbent = max(curves[c]) if incumbent is None else max(incumbent, max(curves[c]))

    while True:
        highest_first = range(len(ladder) - 1, -1, -1)
        job = next(((c, k) for k in highest_first for c in top_fraction(values[k], eta) if paused.get(c) == k), None)
        if job is not None:
            c, k = job
            del paused[c]
            for j in range(k + 1):
                pruner_values[j].append(values[j][c])  # the copy's inherited rung values
            promotions += 1
            run(c, ladder[k])
        elif queue:
            run(queue.pop(0), 0)
        else:
            break
        trace.append((spent, incumbent))
    pruned = [c for c in range(len(curves)) if c not in done]
    return {"trace": trace, "pruned": pruned, "epochs": spent, "promotions": promotions}


PROMOTION = {
    "promote_rf2_min1": (1, 2, "asha", 0),
    "promote_rf2_min2": (2, 2, "asha", 0),
    "promote_rf3_min1": (1, 3, "asha", 0),
    "promote_rf2_min4": (4, 2, "asha", 0),
    "sha_rf2_min4_promote": (4, 2, "product", 0),
    "sha_rf2_min4_boot1_promote": (4, 2, "product", 1),
    "sha_rf3_min4_boot2_promote": (4, 3, "product", 2),
    "sha_rf4_min4_boot3_promote": (4, 4, "product", 3),
    "sha_rf2_min2_promote": (2, 2, "product", 0),
    "sha_rf2_min2_boot1_promote": (2, 2, "product", 1),
    "sha_rf2_promote": (1, 2, "product", 0),
}
"""name -> (min_resource, eta, kind, bootstrap_count): "asha" replays Li et al.'s Algorithm 2 (every trial
pauses at every rung), "product" replays Optuna's SuccessiveHalvingPruner(min_resource, eta, bootstrap_count)
with the product's promotion (:func:`replay_sha_promotion`; a sweep file with that pruner and
``PROMOTION = True``, the default). ``sha_rf2_min4_boot1_promote`` is what the shipped sweeps run for trials of
8 epochs or more (:func:`maskcls_hpo.hpo.trial.asha_pruner`); with ``bootstrap_count = eta - 1`` the product's
rule is Algorithm 2's (same replays as ``promote_rf2_min4``)."""
