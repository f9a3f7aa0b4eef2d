#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Print the density results as a table and plot memory per instance
against the instance count for each mode (gnuplot, PNG).

report.py RESULTS.json PLOT.png
"""
import json
import os
import subprocess
import sys

MODES = ["none", "ksm", "ksm-full", "upm"]
MiB = 2**20


def fmt(v, f="%.1f"):
    return "-" if v is None else f % v


def table(res):
    pts = res["points"]
    w = res["workload"]
    print("Serverless density, kernel %s (%s flavour), emulated guest "
          "(QEMU TCG, %d CPU online, %.1f GiB)"
          % (res["kernel"], res["flavour"], res["cpus"],
             res["mem_total_bytes"] / 2**30))
    print("Workload: %s" % w.get("description", ""))
    print("%-9s %5s %11s %11s %9s %11s %10s %9s %9s" % (
        "mode", "inst", "total MiB", "MiB/inst", "saving", "MemAvail",
        "advise s", "KSM wait", "ksmd cpu"))
    print("%-9s %5s %11s %11s %9s %11s %10s %9s %9s" % (
        "", "", "(Pss)", "", "vs none", "drop MiB", "(slowest)", "to UPM s",
        "s"))
    for m in MODES:
        for p in [p for p in pts if p["mode"] == m]:
            wait = None
            if m.startswith("ksm"):
                wait = p.get("time_to_saving_s")
                if wait is not None:
                    wait = "%.0f" % wait
                elif p["ksm_wait_s"] >= p["ksm_cap_s"]:
                    wait = ">%.0f" % p["ksm_cap_s"]     # gave up at the cap
            print("%-9s %5d %11.1f %11.1f %8s%% %11.1f %10s %9s %9s" % (
                m, p["instances"], p["memory_bytes"] / MiB,
                p["memory_per_instance_bytes"] / MiB,
                fmt(p["saving_percent"]), p["memavailable_drop_bytes"] / MiB,
                fmt(p["advise_s_max"], "%.2f") if m != "none" else "-",
                wait or "-", fmt(p.get("ksmd_cpu_s"), "%.1f")))


def plot(res, png):
    data = png[:-4] + ".dat"
    with open(data, "w") as f:
        for m in MODES:
            f.write("# %s\n" % m)
            for p in [p for p in res["points"] if p["mode"] == m]:
                f.write("%d %.2f\n" % (p["instances"],
                                       p["memory_per_instance_bytes"] / MiB))
            f.write("\n\n")
    titles = {"none": "no dedup", "ksm": "KSM, defaults (after wait)",
              "ksm-full": "KSM, full speed (after wait)",
              "upm": "UPM (MADV\\_UPM\\_MERGEABLE)"}
    # ksm-full often lies on UPM's line: draw it dashed with open circles
    style = {"none": "lw 2 pt 7", "ksm": "lw 2 pt 5",
             "ksm-full": "lw 2 dt 2 pt 6 ps 2", "upm": "lw 2 pt 7"}
    plots = ", ".join("'%s' index %d with linespoints %s title '%s'"
                      % (data, i, style[m], titles[m])
                      for i, m in enumerate(MODES))
    title = ("Memory per warm function instance (numpy, %s MiB model; "
             "emulated guest)" % res["workload"].get("weights_mib", "?"))
    script = """set terminal pngcairo size 800,560 font ',11'
set output '%s'
set title '%s'
set xlabel 'instances'
set ylabel 'MiB per instance (sum of Pss / instances)'
set logscale x 2
set xtics (1,2,4,8,16)
set xrange [0.85:19]
set yrange [0:*]
set key below
set grid
plot %s
""" % (png, title, plots)
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        script = script.replace("pngcairo", "png")
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)


def main(results, png):
    with open(results) as f:
        res = json.load(f)
    table(res)
    plot(res, png)
    n16 = [p for p in res["points"] if p["mode"] == "upm"]
    if n16:
        p = max(n16, key=lambda p: p["instances"])
        verdict = "met" if p["saving_percent"] >= 55 else "MISSED"
        if p["instances"] < 16:
            verdict = "not measured (the target is for 16 instances)"
        print("advise s: wall time of the slowest instance's advise calls (all "
          "instances start together and share the guest's CPUs); KSM wait: "
          "seconds after all were ready until KSM reached %.0f%% of UPM's "
          "saving." % (100 * res["ksm_target"]))
    print("Target (>= 55%% less memory than no dedup at %d instances "
              "with UPM): %s, measured %.1f%%" % (p["instances"], verdict,
                                                  p["saving_percent"]))
    ksm = sorted({p["instances"] for p in res["points"] if p["mode"] == "ksm"})
    print("KSM at defaults ran for %s instances only, each point capped at "
          "%.0f s after the instances were ready; KSM modes stop waiting when "
          "they reach %.0f%% of UPM's saving." % (
              ",".join(map(str, ksm)) or "no", res["ksm_cap_s"],
              100 * res["ksm_target"]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
