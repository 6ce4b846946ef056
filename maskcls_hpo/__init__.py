"""maskcls-hpo: Optuna hyperparameter sweeps for the 18-class face-mask classification task."""

__version__ = "0.1.0"
