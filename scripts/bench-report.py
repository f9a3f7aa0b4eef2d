#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""bench-report.py RECORDS.jsonl RESULTS.json [key=value...]

Turn upm_bench's JSON lines into the results file (schema "upm-bench/1",
see README.md, section Benchmarks) and print the results table. The
key=value pairs describe the run and go into "run"."""
import json
import sys


def fmt(v, unit="", digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            s = "%.0f" % v
        else:
            s = "%.*g" % (digits, v)
    else:
        s = str(v)
    return s + unit


def mib(b):
    return "%d MiB" % (b // (1 << 20)) if b is not None else "-"


def describe(r):
    """One line of text for a record: (what, result, ratio)."""
    b, g = r["bench"], r.get
    sf = g("safe_frames")
    sfs = "" if sf is None else " safe_frames=%d" % sf
    if b == "time_to_savings":
        what = "%d x %s%s" % (g("instances", 0), mib(g("memory_bytes", 0) // max(g("instances", 1), 1)), sfs)
        if g("order") == "one_after_another":
            what += ", one after another"
        cpu = ""
        if g("cpu_seconds_per_gib_saved") is not None:
            cpu = ", %s CPU s/GiB saved" % fmt(g("cpu_seconds_per_gib_saved"))
        if r["mode"] == "upm" and g("order") == "one_after_another":
            res = "%s s of madvise (%sx the read passes), %s%% of ideal%s" % (
                fmt(g("seconds")), fmt(g("vs_read_pass")),
                fmt(g("percent_of_ideal"), digits=4), cpu)
        elif r["mode"] == "upm":
            res = "%s s, saved %s%% (%s%% of ideal)%s" % (
                fmt(g("seconds")), fmt(g("saving_percent")),
                fmt(g("percent_of_ideal"), digits=4), cpu)
        elif g("seconds") is None:
            res = "> %s s (cap reached), saved %s%%" % (
                fmt(g("cap_seconds")), fmt(g("saving_percent")))
        else:
            res = "%s s to 99%% of UPM's savings%s" % (fmt(g("seconds")), cpu)
        return what, res
    if b == "throughput":
        if g("skipped"):
            return "safe_frames cost", "skipped: " + g("skipped")
        what = "%s %s%s" % (g("op"), mib(g("memory_bytes")), sfs)
        if g("seconds") is None:
            return what, "> %s s (cap reached)" % fmt(g("cap_seconds"))
        res = "%s s = %s MiB/s" % (fmt(g("seconds")), fmt(g("mib_per_s")))
        if g("vs_read_pass") is not None:
            res += ", %sx the read pass" % fmt(g("vs_read_pass"))
        if g("upm_speedup") is not None:
            res += ", UPM %sx faster" % fmt(g("upm_speedup"))
        return what, res
    if b == "scaling":
        return mib(g("memory_bytes")), "%s ns/page (%sx smallest), read %s ns/page, merged %s" % (
            fmt(g("ns_per_page")), fmt(g("vs_smallest")),
            fmt(g("read_ns_per_page")), g("pages_merged"))
    if b == "content_mix":
        return "%s dups, %s" % (g("duplicates"), mib(g("memory_bytes"))), \
            "%s ns/page, merged %s, zero %s, new %s" % (
                fmt(g("ns_per_page")), g("pages_merged"), g("pages_zero"),
                g("pages_stable_new"))
    if b == "concurrency":
        res = "%s MiB/s aggregate" % fmt(g("mib_per_s"))
        if g("vs_one_adviser") is not None:
            res += " (%sx one adviser)" % fmt(g("vs_one_adviser"))
        return "%d adviser(s) x %s" % (g("instances"), mib(g("memory_bytes") // g("instances"))), res
    if b == "first_write":
        what = "%s %s" % (g("page_state"), mib(g("memory_bytes")))
        if g("ns_per_page") is None:
            return what, "skipped: " + g("skipped", "")
        res = "%s ns/page" % fmt(g("ns_per_page"))
        if g("vs_present") is not None:
            res += " (%sx a present page)" % fmt(g("vs_present"))
        if g("vs_fork_shared") is not None:
            res += " (%sx a fork-shared page)" % fmt(g("vs_fork_shared"))
        return what, res
    if b == "metadata":
        return "%d x %s, %d sharer(s)" % (
            g("instances"), mib(g("memory_bytes") // g("instances")),
            g("sharers", g("instances"))), \
            "%s B/advised page (SUnreclaim +%s KiB), index +%s/+%s, saved %s%%" % (
                fmt(g("bytes_per_advised_page")),
                g("sunreclaim_delta_bytes", 0) // 1024,
                g("index_entries_delta"), g("index_candidates_delta", "-"),
                fmt(g("saving_percent")))
    return "", json.dumps(r)


def main():
    recs, targets = [], []
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            o = json.loads(line)
            (targets if "target" in o else recs).append(o)
    run = dict(a.split("=", 1) for a in sys.argv[3:])
    doc = {"schema": "upm-bench/1", "run": run, "records": recs,
           "targets": targets}
    with open(sys.argv[2], "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    print()
    print("UPM benchmarks, %s kernel, %s, %s CPUs, %s; %s" % (
        run.get("flavour"), run.get("guest"), run.get("guest_cpus"),
        run.get("guest_mem"), run.get("date")))
    print("guest clocksource: %s; times: %s" % (
        run.get("clocksource"), run.get("timing", "wall")))
    print("host load average before/after: %s / %s (%s cores)" % (
        run.get("host_load_before"), run.get("host_load_after"),
        run.get("host_cores")))
    print()
    w = (16, 9, 30)
    line = "%-*s %-*s %-*s %s"
    print(line % (w[0], "benchmark", w[1], "mode", w[2], "case", "result"))
    print("-" * 110)
    last = None
    for r in recs:
        what, res = describe(r)
        b = r["bench"] if r["bench"] != last else ""
        last = r["bench"]
        print(line % (w[0], b, w[1], r["mode"], w[2], what, res))
    print()
    print("targets (PASS/MISS; UNDECIDED: KSM hit its time cap, so the"
          " ratio is only a lower bound)")
    print("-" * 110)
    for t in targets:
        lb = ">= " if t.get("lower_bound") else ""
        print("%-9s %-16s %-40s %s%s %s  (target %s %s)" % (
            t["verdict"], t["bench"], t["target"], lb, fmt(t["measured"]),
            t["unit"], t["op"], fmt(t["limit"])))
    print()
    if run.get("complete") != "yes":
        print("INCOMPLETE run: the benchmark program failed; see above")
    print("results (JSON, schema upm-bench/1, README.md 'Benchmarks'):")
    print(sys.argv[2])


if __name__ == "__main__":
    main()
