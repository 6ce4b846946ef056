"""The compute ledger of a sweep by stage: the sweep's trials, its confirm study's runs, finalize's models.

Each stage is :func:`maskcls_hpo.hpo.trial.stage_ledger` of that stage's trials (their stored epochs, not
counters), finalize's models are recorded by `finalize` on the source study (user attr ``ledger_finalize``,
one entry per model folder, so a reused model is not counted twice). `status` prints :func:`format_ledger`,
`report` draws it, `export` writes it into the exported file (``ledger``).
"""

from __future__ import annotations

from typing import Any

import optuna

from maskcls_hpo.hpo.attrs import StudyAttrs
from maskcls_hpo.hpo.select._summary import find_confirm_study
from maskcls_hpo.hpo.trial import empty_stage, stage_ledger

STAGES = ("sweep", "confirm", "finalize")


def _finalize_stage(source: optuna.Study) -> dict[str, Any]:
    out = empty_stage()
    models = (source.user_attrs.get(StudyAttrs.FINALIZE_LEDGER) or {}).get("models", {})
    for m in models.values():
        out["trials"] += 1
        out["epochs"] += int(m.get("epochs", 0))
        out["image_epochs"] += int(m.get("image_epochs", 0))
        out["seconds"] = round(out["seconds"] + float(m.get("seconds", 0.0)), 3)
        device = str(m.get("device", "cpu"))
        out["seconds_by_device"][device] = round(out["seconds_by_device"].get(device, 0.0) + m.get("seconds", 0.0), 3)
    return out


def _stage(study: optuna.Study, fresh: bool) -> dict[str, Any]:
    """The study's stage: from its trials (`fresh`), else as its workers last stored it (from the trials when
    nothing is stored yet)."""
    stored = study.user_attrs.get(StudyAttrs.LEDGER)
    if not fresh and isinstance(stored, dict) and "epochs" in stored:
        return stored
    return stage_ledger(study.get_trials(deepcopy=False))


def study_ledger(source: optuna.Study, fresh: bool = True) -> dict[str, Any]:
    """The ledger of the sweep study `source`, its linked confirm study and its finalize.

    Args:
        fresh: compute the sweep and confirm stages from their trials (else read what the workers stored as the
            study user attr ``ledger``, at most ~10 s old while workers run: `status` reads that, so it does
            not load every trial).

    Returns:
        {"sweep": stage, "confirm": stage, "finalize": stage, "total": {"epochs", "image_epochs", "seconds"},
        "pruning_saved": {"trials", "epochs", "image_epochs"}}; a stage as
        :func:`maskcls_hpo.hpo.trial.stage_ledger` (finalize's "trials" are its models).
    """
    linked = find_confirm_study(source)
    stages = {
        "sweep": _stage(source, fresh),
        "confirm": _stage(linked, fresh) if linked is not None else empty_stage(),
        "finalize": _finalize_stage(source),
    }
    total = {k: sum(stages[s][k] for s in STAGES) for k in ("epochs", "image_epochs")}
    total["seconds"] = round(sum(stages[s]["seconds"] for s in STAGES), 3)
    pruned = stages["sweep"]["pruned"]
    return {
        **stages,
        "total": total,
        "pruning_saved": {
            "trials": pruned["trials"],
            "epochs": pruned["epochs_saved"],
            "image_epochs": pruned["image_epochs_saved"],
        },
    }


def record_final_model(
    source: optuna.Study, folder: str, epochs: int, image_epochs: int, seconds: float, device: str
) -> None:
    """Record one model `finalize` trained (under its folder name: retraining it replaces the entry)."""
    doc = dict(source.user_attrs.get(StudyAttrs.FINALIZE_LEDGER) or {})
    models = dict(doc.get("models", {}))
    kind = "cuda" if device.startswith("cuda") else "cpu"
    models[folder] = {"epochs": epochs, "image_epochs": image_epochs, "seconds": round(seconds, 3), "device": kind}
    source.set_user_attr(StudyAttrs.FINALIZE_LEDGER, {**doc, "models": models})


def format_ledger(ledger: dict[str, Any]) -> list[str]:
    """Lines for `status`: one per stage, the total, and what pruning saved."""

    def line(name: str, s: dict[str, Any]) -> str:
        devices = ", ".join(f"{'GPU' if d == 'cuda' else 'CPU'} {v:,.0f} s" for d, v in s["seconds_by_device"].items())
        return (
            f"  {name:<9} {s['epochs']:>6,} epochs {s['image_epochs']:>12,} image-epochs {s['seconds']:>10,.0f} s"
            + (f" ({devices})" if devices else "")
        )

    t, p = ledger["total"], ledger["pruning_saved"]
    promoted = ledger["sweep"].get("promoted", 0)  # ledgers stored before promotion have none
    return [
        "compute ledger:",
        *(line(name, ledger[name]) for name in STAGES),
        f"  {'total':<9} {t['epochs']:>6,} epochs {t['image_epochs']:>12,} image-epochs {t['seconds']:>10,.0f} s",
        f"  pruning saved {p['epochs']:,} epochs ({p['image_epochs']:,} image-epochs) over {p['trials']} pruned "
        "trial(s), against running each to its last epoch"
        + (f"; {promoted} pruned trial(s) promoted: continued from their checkpoints" if promoted else ""),
    ]
