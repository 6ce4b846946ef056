"""Readers and presenters of studies: `status`, the live view of `launch`, the HTML report, the dashboard.

The top layer below the CLI: it imports :mod:`maskcls_hpo.hpo`; nothing in ``hpo`` imports it. Each module is
imported where it is used (the report needs plotly, the dashboard optuna-dashboard).
"""
