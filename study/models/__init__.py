"""Model layer: the class-conditional diffusion generator (`generator`) and its noise schedule, without torch
(`noise`), and the classifiers (`classifier`)."""
