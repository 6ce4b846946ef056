"""``python -m maskcls_hpo.hpo.workers SETTINGS.json | --standby``: one worker process (see ``_main.main``)."""

from maskcls_hpo.hpo.workers._main import exit_now, main

if __name__ == "__main__":
    exit_now(main())
