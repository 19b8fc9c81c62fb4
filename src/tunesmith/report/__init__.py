"""Human-readable outputs of a run: report.html and MODEL_CARD.md."""


def write_report(run_path):
    from tunesmith.report.build import write_report as _write

    return _write(run_path)
