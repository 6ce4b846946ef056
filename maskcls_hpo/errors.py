"""One root for every error a user can fix: :class:`MaskclsError`, caught once by the CLI.

Each class keeps the built-in base it had (``ValueError`` for bad input, ``RuntimeError`` for a state that
stops a run), so ``except ValueError`` in user code still works. Every message is one line (or, for
:class:`DataError`, one line per problem) naming the file, parameter or URL (password masked) and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MaskclsError",
    "ConfigError",
    "PretrainedWeightsError",
    "DataError",
    "DemoDataError",
    "TrainingError",
    "PredictError",
    "StorageError",
    "StorageSchemaError",
    "SweepError",
    "LaunchError",
    "ExportError",
    "ConfirmError",
    "DashboardError",
]


class MaskclsError(Exception):
    """Root of the project's errors; the message says what is wrong and what to do."""

    exit_code = 1


class ConfigError(MaskclsError, ValueError):
    """A config file or mapping that cannot be used; the message names the file and the key."""


class PretrainedWeightsError(ConfigError):
    """`pretrained` is set but no weights can be loaded without the network, or a weights file does not fit."""


class DataError(MaskclsError, ValueError):
    """A dataset (or corrections file) that cannot be used as it is.

    Attributes:
        problems: one line per problem, each ``"PATH: what is wrong; what to do"``.
    The message is the problems joined by newlines.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DemoDataError(MaskclsError, ValueError):
    """Bad input to the generator (output folder, faces folder, size, counts); the message says what to do."""


class TrainingError(MaskclsError, RuntimeError):
    """A training run that stopped; `reason` is a short machine-readable summary (stored on trials)."""

    def __init__(self, message: str, reason: str = "training error"):
        super().__init__(message)
        self.reason = reason


class PredictError(MaskclsError, ValueError):
    """A prediction or scoring input that cannot be used (checkpoint, study, submission); one clear line."""


class StorageError(MaskclsError, RuntimeError):
    """A storage URL that cannot be used; the message names the URL with its password masked."""


class StorageSchemaError(StorageError):
    """The database was made by another Optuna schema version; nothing was migrated."""


class DashboardError(StorageError):
    """The dashboard cannot start: the storage holds no Optuna studies database, or `--host` is no address."""


class SweepError(MaskclsError, ValueError):
    """A sweep file that cannot be used; the message names the file (and line or parameter)."""


class LaunchError(MaskclsError, RuntimeError):
    """A sweep cannot start or did not reach its budget (no budget, workers died); the message says why."""


class ExportError(MaskclsError, RuntimeError):
    """Nothing to export or report (no COMPLETE trial, unknown trial number), or a bad `--out` / `--top` /
    `--trial` of `export` or `report`; the message is one line."""


class ConfirmError(MaskclsError, ValueError):
    """`confirm` / `finalize` input that cannot be used (too few COMPLETE trials, folds < 2, ...); one line."""
