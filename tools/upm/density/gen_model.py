#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Write the density experiment's model: LAYERS float32 weight matrices of
DIM x DIM (4 x 2560 x 2560 = 100 MiB), deterministic (seed 2023), as .npy
files in the directory given. Does nothing if they are already there."""
import os
import sys

import numpy as np

LAYERS, DIM, SEED = 4, 2560, 2023


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for i in range(LAYERS):
        path = os.path.join(out, "layer%d.npy" % i)
        w = (rng.standard_normal((DIM, DIM), dtype=np.float32) /
             np.float32(np.sqrt(DIM)))
        if os.path.exists(path) and os.path.getsize(path) >= w.nbytes:
            continue
        np.save(path + ".tmp.npy", w)
        os.rename(path + ".tmp.npy", path)
    print("model: %d x %dx%d float32 = %.0f MiB in %s"
          % (LAYERS, DIM, DIM, LAYERS * DIM * DIM * 4 / 2**20, out))


if __name__ == "__main__":
    main(sys.argv[1])
