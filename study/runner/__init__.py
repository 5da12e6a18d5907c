"""Runner layer: the stage graph (`plan`), how each stage is built (`stages`), scheduling on local or cluster
workers (`execute`), the cells table (`collect`) and the `python -m study.run` command (`cli`).
`plan` and `collect` never import torch."""
