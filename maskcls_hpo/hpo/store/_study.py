"""Opening an existing study for reading, by name or as the only study of a storage."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from maskcls_hpo.errors import StorageError
from maskcls_hpo.hpo.attrs import KIND_CONFIRM, ConfirmAttrs
from maskcls_hpo.hpo.store._rdb import open_storage, read_only_url
from maskcls_hpo.hpo.store._secrets import mask_password
from maskcls_hpo.hpo.store._url import resolve_storage


def open_study(
    storage: str | Path | None = None,
    study_name: str | None = None,
    password_file: str | os.PathLike[str] | None = None,
) -> optuna.Study:
    """Open an existing study for reading (``optuna.Study``).

    Args:
        storage: URL or SQLite path (default: env ``MASKCLS_HPO_STORAGE``, else env ``OPTUNA_STORAGE``, else
            ``sqlite:///storage/maskcls_hpo.db``).
        study_name: the study; None: the only study in the storage (a linked confirm study does not count).

    An SQLite file that cannot be written (a read-only mount, an immutable file, a folder of another user) is
    opened read-only (:func:`~maskcls_hpo.hpo.store.read_only_url`), so `status`, `export` and `report` work on it.

    Raises:
        StorageError: no such database (nothing is created), no such study, or several studies and no name;
            each message names the storage and where it came from (``from env OPTUNA_STORAGE``, ...).
    """
    resolved = resolve_storage(storage, must_exist=True, password_file=password_file)
    rdb = open_storage(read_only_url(resolved.url), create=False)  # a file that cannot be written: read-only
    try:
        names = optuna.get_all_study_names(rdb)  # summaries would load every trial of every study
    except Exception as err:  # noqa: BLE001 - a database without Optuna's tables
        raise StorageError(f"cannot read studies from {resolved.shown}: {mask_password(err)}") from None
    if study_name is None:
        candidates = names
        if len(names) > 1:  # a linked confirm study (`S-confirm`) is not a candidate for the default
            linked = {
                s.study_name for s in rdb.get_all_studies() if s.user_attrs.get(ConfirmAttrs.KIND) == KIND_CONFIRM
            }
            candidates = [n for n in names if n not in linked]
        if len(candidates) != 1:
            listed = ", ".join(names) if names else "none"
            raise StorageError(f"storage {resolved.shown} holds {len(names)} studies ({listed}); pass --study NAME")
        study_name = candidates[0]
    if study_name not in names:
        raise StorageError(f"no study '{study_name}' in {resolved.shown} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=rdb)
