#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of the container recipe of Documentation/admin-guide/mm/upm.rst
("Merge domains for containers and services"), as TAP. Run as root in a
UPM kernel; scripts/guest/run-tests.sh runs it as upm_container.

Three containers, each in its own cgroup and its own PID and mount
namespace (unshare --pid --fork --mount --mount-proc), are started as
the recipe says, through upm-exec: two in merge domain A (the second one
drops to uid 65534 with setpriv after joining it, so only the domain can
put it with the first), one in domain B (root, like the first: only the
domain keeps it apart). All three hold the same pages. The platform then
advises each cgroup with "upmctl advise --cgroup". A's two containers
must end on the same frames (pagemap PFNs, KPF_KSM), B's on none of
them; the UPM counters and each process's ksm_stat must say the same.

upm-exec is taken from UPM_TOOLS (default: build/tools of this tree).
"""
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import test_upm_py as t  # noqa: E402  the module, pfn(), is_ksm(), TAP

upm = t.upm
HERE = os.path.dirname(os.path.realpath(__file__))
TOOLS = os.environ.get("UPM_TOOLS",
                       os.path.join(HERE, "..", "..", "..", "build", "tools"))
UPM_EXEC = os.path.join(TOOLS, "upm-exec")
POLICY = "/sys/kernel/mm/upm/merge_policy"
DOMAIN_A, DOMAIN_B = 1301, 1302
NOBODY = 65534
SEED = 0x5eed13
NS = ["unshare", "--pid", "--fork", "--mount", "--mount-proc",
      "--kill-child"]

tests = []
no_upm_ok = set()


def test(fn):
    tests.append(fn)
    return fn


def need_upm_exec():
    if not os.access(UPM_EXEC, os.X_OK):
        raise AssertionError("no %s: scripts/build-tools.sh builds it"
                             % UPM_EXEC)


def need_root_and_domains():
    if os.geteuid() != 0:
        raise t.Skip("not root")
    if not os.path.exists(POLICY):
        raise t.Skip("kernel without merge domains")


def run(argv, uid=None):
    """argv's exit status and output; as uid if given (setpriv)."""
    if uid is not None:
        argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid,
                "--clear-groups", "--"] + argv
    return subprocess.run(argv, capture_output=True, text=True)


def tail(r):
    return "status %d: %s" % (r.returncode, (r.stderr or r.stdout).strip())


@test
def upm_exec_usage_and_errors():
    """Usage errors exit 2, a missing command 127, EPERM 1; --help 0."""
    need_upm_exec()
    for args, code in (([], 2), (["true"], 2), (["--domain"], 2),
                       (["--domain", "x", "true"], 2),
                       (["--domain", "-1", "true"], 2),
                       (["--domain", "2147483648", "true"], 2),
                       (["--domain", "5"], 2), (["--bogus"], 2),
                       (["--help"], 0),
                       (["--domain", "0", "/nonexistent/cmd"], 127),
                       (["--domain", "0", "/"], 126)):
        r = run([UPM_EXEC] + args)
        assert r.returncode == code, (args, tail(r))
        if code == 2:
            assert "usage: upm-exec" in r.stderr, (args, r.stderr)
    r = run([UPM_EXEC, "--domain", "0", "--", "sh", "-c", "exit 7"])
    assert r.returncode == 7, tail(r)      # the command's own status
    if os.geteuid() != 0:
        return
    # Joining a domain needs CAP_SYS_ADMIN; leaving one (0) does not
    r = run([UPM_EXEC, "--domain", "9", "true"], uid=NOBODY)
    assert r.returncode == 1, tail(r)
    assert "Operation not permitted" in r.stderr, r.stderr
    r = run([UPM_EXEC, "--domain", "0", "true"], uid=NOBODY)
    assert r.returncode == 0, tail(r)


def ksm_stat_of(text):
    return {k: int(v) for k, v in
            (line.split() for line in text.splitlines()
             if len(line.split()) == 2 and line.split()[1].isdigit())}


@test
def domain_survives_exec_setpriv_and_namespaces():
    """upm-exec's domain reaches a command behind unshare and setpriv."""
    need_upm_exec()
    need_root_and_domains()
    cmd = [UPM_EXEC, "--domain", str(DOMAIN_A), "--"] + NS + [
        "setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
        "--clear-groups", "--", "cat", "/proc/self/ksm_stat",
        "/proc/self/status"]
    r = run(cmd)
    assert r.returncode == 0, tail(r)
    st = ksm_stat_of(r.stdout)
    assert st.get("upm_domain") == DOMAIN_A, r.stdout
    uid = [line for line in r.stdout.splitlines() if line.startswith("Uid:")]
    assert uid and uid[0].split()[2] == str(NOBODY), uid
    # Without upm-exec the same command is in the default domain (0)
    r = run(NS + ["cat", "/proc/self/ksm_stat"])
    assert r.returncode == 0 and ksm_stat_of(r.stdout)["upm_domain"] == 0, \
        tail(r)


