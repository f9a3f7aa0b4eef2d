#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Serverless density: memory of N warm function instances per dedup mode.

Runs as root in the guest (make run). For each mode and instance count it
starts N instances of function.py, each in its own PID and mount namespace
(unshare --pid --fork --mount --mount-proc) and its own memory cgroup,
waits until every one has loaded its model, run its inference and advised
its memory, measures, and kills them. Modes:

  none      no advice, ksmd off
  upm       MADV_UPM_MERGEABLE (upm.advise_self()), ksmd off
  ksm-full  MADV_MERGEABLE, ksmd with sleep_millisecs=0, pages_to_scan=20000
  ksm       MADV_MERGEABLE, ksmd at its defaults

For the KSM modes ksmd runs from the start of the point; after all instances
are ready, the memory is polled every POLL seconds until KSM's saving reaches
95% of UPM's saving at the same count or KSM_CAP seconds pass, whichever
comes first; the memory reported is the one at that moment. Where UPM
saved under 1% (a single instance) KSM gets no wait.

From the start of the instances until the point's measurement ends, a
thread samples the sum of the instances' memory.current every SAMPLE
seconds (the point's "timeline").

Writes RESULTS (JSON, schema in tools/upm/density/README) and prints each
step. Usage: density.py MODEL_DIR RESULTS [--counts 1,2,4,8,16]
[--ksm-counts 4,16] [--ksm-cap 120]
"""
import argparse
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

try:
    import upm      # tools/upm/python: pip install, or PYTHONPATH (run.sh)
except ImportError:
    sys.exit("density: no upm module: pip install tools/upm/python, or set "
             "PYTHONPATH=tools/upm/python")

HERE = os.path.dirname(os.path.realpath(__file__))
CG = "/sys/fs/cgroup/upm-density"
STATUS = "/run/upm-density"
KSM = "/sys/kernel/mm/ksm/"
POLL = 2.0
SAMPLE = 0.5        # seconds between two samples of a point's timeline
TARGET = 0.95       # fraction of UPM's saving KSM must reach
TICK = os.sysconf("SC_CLK_TCK")
WORKLOAD = ("python3 + numpy function; model of 4 float32 matrices of "
            "2560x2560 (%.0f MiB) loaded with np.load (private anonymous "
            "copies), one inference on its own random input, then its "
            "anonymous memory advised; each instance in its own PID and "
            "mount namespace and memory cgroup")


def log(msg):
    print("density: " + msg, flush=True)


def write(path, val):
    with open(path, "w") as f:
        f.write(str(val))


def read(path):
    with open(path) as f:
        return f.read().strip()


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def drop_caches():
    os.sync()
    write("/proc/sys/vm/drop_caches", 3)


def ksmd_pid():
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if read("/proc/%s/comm" % d) == "ksmd":
                    return int(d)
            except OSError:
                pass
    return None


def ksmd_cpu():
    pid = ksmd_pid()
    if pid is None:
        return 0.0
    f = read("/proc/%d/stat" % pid).rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK     # utime + stime


KSM_DEFAULTS = {}


def ksm_set(run, **knobs):
    for k, v in knobs.items():
        write(KSM + k, v)
    write(KSM + "run", run)


def reset():
    """No instance left, everything unmerged, ksmd stopped at defaults."""
    ksm_set(2)
    ksm_set(0, **KSM_DEFAULTS)
    drop_caches()


class Point:
    def __init__(self, mode, n, model):
        self.mode, self.n, self.model = mode, n, model
        self.procs, self.cgroups = [], []

    def start(self):
        shutil.rmtree(STATUS, ignore_errors=True)
        os.makedirs(STATUS)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        for i in range(self.n):
            cg = "%s/fn%d" % (CG, i)
            os.makedirs(cg, exist_ok=True)
            self.cgroups.append(cg)
            cmd = ["unshare", "--pid", "--fork", "--mount", "--mount-proc",
                   "--kill-child", sys.executable,
                   os.path.join(HERE, "function.py"),
                   self.model, self.mode, "%s/%d.json" % (STATUS, i)]
            self.procs.append(subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL,
                preexec_fn=lambda cg=cg: write(cg + "/cgroup.procs", 0)))

    def wait_ready(self, timeout=900):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            done = glob.glob(STATUS + "/*.json")
            if len(done) == self.n:
                return [json.load(open(p)) for p in sorted(done)]
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("an instance exited with %s"
                                       % p.returncode)
            time.sleep(0.5)
        raise RuntimeError("instances not ready after %ds" % timeout)

    def pids(self):
        out = []
        for cg in self.cgroups:
            out += [int(x) for x in read(cg + "/cgroup.procs").split()]
        return out

    def pss(self):
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/smaps_rollup" % pid) as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def memcg(self):
        return sum(int(read(cg + "/memory.current")) for cg in self.cgroups)

    def stop(self):
        for p in self.procs:
            p.kill()        # unshare; its PID namespace's init dies with it
        for p in self.procs:
            p.wait()
        for cg in self.cgroups:
            try:
                upm.remove_cgroup(cg)
            except OSError as e:
                log("warning: cannot remove %s: %s" % (cg, e.strerror))


class Sampler:
    """Sum of memory.current of cgroups, every SAMPLE s, in a thread.

    samples: [[seconds since t0, bytes], ...]; a cgroup that is gone
    counts 0. The thread sleeps between samples (the guest has 2 CPUs; a
    busy poller would slow down what is measured).
    """

    def __init__(self, cgroups, t0):
        self.cgroups, self.t0, self.samples = cgroups, t0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        total = 0
        for cg in self.cgroups:
            try:
                total += int(read(cg + "/memory.current"))
            except (OSError, ValueError):
                pass
        self.samples.append([round(time.monotonic() - self.t0, 2), total])

    def run(self):
        while True:
            self.sample()
            # until the next multiple of SAMPLE since t0: no drift
            if self.done.wait(SAMPLE - (time.monotonic() - self.t0) % SAMPLE):
                break
        self.sample()       # the last one: the end of the measurement

    def start(self):
        self.thread.start()

    def stop(self):
        """Stop and wait for the thread; once done, a no-op."""
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def mean(xs):
    return sum(xs) / len(xs)


def run_point(mode, n, model, upm_mem, cap):
    reset()
    avail0 = meminfo("MemAvailable")
    if mode == "ksm":
        ksm_set(1)
    elif mode == "ksm-full":
        ksm_set(1, sleep_millisecs=0, pages_to_scan=20000)
    cpu0 = ksmd_cpu()
    upm0 = int(read("/sys/kernel/mm/upm/time_ns"))
    pt = Point(mode, n, model)
    t0, wall0 = time.monotonic(), time.time()
    pt.start()
    # the timeline starts after the spawns: Point.start() forks with a
    # preexec_fn, which is not safe while another thread runs
    sampler = Sampler(pt.cgroups, t0)
    sampler.start()
    try:
        st = pt.wait_ready()
        t_ready = time.monotonic()
        ready = [s["ready_s"] for s in st]
        advise = [s["advise_s"] for s in st]
        rec = {"mode": mode, "instances": n,
               "startup_s": round(t_ready - t0, 2),
               "advise_s_total": round(sum(advise), 4),
               "advise_s_max": round(max(advise), 4),
               "advised_bytes": sum(s["advised_bytes"] for s in st),
               "weights_bytes": st[0]["weights_bytes"],
               "advise_cpu_s_total": round(
                   sum(s["advise_cpu_s"] for s in st), 4),
               "ready_s_mean": round(mean(ready), 3),
               "ready_s_max": round(max(ready), 3),
               "advise_share_percent": round(
                   100 * mean(advise) / mean(ready), 2),
               # the instances' wall clock against the driver's
               "all_ready_s": round(
                   max(s["ready_at"] for s in st) - wall0, 2)}
        if mode.startswith("ksm"):
            target = upm_mem.get(n)
            reached = None
            # no wait where UPM saved nothing to reach (upm_mem[n] None)
            while not (n in upm_mem and target is None):
                waited = time.monotonic() - t_ready
                mem = pt.pss()
                if target is not None and mem <= target:
                    reached = waited
                    break
                if waited >= cap:
                    break
                time.sleep(POLL)
            waited = time.monotonic() - t_ready
            rec["ksm_wait_s"] = round(waited, 1)
            rec["ksm_cap_s"] = cap
            rec["time_to_saving_s"] = (None if reached is None
                                       else round(reached, 1))
            rec["ksm_full_scans"] = int(read(KSM + "full_scans"))
            rec["ksm_pages_sharing"] = int(read(KSM + "pages_sharing"))
        drop_caches()
        time.sleep(1)
        rec["memory_bytes"] = pt.pss()
        rec["memavailable_drop_bytes"] = avail0 - meminfo("MemAvailable")
        rec["memcg_bytes"] = pt.memcg()
        rec["ksmd_cpu_s"] = round(ksmd_cpu() - cpu0, 2)
        rec["upm_pages_merged"] = int(read("/sys/kernel/mm/upm/pages_merged"))
        rec["upm_time_s"] = round(
            (int(read("/sys/kernel/mm/upm/time_ns")) - upm0) / 1e9, 3)
        sampler.stop()      # the measurement ends here, before the kill
        rec["timeline"] = sampler.samples
    finally:
        sampler.stop()
        pt.stop()
    rec["memory_per_instance_bytes"] = rec["memory_bytes"] // n
    return rec


def add_saved(rec, base):
    """saved_bytes and cpu_s_per_gib_saved against "none" (base bytes)."""
    saved = None if base is None else base - rec["memory_bytes"]
    rec["saved_bytes"] = saved
    cost = None
    if saved is not None and saved > 0 and saved >= base / 100:
        # the CPU the merging took: the advise (UPM merges in madvise)
        # or ksmd (KSM's advise only marks the ranges)
        cpu = (rec["advise_cpu_s_total"] if rec["mode"] == "upm" else
               rec["ksmd_cpu_s"] if rec["mode"].startswith("ksm") else None)
        if cpu is not None:
            cost = round(cpu / (saved / 2**30), 3)
    rec["cpu_s_per_gib_saved"] = cost


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("results")
    ap.add_argument("--counts", default="1,2,4,8,16")
    ap.add_argument("--ksm-counts", default="4,16")
    ap.add_argument("--ksm-cap", type=float, default=120)
    a = ap.parse_args()
    counts = [int(x) for x in a.counts.split(",")]
    ksm_counts = [int(x) for x in a.ksm_counts.split(",")]
    for k in ("sleep_millisecs", "pages_to_scan"):
        KSM_DEFAULTS[k] = int(read(KSM + k))
    os.makedirs(CG, exist_ok=True)
    write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
    write(CG + "/cgroup.subtree_control", "+memory")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    out = {"schema": 1, "kernel": platform.release(),
           "flavour": os.environ.get("FLAVOUR", ""),
           "cpus": len(os.sched_getaffinity(0)),
           "mem_total_bytes": meminfo("MemTotal"),
           "workload": {}, "ksm_cap_s": a.ksm_cap, "ksm_target": TARGET,
           "ksm_defaults": dict(KSM_DEFAULTS), "points": []}
    none_mem, upm_mem = {}, {}
    plan = [("none", counts), ("upm", counts), ("ksm-full", counts),
            ("ksm", ksm_counts)]
    for mode, cs in plan:
        for n in cs:
            log("mode %s, %d instance%s: starting" % (mode, n, "s"[n == 1:]))
            rec = run_point(mode, n, a.model, upm_mem, a.ksm_cap)
            base = none_mem.get(n)
            rec["saving_percent"] = (
                None if base is None else
                round(100 * (1 - rec["memory_bytes"] / base), 1))
            if mode == "none":
                none_mem[n] = rec["memory_bytes"]
                rec["saving_percent"] = 0.0
            elif mode == "upm" and base:
                # KSM's goal: TARGET of UPM's saving; none when UPM saved
                # under 1% (one instance): KSM then gets no wait at all
                saved = base - rec["memory_bytes"]
                upm_mem[n] = (base - TARGET * saved if saved > base / 100
                              else None)
            # "none" runs first at every count (plan): base is known here
            add_saved(rec, none_mem.get(n))
            out["points"].append(rec)
            if not out["workload"]:
                out["workload"] = {
                    "weights_bytes": rec["weights_bytes"],
                    "weights_mib": round(rec["weights_bytes"] / 2**20),
                    "description": WORKLOAD % (rec["weights_bytes"] / 2**20)}
            log("mode %s, %d instances: %.1f MiB total, %.1f MiB each, "
                "saving %s%%, ready after %.1f s%s" % (
                    mode, n, rec["memory_bytes"] / 2**20,
                    rec["memory_per_instance_bytes"] / 2**20,
                    rec["saving_percent"], rec["startup_s"],
                    "" if not mode.startswith("ksm") else
                    ", KSM waited %.0f s (reached UPM: %s)"
                    % (rec["ksm_wait_s"], rec["time_to_saving_s"])))
            with open(a.results, "w") as f:
                json.dump(out, f, indent=1)
    reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
