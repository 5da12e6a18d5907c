"""study: how many synthetic images are worth one real image?"""

import os

# OpenMP threads that spin while waiting make torch 25-60x slower on a busy machine (measured on 2 cores
# with one other process: a tiny UNet step went from 0.13 s to 4.7 s; with PASSIVE, 0.19 s). It must be set
# before torch is imported, which every torch-using module of study does after this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
