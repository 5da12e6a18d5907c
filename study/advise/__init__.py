"""The planner, `python -m study.advise RESULTS_DIR | GRID`: answers forward questions from a fitted study (how many
synthetic images match n more real ones, which accuracy at a given volume), estimates what a grid costs before it
runs, and how many seeds it needs. `cost` is torch-free; `calibrate` measures rates with torch; `cli` is the
command line."""
