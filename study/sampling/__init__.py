"""Sampling layer: the sampling loop and strategies (`sampler`), class pairs and AugGen's alpha/beta search
(`pairs`), and pretrained open-set models (`pretrained`)."""
