"""hpo/store/_study.py: which study `open_study` opens when none is named."""

import pytest

from maskcls_hpo.errors import StorageError


def test_the_default_study_skips_a_linked_confirm_study(tmp_path):
    import optuna

    from maskcls_hpo.hpo.store import open_study

    url = f"sqlite:///{tmp_path / 'two.db'}"
    optuna.create_study(study_name="smoke", storage=url)
    optuna.create_study(study_name="smoke-confirm", storage=url).set_user_attr("kind", "confirm")
    assert open_study(url).study_name == "smoke"
    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(StorageError, match=r"holds 3 studies \(smoke, smoke-confirm, other\); pass --study NAME"):
        open_study(url)
