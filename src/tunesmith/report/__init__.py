"""Primitives of a run's human-readable outputs (report.html and MODEL_CARD.md): page, tables, charts,
the model card. Each task draws its own report with them (tasks/*: `report`); pipeline.write_report
writes them into the run folder."""
