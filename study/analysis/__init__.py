"""Analysis layer (never imports torch): numbers from the cells table (study.table).

`equivalence` runs the equivalence analysis (`analyse`, `write_tables`, `python -m study.equivalence`) from its
parts: `cells` (the table's checks, groups), `curve` (the real learning curve and its families), `exchange`
(n_eff, beta and k per group and per cell), `joint` (the joint model), `closed_form` (the paper's closed form),
`published` (the paper's constants and which apply), `bootstrap`. `estimators` holds the summaries with
intervals the report and the benchmarks print; `simulate` draws cells tables with planted answers.
"""
