"""What the tests share that is not a fixture. The fixtures themselves are in tests/conftest.py (those of several
folders) and in a folder's conftest.py (those of one folder: tests/ml, tests/hpo/select, tests/system).

- `layout`: datasets in the competition layout (`write_layout`, `make_persons`, the colours they paint);
- `studies`: sweep-file sources and study builders (`TINY_SWEEP`, `CONFIRM_SWEEP`, `sqlite_copy`, ...);
- `processes`: the CLI as a subprocess, `maskcls-hpo dashboard` as a process and a poller of its pages;
- `pg`: PostgreSQL databases and private servers, sweeps as real processes (a pytest plugin, loaded by
  tests/conftest.py for its fixtures);
- `sourcegrep`: greps over the package's own source.

`pyproject.toml` puts tests/ on `sys.path` (pytest's `pythonpath`), so a test writes `from helpers.layout import
write_layout`.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder (pyproject.toml, sweeps/, docs/, scripts/ sit in it)."""
