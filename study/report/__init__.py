"""Report layer (never imports torch): `python -m study.report` writes reports/<name>/report.md (`build`) with
its figures (`plots`)."""
