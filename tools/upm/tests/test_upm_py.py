#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of tools/upm/python/upm.py and upmctl in a UPM kernel, as TAP.

A twin process and this one fill private anonymous memory with the same
content and call upm.advise_self(); the pages must end up on the same frame
(pagemap) and be KSM pages (kpageflags). upmctl's tables must hold what
sysfs and ksm_stat hold; a fake UPM_ROOT must give the "no UPM" error.
"""
import ctypes
import errno
import mmap
import os
import random
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import upm  # noqa: E402

UPMCTL = os.path.join(HERE, "..", "upmctl")
PAGE = os.sysconf("SC_PAGE_SIZE")
NPAGES = 256
KPF_KSM = 21

TWIN = r"""
import mmap, random, sys, ctypes
sys.path.insert(0, sys.argv[1])
import upm
m = mmap.mmap(-1, %d, flags=mmap.MAP_PRIVATE)
m[:] = random.Random(int(sys.argv[2])).randbytes(len(m))
upm.advise_self()
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
sys.stdin.read()
""" % (NPAGES * PAGE)

results = []


def test(fn):
    results.append(fn)
    return fn


class Skip(Exception):
    pass


def pfn(pid, addr):
    with open("/proc/%s/pagemap" % pid, "rb") as f:
        f.seek(addr // PAGE * 8)
        ent = struct.unpack("<Q", f.read(8))[0]
    return ent & ((1 << 55) - 1) if ent >> 63 else 0


def is_ksm(p):
    with open("/proc/kpageflags", "rb") as f:
        f.seek(p * 8)
        return bool(struct.unpack("<Q", f.read(8))[0] >> KPF_KSM & 1)


def start_twin(seed):
    t = subprocess.Popen([sys.executable, "-c", TWIN,
                          os.path.join(HERE, "..", "python"), str(seed)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = t.stdout.readline()
    if not line:
        t.kill()
        raise AssertionError("the twin failed to advise")
    return t, int(line)


def upmctl(*args, env=None):
    return subprocess.run([sys.executable, UPMCTL] + list(args), env=env,
                          capture_output=True, text=True)


def parse_table(text):
    """{section title: {name: value}} of upmctl's "name value" tables."""
    out, sec = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            sec = out.setdefault(line.split(" (")[0], {})
            continue
        m = re.match(r"\s+(\S+)\s+(-?\d+)", line)
        if m:
            sec[m.group(1)] = int(m.group(2))
    return out


@test
def advise_self_merges_with_twin():
    before = upm.read_process(os.getpid())
    g0 = upm.read_global()["upm"]
    t, taddr = start_twin(1234)
    try:
        m = mmap.mmap(-1, NPAGES * PAGE, flags=mmap.MAP_PRIVATE)
        m[:] = random.Random(1234).randbytes(len(m))
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        r = upm.advise_self()
        shared = ksm = 0
        for i in range(NPAGES):
            mine = pfn("self", addr + i * PAGE)
            shared += mine != 0 and mine == pfn(t.pid, taddr + i * PAGE)
            ksm += mine != 0 and is_ksm(mine)
    finally:
        t.kill()
        t.wait()
    after = upm.read_process(os.getpid())
    g1 = upm.read_global()["upm"]
    print("# %d ranges, %d KiB in %.3f s; %d/%d shared, %d KSM"
          % (r["ranges"], r["bytes"] >> 10, r["seconds"], shared, NPAGES, ksm))
    assert r["ranges"] >= 1 and r["bytes"] >= NPAGES * PAGE, r
    assert shared == NPAGES, "%d of %d pages shared" % (shared, NPAGES)
    assert ksm == NPAGES, "%d of %d pages are KSM pages" % (ksm, NPAGES)
    d = after["upm_merged_pages"] - before["upm_merged_pages"]
    assert d >= NPAGES, "upm_merged_pages rose by %d" % d
    assert g1["pages_merged"] - g0["pages_merged"] >= NPAGES


@test
def upmctl_status_matches_sysfs():
    r = upmctl("status")
    assert r.returncode == 0, r.stderr
    tab = parse_table(r.stdout)
    g = upm.read_global()
    assert set(tab) == {"UPM", "KSM"}, tab.keys()
    assert tab["UPM"] == g["upm"], (tab["UPM"], g["upm"])
    assert tab["KSM"] == g["ksm"], (tab["KSM"], g["ksm"])
    for name in ("calls", "pages_merged", "index_buckets"):
        with open("/sys/kernel/mm/upm/" + name) as f:
            assert tab["UPM"][name] == int(f.read()), name


@test
def upmctl_show_and_ps():
    t, _ = start_twin(99)
    try:
        st = upm.read_process(t.pid)
        r = upmctl("show", str(t.pid))
        assert r.returncode == 0, r.stderr
        tab = list(parse_table(r.stdout).values())[0]
        assert tab == st, (tab, st)
        assert st["upm_stable_pages"] + st["upm_merged_pages"] >= NPAGES, st
        r = upmctl("ps")
        assert r.returncode == 0, r.stderr
        rows = {int(l.split()[0]): l.split() for l in r.stdout.splitlines()
                if l.split() and l.split()[0].isdigit()}
        assert t.pid in rows, r.stdout
        # columns: PID COMM ksm_merging ksm_zero rmap upm_merged upm_stable
        assert int(rows[t.pid][6]) == st["upm_stable_pages"], rows[t.pid]
        assert int(rows[t.pid][5]) == st["upm_merged_pages"], rows[t.pid]
    finally:
        t.kill()
        t.wait()


