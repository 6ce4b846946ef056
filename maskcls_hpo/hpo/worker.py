"""``python -m maskcls_hpo.hpo.worker``: the worker process's old name, kept for sbatch scripts users already hold.

New code runs ``python -m maskcls_hpo.hpo.workers``; this module goes one release later.
"""

from maskcls_hpo.hpo.workers._main import exit_now, main

if __name__ == "__main__":
    exit_now(main())
