"""Report layer (never imports torch): `python -m study.report` writes reports/<name>/report.md (`build`) from what
`inputs` reads, with sections (`sections`, `estimates`), markdown pieces (`markdown`), the artifact store's
provenance (`provenance`) and figures (`plots`). Every number comes from study.analysis; the report formats."""
