#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""A serverless function instance for the density experiment.

function.py MODEL_DIR MODE STATUS_FILE

Imports numpy, loads every layer*.npy of MODEL_DIR with np.load (private
anonymous copies, as a function runtime holds them), runs one inference
(a small MLP) on its own random input, then advises its anonymous memory:
MODE upm: upm.advise_self(); ksm, ksm-full: the same ranges get
MADV_MERGEABLE; none: nothing. Writes one JSON line to STATUS_FILE (times,
among them the advise's wall and CPU time and when it was ready) and stays
warm (sleeps) until killed.
"""
import glob
import json
import os
import signal
import sys
import time

t0 = time.monotonic()
import numpy as np  # noqa: E402
import upm  # noqa: E402  (tools/upm/python: installed, or PYTHONPATH)


def main(model_dir, mode, status):
    layers = [np.load(p) for p in sorted(glob.glob(model_dir + "/layer*.npy"))]
    t_load = time.monotonic()
    x = np.random.default_rng().standard_normal(layers[0].shape[1],
                                                dtype=np.float32)
    for w in layers:
        x = w @ x
        # ReLU by mask: numpy's AVX2 np.maximum crashes (SIGSEGV) under
        # Debian 12's QEMU TCG, the emulated guest of make run
        x[x < 0] = 0
    y = float(x.sum())
    t_inf = time.monotonic()
    adv = {"seconds": 0.0, "bytes": 0, "ranges": 0}
    # CPU time of this thread (user + system) in the advise: UPM merges
    # inside madvise(), in the calling thread, so the kernel's merge work
    # is counted here; ksmd's later work for KSM is not (see ksmd_cpu_s)
    cpu0 = time.thread_time()
    if mode == "upm":
        adv = upm.advise_self()
    elif mode in ("ksm", "ksm-full"):
        adv = upm.advise_self(ksm=True)
    advise_cpu = time.thread_time() - cpu0
    # ready: wall clock too, for the driver to place it in the point's time
    t_ready, ready_at = time.monotonic(), time.time()
    with open(status + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "output": y,
                   "weights_bytes": sum(w.nbytes for w in layers),
                   "start_s": round(t_load - t0, 3),
                   "inference_s": round(t_inf - t_load, 3),
                   "advise_s": adv["seconds"], "advised_bytes": adv["bytes"],
                   "advised_ranges": adv["ranges"],
                   "advise_cpu_s": round(advise_cpu, 6),
                   "ready_s": round(t_ready - t0, 3),
                   "ready_at": round(ready_at, 3)}, f)
    os.rename(status + ".tmp", status)
    while True:         # warm: wait for the next request (never comes)
        signal.pause()


if __name__ == "__main__":
    main(*sys.argv[1:4])
