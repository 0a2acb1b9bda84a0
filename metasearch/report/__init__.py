"""A study's report: one self-contained interactive HTML page (plotly, drawn from
``optuna.visualization``) that works offline."""

from metasearch.report.page import write_report

__all__ = ["write_report"]
