"""The report layer: a run folder's long tables -> summary tables, plots, report.md/html, terminal tables.

Modules, one job each: `load` (read and validate a run folder), `tables` (aggregation over clients
and seeds), `fmt` (fixed number formats), `plots` (PNG bytes), `document` (Markdown/HTML writers),
`render` (the report), `terminal` (the rich comparison table), `compare` (runs side by side).
"""
from simulator.report.compare import compare_markdown, compare_runs, compare_table
from simulator.report.load import RunData, load_run
from simulator.report.render import render_report
from simulator.report.tables import scheme_summary
from simulator.report.terminal import comparison_table, print_comparison

__all__ = [
    "RunData", "load_run", "scheme_summary", "render_report", "comparison_table", "print_comparison",
    "compare_runs", "compare_markdown", "compare_table",
]
