#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Print the density results as a table and plot memory per instance
against the instance count for each mode (gnuplot, PNG), and the total
memory over time of the largest count measured in every mode (PLOT with
-timeline before .png; results without timelines skip that plot).

report.py RESULTS.json PLOT.png
"""
import json
import os
import subprocess
import sys

MODES = ["none", "ksm", "ksm-full", "upm"]
MiB = 2**20
TITLES = {"none": "no dedup", "ksm": "KSM, defaults",
          "ksm-full": "KSM, full speed", "upm": "UPM (MADV_UPM_MERGEABLE)"}


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
    head = "%-9s %5s %11s %11s %9s %11s %10s %9s %9s %10s %8s %9s"
    print(head % (
        "mode", "inst", "total MiB", "MiB/inst", "saving", "MemAvail",
        "advise s", "KSM wait", "ksmd cpu", "advise cpu", "adv % of",
        "CPU s/GiB"))
    print(head % (
        "", "", "(Pss)", "", "vs none", "drop MiB", "(slowest)", "to UPM s",
        "s", "s (total)", "start", "saved"))
    for m in MODES:
        for p in [p for p in pts if p["mode"] == m]:
            wait = None
            if m.startswith("ksm"):
                wait = p.get("time_to_saving_s")
                if wait is not None:
                    wait = "%.0f" % wait
                elif p["ksm_wait_s"] >= p["ksm_cap_s"]:
                    wait = ">%.0f" % p["ksm_cap_s"]     # gave up at the cap
            adv = m != "none"     # "none" advises nothing
            print("%-9s %5d %11.1f %11.1f %8s%% %11.1f %10s %9s %9s %10s "
                  "%8s %9s" % (
                      m, p["instances"], p["memory_bytes"] / MiB,
                      p["memory_per_instance_bytes"] / MiB,
                      fmt(p["saving_percent"]),
                      p["memavailable_drop_bytes"] / MiB,
                      fmt(p["advise_s_max"], "%.2f") if adv else "-",
                      wait or "-", fmt(p.get("ksmd_cpu_s"), "%.1f"),
                      fmt(p.get("advise_cpu_s_total"), "%.2f")
                      if adv else "-",
                      fmt(p.get("advise_share_percent"), "%.1f%%")
                      if adv else "-",
                      fmt(p.get("cpu_s_per_gib_saved"), "%.2f")))


def gnuplot(script):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        script = script.replace("pngcairo", "png")   # gnuplot without cairo
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


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
    gnuplot(script)
    os.remove(data)


def timeline_png(png):
    root, ext = os.path.splitext(png)
    return root + "-timeline" + ext


def plot_timeline(res, png):
    """Total memory over time, one line per mode, at the largest count
    measured in every mode that has timelines; False if there is none."""
    pts = [p for p in res["points"] if p.get("timeline")]
    modes = [m for m in MODES if any(p["mode"] == m for p in pts)]
    counts = {p["instances"] for p in pts}
    for m in modes:
        counts &= {p["instances"] for p in pts if p["mode"] == m}
    if not counts:
        return False
    n = max(counts)
    # the last point of a mode at that count (one, unless run twice)
    at_n = {p["mode"]: p for p in pts if p["instances"] == n}
    data = os.path.splitext(png)[0] + ".dat"
    plots, marks = [], []
    with open(data, "w") as f:
        for i, m in enumerate(modes):
            f.write("# %s\n" % m)
            for t, b in at_n[m]["timeline"]:
                f.write("%.2f %.1f\n" % (t, b / MiB))
            f.write("\n\n")
            # the line type of the mode's index in MODES: the same colour
            # as in the memory-per-instance plot
            lt = MODES.index(m) + 1
            plots.append("'%s' index %d with lines lt %d lw 2 title '%s'"
                         % (data, i, lt, TITLES[m]))
            ready = at_n[m].get("all_ready_s")
            if ready is not None:
                marks.append("set arrow from %.2f, graph 0 to %.2f, graph 1 "
                             "nohead lt %d dt 3 lw 1.5" % (ready, ready, lt))
    title = ("Total memory of %d warm function instances over time "
             "(sum of memory.current)\\nemulated guest (QEMU TCG), kernel "
             "%s, %d CPUs" % (n, res["kernel"], res["cpus"]))
    # noenhanced: "_" is no subscript, in the kernel release or the titles
    script = """set terminal pngcairo noenhanced size 800,560 font ',11'
set output '%s'
set title "%s"
set xlabel 'seconds since the instances were started (dotted: all ready)'
set ylabel 'MiB (sum of memory.current)'
set xrange [0:*]
set yrange [0:*]
set key below
set grid
%s
plot %s
""" % (png, title, "\n".join(marks), ", ".join(plots))
    gnuplot(script)
    os.remove(data)
    return True


def main(results, png):
    with open(results) as f:
        res = json.load(f)
    table(res)
    plot(res, png)
    if not plot_timeline(res, timeline_png(png)):
        print("No memory timelines in %s (results from before they were "
              "recorded): no timeline plot." % results)
    print("advise s: wall time of the slowest instance's advise calls (all "
          "instances start together and share the guest's CPUs); KSM wait: "
          "seconds after all were ready until KSM reached %.0f%% of UPM's "
          "saving." % (100 * res["ksm_target"]))
    print("advise cpu s: CPU time of the advise calls, all instances (UPM "
          "merges in madvise); adv % of start: mean advise wall time over "
          "mean time from an instance's start to ready; CPU s/GiB saved: "
          "advise CPU (UPM) or ksmd CPU (KSM) per GiB saved against no "
          "dedup, '-' under 1% saved.")
    upms = [p for p in res["points"] if p["mode"] == "upm"]
    if upms:
        p = max(upms, key=lambda p: p["instances"])
        sp = p["saving_percent"]
        verdict = "met" if sp is not None and sp >= 60 else "MISSED"
        if p["instances"] < 16:
            verdict = "not measured (the target is for 16 instances)"
        elif sp is None:
            verdict = "not measured (no point without dedup)"
        print("Target (>= 60%% less memory than no dedup at %d instances "
              "with UPM): %s, measured %s%%" % (p["instances"], verdict,
                                                fmt(sp)))
    else:
        print("Target (>= 60% less memory than no dedup at 16 instances "
              "with UPM): not measured (no UPM point)")
    ksm = sorted({p["instances"] for p in res["points"] if p["mode"] == "ksm"})
    print("KSM at defaults ran for %s instances only, each point capped at "
          "%.0f s after the instances were ready; KSM modes stop waiting when "
          "they reach %.0f%% of UPM's saving." % (
              ",".join(map(str, ksm)) or "no", res["ksm_cap_s"],
              100 * res["ksm_target"]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
