"""Data layer: dataset loaders, decoding cache and nested class-balanced subsets (`datasets`), and what a
generator is trained on, from training splits only (`sources`)."""
