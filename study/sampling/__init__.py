"""Sampling layer: the sampling loop and strategies (`sampler`), the sample-set artifact every sampler writes and
the classifier stage reads (`sample_set`), what sampling costs, without torch (`cost`), class pairs and AugGen's
alpha/beta search (`pairs`), and pretrained open-set models (`pretrained`)."""
