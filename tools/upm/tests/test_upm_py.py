#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of tools/upm/python/upm.py and upmctl in a UPM kernel, as TAP.

A twin process and this one fill private anonymous memory with the same
content and call upm.advise_self(); the pages must end up on the same frame
(pagemap) and be KSM pages (kpageflags). upmctl's tables and its --json
output must hold what sysfs and ksm_stat hold; upmctl advise --cgroup must
merge the processes of a cgroup; a fake UPM_ROOT must give the "no UPM"
error (exit status 3). Uses the installed upm module, else the source
tree's. The tests of upmctl's usage also run on a kernel without UPM.
"""
import ctypes
import errno
import json
import mmap
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
try:
    import upm
except ImportError:     # not installed: the module of this source tree
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    import upm
# Child processes import the very module this test imported
UPM_DIR = os.path.dirname(os.path.abspath(upm.__file__))

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
NO_UPM_OK = set()      # tests that run on a kernel without UPM too


def test(fn):
    results.append(fn)
    return fn


def test_without_upm(fn):
    NO_UPM_OK.add(fn)
    return test(fn)


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
    t = subprocess.Popen([sys.executable, "-c", TWIN, UPM_DIR, str(seed)],
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
    # The second twin's advice makes the first's pages KSM pages
    t2, _ = start_twin(99)
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
        for p in (t, t2):
            p.kill()
            p.wait()


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
            % UPM_DIR)
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
    # exec --domain: the same as run, the command's own exit status
    r = subprocess.run([sys.executable, UPMCTL, "exec", "--domain", "78",
                        "--", sys.executable, "-c", code.replace(
                            "sys.stdin.read()", "sys.exit(5)")],
                       capture_output=True, text=True)
    assert r.returncode == 5 and r.stdout.strip() == "78", r
    r = upmctl("exec", "--domain", "78", "--", "/nonexistent/cmd")
    assert r.returncode == 127 and "cannot execute" in r.stderr, r
    # Joining a domain needs CAP_SYS_ADMIN: nobody (65534) gets EPERM
    r = subprocess.run([sys.executable, "-c",
                        "import os, sys; sys.path.insert(0, %r); import upm\n"
                        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                        "try:\n upm.set_domain(5)\nexcept PermissionError:\n"
                        " print('EPERM', upm.get_domain())\n"
                        % UPM_DIR],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "EPERM 0", (r.stdout, r.stderr)


@test
def no_upm_root_is_an_error():
    with tempfile.TemporaryDirectory() as fake:
        env = dict(os.environ, UPM_ROOT=fake)
        for args in (["status"], ["--json", "status"],
                     ["advise", str(os.getpid())]):
            r = upmctl(*args, env=env)
            assert r.returncode == 3 and "kernel has no UPM" in r.stderr, r
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


@test_without_upm
def upmctl_usage_and_help():
    """--help exits 0 and lists the exit codes; bad usage exits 2."""
    for args in (["--help"], ["-h"], ["status", "--help"], ["ps", "--help"],
                 ["show", "--help"], ["advise", "--help"],
                 ["domain", "--help"], ["run", "--help"],
                 ["exec", "--help"]):
        r = upmctl(*args)
        assert r.returncode == 0, (args, r.returncode, r.stderr)
        assert "usage: upmctl" in r.stdout, (args, r.stdout)
    r = upmctl("--help")
    for want in ("Exit status", "--json", "advise",
                 "3  the kernel has no UPM"):
        assert want in r.stdout, (want, r.stdout)
    assert "--cgroup PATH" in upmctl("advise", "--help").stdout
    for args in (["show"], ["show", "x"], ["show", "-5"], ["advise"],
                 ["advise", "1", "--cgroup", "/nonexistent"], ["run", "5"],
                 ["run", "x", "true"], ["frobnicate"], ["status", "extra"],
                 ["run", "2147483648", "true"], ["exec", "true"],
                 ["exec", "--domain", "5"], ["exec", "--domain", "5", "--"]):
        r = upmctl(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert "usage:" in r.stderr, (args, r.stderr)
    if not upm.available():
        r = upmctl("status")
        assert r.returncode == 3 and "kernel has no UPM" in r.stderr, r


@test_without_upm
def advise_pid_never_advises_a_reused_pid():
    """The pidfd is opened before the maps are read and checked after."""
    with tempfile.TemporaryDirectory() as fake:
        os.makedirs(os.path.join(fake, "sys/kernel/mm/upm"))
        os.environ["UPM_ROOT"] = fake   # available(), whatever the kernel
        gone = subprocess.Popen(["sleep", "60"])
        other = subprocess.Popen(["sleep", "60"])
        orig = upm.anon_ranges
        seen = []

        def reused(pid):
            # the process exits and the pid names another one: its maps
            gone.kill()
            gone.wait()
            seen.append(pid)
            return orig(other.pid)
        upm.anon_ranges = reused
        try:
            upm.advise_pid(gone.pid)
        except ProcessLookupError:
            pass
        else:
            raise AssertionError("advised a process that had exited")
        finally:
            upm.anon_ranges = orig
            other.kill()
            other.wait()
        assert seen == [gone.pid], seen
        try:
            upm.advise_pid(gone.pid)    # reaped: no pidfd at all
        except ProcessLookupError:
            pass
        else:
            raise AssertionError("advised a pid that does not exist")
        finally:
            del os.environ["UPM_ROOT"]


def upmctl_json(*args):
    r = upmctl("--json", *args)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    return json.loads(r.stdout)


@test
def upmctl_json_output():
    """--json output parses and holds what the module reads."""
    g = upm.read_global()
    for js in (upmctl_json("status"), json.loads(upmctl("status",
                                                        "--json").stdout)):
        assert set(js) == {"upm", "ksm"}, js.keys()
        assert set(js["upm"]) == set(g["upm"]), (js["upm"], g["upm"])
        assert set(js["ksm"]) == set(g["ksm"]), (js["ksm"], g["ksm"])
        assert js["upm"]["index_buckets"] == g["upm"]["index_buckets"]
    t, _ = start_twin(4321)
    try:
        st = upm.read_process(t.pid)
        js = upmctl_json("show", str(t.pid))
        assert js["pid"] == t.pid and js["ksm_stat"] == st, (js, st)
        assert js["comm"], js
        js = upmctl_json("ps")
        rows = {p["pid"]: p for p in js["processes"]}
        assert t.pid in rows, js
        assert rows[t.pid]["ksm_stat"] == st, (rows[t.pid], st)
        if "upm_domain" in st:
            js = upmctl_json("domain", str(t.pid))
            assert js == {"pid": t.pid, "domain": st["upm_domain"]}, js
    finally:
        t.kill()
        t.wait()


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    return None


def make_cgroup(name):
    """A new cgroup name-<pid> at the cgroup2 root; Skip if there is none."""
    root = cgroup2_root()
    if os.geteuid() != 0 or not root:
        raise Skip("needs root and a cgroup2 file system")
    cg = os.path.join(root, "%s-%d" % (name, os.getpid()))
    try:
        os.mkdir(cg)
    except OSError as e:
        raise Skip("cannot create %s: %s" % (cg, e.strerror))
    return cg


VICTIM = ("import mmap,random,ctypes,sys\n"
          "m=mmap.mmap(-1,%d,flags=mmap.MAP_PRIVATE)\n"
          "m[:]=random.Random(int(sys.argv[1])).randbytes(len(m))\n"
          "print(ctypes.addressof(ctypes.c_char.from_buffer(m)),flush=True)\n"
          "sys.stdin.read()\n" % (NPAGES * PAGE))


@test
def upmctl_advise_cgroup():
    """advise --cgroup advises every process of the cgroup (root only)."""
    if not os.path.exists("/sys/kernel/mm/upm/merge_policy"):
        raise Skip("kernel without remote advice")
    cg = make_cgroup("upm-test")
    procs = []
    try:
        t, taddr = start_twin(2468)     # enters its pages (stable)
        procs.append(t)
        victims = []
        for _ in range(2):
            v = subprocess.Popen([sys.executable, "-c", VICTIM, "2468"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(v)
            victims.append((v, int(v.stdout.readline())))
        for v, _ in victims:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write("%d\n" % v.pid)
        js = upmctl_json("advise", "--cgroup", cg)
        assert js["cgroup"] == cg, js
        assert sorted(a["pid"] for a in js["advised"]) == \
            sorted(v.pid for v, _ in victims), js
        assert js["vanished"] == [] and js["failed"] == [], js
        for a in js["advised"]:
            assert a["ranges"] >= 1 and a["bytes"] >= NPAGES * PAGE, a
        for v, vaddr in victims:
            shared = sum(pfn(v.pid, vaddr + i * PAGE) ==
                         pfn(t.pid, taddr + i * PAGE) for i in range(NPAGES))
            assert shared == NPAGES, "pid %d: %d shared" % (v.pid, shared)
        r = upmctl("advise", "--cgroup", cg)
        assert r.returncode == 0, r.stderr
        assert "2 processes advised, 0 exited, 0 failed" in r.stdout, r.stdout
    finally:
        for p in procs:
            p.kill()
            p.wait()
        upm.remove_cgroup(cg)


@test
def counters_are_the_directory():
    """read_global() lists every integer file of /sys/kernel/mm/upm."""
    g = upm.read_global()
    d = "/sys/kernel/mm/upm"
    files = {}
    for n in os.listdir(d):
        try:
            with open(os.path.join(d, n)) as f:
                files[n] = int(f.read())
        except (OSError, ValueError):
            pass    # merge_policy is a word
    assert set(g["upm"]) == set(files), (sorted(g["upm"]), sorted(files))
    for n in ("pages_copied", "pages_candidate", "candidates_dropped"):
        if n in files:
            assert g["upm"][n] >= 0, n
    # Counters no one else moves read the same twice
    assert g["upm"]["index_buckets"] == files["index_buckets"] > 0
    assert upm.read_value(d + "/index_buckets") == files["index_buckets"]
    assert upm.read_counters(d)["index_buckets"] == files["index_buckets"]
    assert "merge_policy" not in g["upm"]
    assert g["ksm"]["run"] == upm.read_value("/sys/kernel/mm/ksm/run")


def libupm():
    """libupm.so of the build (UPM_LIBUPM, else build/tools), or None."""
    path = os.environ.get("UPM_LIBUPM") or os.path.join(
        HERE, "..", "..", "..", "build", "tools", "libupm.so")
    if not os.path.exists(path):
        return None
    lib = ctypes.CDLL(os.path.abspath(path))

    class Counter(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_long)]

    class Counters(ctypes.Structure):
        _fields_ = [("nr", ctypes.c_size_t),
                    ("c", ctypes.POINTER(Counter))]
    lib.Counters = Counters
    lib.upm_read_counters.argtypes = [ctypes.c_char_p,
                                      ctypes.POINTER(Counters)]
    lib.upm_counters_free.argtypes = [ctypes.POINTER(Counters)]
    return lib


def c_counters(lib, d):
    c = lib.Counters()
    r = lib.upm_read_counters(d.encode(), ctypes.byref(c))
    out = {c.c[i].name.decode(): c.c[i].value for i in range(c.nr)}
    lib.upm_counters_free(ctypes.byref(c))
    return r, out


@test_without_upm
def libupm_and_module_agree():
    """Same "available", same counters, in C (libupm.so) and Python."""
    lib = libupm()
    if lib is None:
        raise Skip("no libupm.so (scripts/build-tools.sh builds it)")
    with tempfile.TemporaryDirectory() as fake:
        os.environ["UPM_ROOT"] = fake
        try:
            assert lib.upm_available() == -errno.ENOSYS
            assert not upm.available()
            cnt = os.path.join(fake, "sys/kernel/mm/upm")
            os.makedirs(os.path.join(cnt, "subdir"))
            for name, text in (("calls", "7\n"), ("pages_copied", "0\n"),
                               ("candidates_dropped", "-2\n"),
                               ("merge_policy", "[domain] global\n"),
                               ("empty", "")):
                with open(os.path.join(cnt, name), "w") as f:
                    f.write(text)
            assert lib.upm_available() == 0
            assert upm.available()
            want = {"calls": 7, "pages_copied": 0, "candidates_dropped": -2}
            r, got = c_counters(lib, "/sys/kernel/mm/upm")
            assert r == 0 and got == want, (r, got)
            assert upm.read_counters("/sys/kernel/mm/upm") == want
            assert upm.read_global() == {"upm": want, "ksm": {}}
            r, got = c_counters(lib, "/sys/none")
            assert r == -errno.ENOENT and got == {}, (r, got)
            try:
                upm.read_counters("/sys/none")
            except FileNotFoundError:
                pass
            else:
                raise AssertionError("a missing directory read as empty")
        finally:
            del os.environ["UPM_ROOT"]
    if upm.available():     # the real directory, read by both
        d = "/sys/kernel/mm/upm"
        r, got = c_counters(lib, d)
        py = upm.read_counters(d)
        assert r == 0 and set(got) == set(py), (got, py)
        assert got["index_buckets"] == py["index_buckets"]


@test_without_upm
def remove_cgroup_kills_and_removes():
    """upm.remove_cgroup() kills what runs in the cgroup, then rmdirs it."""
    cg = make_cgroup("upm-rm-test")
    p = subprocess.Popen(["sleep", "600"])
    try:
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write("%d\n" % p.pid)
        if not os.path.exists(os.path.join(cg, "cgroup.kill")):
            p.kill()        # before Linux 5.14 the caller kills
        upm.remove_cgroup(cg)
        assert not os.path.exists(cg), cg
        assert p.wait() == -signal.SIGKILL, p.returncode
        upm.remove_cgroup(cg)       # gone already: not an error
    finally:
        p.kill()
        p.wait()
        if os.path.isdir(cg):
            os.rmdir(cg)


def main(tests=None, no_upm_ok=NO_UPM_OK):
    """Run tests (this file's by default) as TAP; 1 if one failed."""
    tests = results if tests is None else tests
    print("TAP version 13")
    print("1..%d" % len(tests))
    print("# upm module: %s" % upm.__file__)
    has_upm = upm.available()
    bad = 0
    for i, fn in enumerate(tests, 1):
        if not has_upm and fn not in no_upm_ok:
            print("ok %d %s # SKIP kernel has no UPM" % (i, fn.__name__))
            continue
        try:
            fn()
            print("ok %d %s" % (i, fn.__name__))
        except Skip as e:
            print("ok %d %s # SKIP %s" % (i, fn.__name__, e))
        except Exception as e:     # noqa: BLE001 - report every failure
            bad += 1
            print("# %s: %r" % (fn.__name__, e))
            print("not ok %d %s" % (i, fn.__name__))
    print("# Totals: pass:%d fail:%d" % (len(tests) - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
