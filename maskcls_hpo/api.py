"""The Python API a notebook calls; `maskcls-hpo`'s verbs are thin wrappers over these
functions and the ones re-exported by ``maskcls_hpo`` (``run_sweep`` lives in ``hpo.launch``).

Every function raises a :class:`~maskcls_hpo.errors.MaskclsError` (one line saying what to do) on input a
user can fix. Heavy libraries (torch, timm, Optuna) are imported on first use.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_best", "open_study"]


def open_study(storage: str | Path | None = None, study_name: str | None = None, password_file: str | None = None):
    """Open an existing study for reading (``optuna.Study``).

    Args:
        storage: URL or SQLite path (default: env ``MASKCLS_HPO_STORAGE``, else ``sqlite:///storage/maskcls_hpo.db``).
        study_name: the study; None: the only study in the storage.

    Raises:
        StorageError: no such database (nothing is created), no such study, or several studies and no name.
    """
    import optuna

    from maskcls_hpo.errors import StorageError
    from maskcls_hpo.hpo.storage import display_url, mask_password, open_storage, resolve_storage_url

    url = resolve_storage_url(storage, must_exist=True, password_file=password_file)
    rdb = open_storage(url, create=False)
    try:
        names = optuna.get_all_study_names(rdb)  # summaries would load every trial of every study
    except Exception as err:  # noqa: BLE001 - a database without Optuna's tables
        raise StorageError(f"cannot read studies from {display_url(url)}: {mask_password(err)}") from None
    if study_name is None:
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise StorageError(f"storage {display_url(url)} holds {len(names)} studies ({listed}); pass --study NAME")
        study_name = names[0]
    if study_name not in names:
        raise StorageError(f"no study '{study_name}' in {display_url(url)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=rdb)


def export_best(
    out: str | Path = "best.yaml",
    *,
    storage: str | Path | None = None,
    study_name: str | None = None,
    trial_number: int | None = None,
    top: int | None = None,
    fmt: str | None = None,
    password_file: str | None = None,
) -> list[Path]:
    """Write the best COMPLETE trial (or trial `trial_number`, or the best `top`) as a training config.

    The file holds the full training config (sweep base + params) plus study, trial number, value, accuracy,
    versions and data fingerprint, in plain YAML/JSON types; ``train(load_config(path))`` accepts it.

    Returns:
        the paths written.

    Raises:
        StorageError: see :func:`open_study`. ExportError: no COMPLETE trial, unknown trial, bad format.
    """
    from maskcls_hpo.hpo.export import export_trials

    study = open_study(storage, study_name, password_file=password_file)
    return export_trials(study, Path(out), trial_number=trial_number, top=top, fmt=fmt)