class Container:
    """A process tree in cgroup cg, started through upm-exec."""

    def __init__(self, root, name, domain, uid=None):
        self.cg = os.path.join(root, "upm-container-%d-%s"
                               % (os.getpid(), name))
        os.mkdir(self.cg)
        drop = [] if uid is None else [
            "setpriv", "--reuid=%d" % uid, "--regid=%d" % uid,
            "--clear-groups", "--"]
        cmd = ([UPM_EXEC, "--domain", str(domain), "--"] + NS + drop +
               [sys.executable, "-c", t.VICTIM, str(SEED)])
        procs = os.path.join(self.cg, "cgroup.procs")

        def enter():    # what systemd or a runtime does before exec
            with open(procs, "w") as f:
                f.write("0\n")
        self.proc = None
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE,
                                         preexec_fn=enter)
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("container %s did not start "
                                     "(status %s)" % (name, self.proc.wait()))
            self.addr = int(line)
            self.pid = self.payload_pid()
        except BaseException:
            self.stop()
            raise

    def payload_pid(self):
        """The pid (here) of the process that is pid 1 in its namespace."""
        with open(os.path.join(self.cg, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split()]
        for pid in pids:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    ns = line.split()
                    if ns[0] == "NSpid:" and len(ns) > 2 and ns[-1] == "1":
                        return pid
        raise AssertionError("no namespace init in %s: %s" % (self.cg, pids))

    def pfns(self):
        return [t.pfn(self.pid, self.addr + i * t.PAGE)
                for i in range(t.NPAGES)]

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        upm.remove_cgroup(self.cg)


def advise_cgroup(c):
    r = t.upmctl("--json", "advise", "--cgroup", c.cg)
    assert r.returncode == 0, tail(r)
    js = json.loads(r.stdout)
    pids = [a["pid"] for a in js["advised"]]
    assert c.pid in pids and not js["failed"], js
    return js


@test
def containers_merge_within_their_domain_only():
    """A's two containers share every page; B shares none with them."""
    need_upm_exec()
    need_root_and_domains()
    root = t.cgroup2_root()
    if not root:
        raise t.Skip("no cgroup2 file system mounted")
    with open(POLICY) as f:
        policy = f.read().strip()
    if policy != "domain":      # it changes only with an empty index
        raise t.Skip("merge_policy is %s, not domain" % policy)
    boxes = []
    try:
        g0 = upm.read_global()["upm"]
        for name, dom, uid in (("a1", DOMAIN_A, None), ("b", DOMAIN_B, None),
                               ("a2", DOMAIN_A, NOBODY)):
            boxes.append(Container(root, name, dom, uid))
        a1, b, a2 = boxes
        for c in boxes:     # A's first, B, then A's second
            advise_cgroup(c)
        advise_cgroup(b)    # again, now that A's pages are KSM pages
        g1 = upm.read_global()["upm"]
        p1, pb, p2 = a1.pfns(), b.pfns(), a2.pfns()
        # Page flags while the pages are mapped (freed frames lose KPF_KSM)
        ksm = sum(x != 0 and t.is_ksm(x) for x in p1)
        b_ksm = sum(x != 0 and t.is_ksm(x) for x in pb)
        st = {c: upm.read_process(c.pid) for c in boxes}
        with open("/proc/%d/status" % a2.pid) as f:
            uid2 = [line.split()[2] for line in f
                    if line.startswith("Uid:")][0]
    finally:
        for c in boxes:
            c.stop()
    shared = sum(x != 0 and x == y for x, y in zip(p1, p2))
    cross = len(set(pb) & (set(p1) | set(p2)) - {0})
    merged = g1["pages_merged"] - g0["pages_merged"]
    print("# A: %d/%d pages shared (%d KSM); B: %d shared with A, %d KSM;"
          " pages_merged +%d" % (shared, t.NPAGES, ksm, cross, b_ksm, merged))
    assert uid2 == str(NOBODY), uid2
    assert st[a1]["upm_domain"] == DOMAIN_A, st[a1]
    assert st[a2]["upm_domain"] == DOMAIN_A, st[a2]
    assert st[b]["upm_domain"] == DOMAIN_B, st[b]
    assert all(p1) and all(p2) and all(pb), "a page is not present"
    assert shared == t.NPAGES, "A's containers share %d pages" % shared
    assert ksm == t.NPAGES, "%d of A's pages are KSM pages" % ksm
    assert cross == 0, "B shares %d frames with A" % cross
    assert b_ksm == 0, "%d of B's pages are KSM pages" % b_ksm
    assert merged >= t.NPAGES, "pages_merged rose by %d" % merged
    assert st[a2]["upm_merged_pages"] >= t.NPAGES, st[a2]


if __name__ == "__main__":
    sys.exit(t.main(tests, no_upm_ok))
