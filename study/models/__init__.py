"""Model layer: the class-conditional diffusion generator (`generator`) and the classifiers (`classifier`)."""
