"""Tables and figures of the paper, built from the results store alone (never re-running an experiment).

Entry point: `analysis.report.build_report(results_dir)`; `analysis.tables` and `analysis.figures` hold the parts.
"""