@test
def upmctl_advise_pid():
    """Remote advice: merges, or says clearly that the kernel lacks it."""
    t, taddr = start_twin(7)        # enters its pages (stable)
    code = ("import mmap,random,ctypes,sys\n"
            "m=mmap.mmap(-1,%d,flags=mmap.MAP_PRIVATE)\n"
            "m[:]=random.Random(7).randbytes(len(m))\n"
            "print(ctypes.addressof(ctypes.c_char.from_buffer(m)),flush=True)\n"
            "sys.stdin.read()\n" % (NPAGES * PAGE))
    v = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    try:
        vaddr = int(v.stdout.readline())
        r = upmctl("advise", str(v.pid))
        shared = sum(pfn(v.pid, vaddr + i * PAGE) ==
                     pfn(t.pid, taddr + i * PAGE) for i in range(NPAGES))
    finally:
        for p in (t, v):
            p.kill()
            p.wait()
    if r.returncode == 0:
        assert shared == NPAGES, "remote advice shared %d pages" % shared
        return
    # This patch's kernel (merge_policy exists) takes remote advice
    assert not os.path.exists("/sys/kernel/mm/upm/merge_policy"), r.stderr
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "does not support remote UPM advice" in r.stderr, r.stderr
    assert shared == 0, "failed advice still shared %d pages" % shared
    print("# remote advice not in this kernel, reported: %s" % r.stderr.strip())


@test
def upmctl_domains():
    """upmctl run puts a command in a domain; exec keeps it; domain shows it."""
    if not os.path.exists("/sys/kernel/mm/upm/merge_policy"):
        raise Skip("kernel without merge domains")
    code = ("import sys; sys.path.insert(0, %r); import upm\n"
            "print(upm.get_domain(), flush=True); sys.stdin.read()\n"
            % os.path.join(HERE, "..", "python"))
    p = subprocess.Popen([sys.executable, UPMCTL, "run", "77", sys.executable,
                          "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "77"
        r = upmctl("domain", str(p.pid))
        assert r.returncode == 0 and "merge domain 77" in r.stdout, r
    finally:
        p.kill()
        p.wait()
    r = upmctl("domain", str(os.getpid()))
    assert "merge domain 0 (default" in r.stdout, r.stdout
    # Joining a domain needs CAP_SYS_ADMIN: nobody (65534) gets EPERM
    r = subprocess.run([sys.executable, "-c",
                        "import os, sys; sys.path.insert(0, %r); import upm\n"
                        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                        "try:\n upm.set_domain(5)\nexcept PermissionError:\n"
                        " print('EPERM', upm.get_domain())\n"
                        % os.path.join(HERE, "..", "python")],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "EPERM 0", (r.stdout, r.stderr)


@test
def no_upm_root_is_an_error():
    with tempfile.TemporaryDirectory() as fake:
        env = dict(os.environ, UPM_ROOT=fake)
        r = upmctl("status", env=env)
        assert r.returncode == 1 and "kernel has no UPM" in r.stderr, r
        os.environ["UPM_ROOT"] = fake
        try:
            assert not upm.available()
            for fn in (upm.advise_self, upm.read_global):
                try:
                    fn()
                except upm.UPMUnavailable as e:
                    assert e.errno == errno.ENOSYS, e
                else:
                    raise AssertionError("%s did not fail" % fn.__name__)
            # A range the kernel rejects (shared) is ENOSYS without UPM
            m = mmap.mmap(-1, PAGE)
            m[0] = 1
            a = ctypes.addressof(ctypes.c_char.from_buffer(m))
            try:
                upm.advise(a, PAGE)
            except upm.UPMUnavailable:
                pass
            else:
                raise AssertionError("advise on a fake no-UPM root succeeded")
        finally:
            del os.environ["UPM_ROOT"]
    # With the real root, the same shared range is a plain EINVAL
    try:
        upm.advise(a, PAGE)
    except upm.UPMUnavailable:
        raise AssertionError("EINVAL for a shared range reported as no UPM")
    except OSError as e:
        assert e.errno == errno.EINVAL, e
    else:
        raise AssertionError("advice on a shared mapping succeeded")


def main():
    print("TAP version 13")
    print("1..%d" % len(results))
    if not upm.available():
        for i, fn in enumerate(results, 1):
            print("ok %d %s # SKIP kernel has no UPM" % (i, fn.__name__))
        return 0
    bad = 0
    for i, fn in enumerate(results, 1):
        try:
            fn()
            print("ok %d %s" % (i, fn.__name__))
        except Skip as e:
            print("ok %d %s # SKIP %s" % (i, fn.__name__, e))
        except Exception as e:     # noqa: BLE001 - report every failure
            bad += 1
            print("# %s: %r" % (fn.__name__, e))
            print("not ok %d %s" % (i, fn.__name__))
    print("# Totals: pass:%d fail:%d" % (len(results) - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
