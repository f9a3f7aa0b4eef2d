# SPDX-License-Identifier: GPL-2.0
"""User-space helpers for user-guided page merging (UPM), standard library only.

    import upm
    upm.advise_self()        # after the model is loaded: merge it now

Install with "pip install tools/upm/python" (add --no-build-isolation
offline), or put tools/upm/python on sys.path. libupm (tools/upm/upm.h)
offers the same calls in C.

Calls (each raises OSError on failure, never does nothing silently):

available()           True if the kernel has UPM: /sys/kernel/mm/upm (under
                      UPM_ROOT) is a directory. Cheap, calls nothing; the
                      same test as upm_available() in libupm (upm.h).
advise(addr, length)  madvise(addr, length, MADV_UPM_MERGEABLE).
advise_self()         advise every private anonymous writable mapping of
                      this process (heap, anonymous mmaps such as numpy
                      arrays); returns a dict (ranges, bytes, skipped, seconds).
                      advise_self(ksm=True) gives them MADV_MERGEABLE instead.
advise_pid(pid)       the same for another process, through os.pidfd_open()
                      and process_madvise(); needs CAP_SYS_NICE and ptrace
                      access. The pidfd is opened before /proc/<pid>/maps is
                      read and checked afterwards, so a reused pid is never
                      advised: ProcessLookupError if the process is gone.
anon_ranges(pid)      the (start, end) ranges advise_self/advise_pid take.
read_global()         {'upm': {...}, 'ksm': {...}}: every file holding an
                      integer in /sys/kernel/mm/{upm,ksm}, whatever the
                      kernel has; .get(name, -1) as libupm's upm_counter().
read_counters(dir)    {name: value} of every integer file of dir.
read_value(path)      one number from one file.
read_process(pid)     the numbers in /proc/<pid>/ksm_stat (KSM and UPM lines).
processes()           [(pid, comm, ksm_stat dict)] for processes with nonzero
                      KSM or UPM counts.
get_domain()          this process's explicit merge domain (0: the default).
set_domain(id)        prctl(PR_SET_UPM_DOMAIN, id): 1..INT_MAX joins a domain
                      (needs CAP_SYS_ADMIN), 0 leaves it; kept across fork
                      and exec.
remove_cgroup(path)   kill the processes of a cgroup (cgroup.kill) and
                      remove it once they are gone (Python only).

libupm has the same calls with the same names (upm_ prefix); its -errno
returns are the OSError errnos here.

Errors: UPMUnavailable (errno ENOSYS) when the kernel has no UPM (no
/sys/kernel/mm/upm, or madvise rejects the advice on a plain anonymous page);
RemoteUnsupported (errno EOPNOTSUPP, as libupm's upm_advise_pid()) when
process_madvise() does not take MADV_UPM_MERGEABLE; get_domain() and
set_domain() raise UPMUnavailable for an EINVAL when UPM is not available.
UPM_ROOT in the environment is prefixed to the /sys and /proc paths the
counters are read from (for tests).
"""
import ctypes
import errno
import os
import signal
import time

MADV_UPM_MERGEABLE = 120    # provisional value, see upm.rst
MADV_MERGEABLE = 12
SYS_PROCESS_MADVISE = 440   # the same number on every architecture but alpha
IOV_MAX = 1024
PR_SET_UPM_DOMAIN = 0x55504d53   # provisional values, see upm.rst
PR_GET_UPM_DOMAIN = 0x55504d47

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

# The messages of libupm's upm_strerror()
NO_UPM = "kernel has no UPM"
NO_REMOTE = "this kernel does not support remote UPM advice"


class UPMUnavailable(OSError):
    def __init__(self, msg=NO_UPM):
        super().__init__(errno.ENOSYS, msg)


class RemoteUnsupported(OSError):
    def __init__(self, msg=NO_REMOTE):
        super().__init__(errno.EOPNOTSUPP, msg)


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _path(p):
    return os.environ.get("UPM_ROOT", "") + p


def available():
    return os.path.isdir(_path("/sys/kernel/mm/upm"))


def _one_page(fn):
    """Call fn(addr, size) on one fresh, written private anonymous page."""
    size = os.sysconf("SC_PAGE_SIZE")
    # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    addr = _libc.mmap(None, size, 3, 0x22, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    try:
        ctypes.memset(addr, 1, 1)
        return fn(addr, size)
    finally:
        _libc.munmap(addr, size)


def _kernel_takes_advice():
    return _one_page(lambda a, s: _libc.madvise(a, s, MADV_UPM_MERGEABLE)) == 0


def advise(addr, length):
    """madvise(addr, length, MADV_UPM_MERGEABLE); raise OSError on failure."""
    if _libc.madvise(addr, length, MADV_UPM_MERGEABLE) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL and (not available() or not _kernel_takes_advice()):
        raise UPMUnavailable()
    raise OSError(err, "madvise(0x%x, %d, MADV_UPM_MERGEABLE): %s"
                  % (addr, length, os.strerror(err)))


def _is_anon_writable(line):
    f = line.split(None, 5)
    if len(f) < 5:
        return False
    perms, inode = f[1], f[4]
    name = f[5].strip() if len(f) > 5 else ""
    if perms[1] != "w" or perms[3] != "p" or inode != "0":
        return False
    # [stack], [vvar], [vdso], [vsyscall] and files are never advised
    return name in ("", "[heap]") or name.startswith("[anon:")


def anon_ranges(pid="self"):
    """(start, end) of the private anonymous writable mappings of pid."""
    out = []
    try:
        f = open("/proc/%s/maps" % pid)
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, "no process %s" % pid)
    with f:
        for line in f:
            if _is_anon_writable(line):
                a, b = line.split(None, 1)[0].split("-")
                out.append((int(a, 16), int(b, 16)))
    return out


def _ksm_advise(addr, length):
    if _libc.madvise(addr, length, MADV_MERGEABLE):
        err = ctypes.get_errno()
        raise OSError(err, "madvise(MADV_MERGEABLE): %s" % os.strerror(err))


def advise_self(ksm=False):
    """Advise every private anonymous writable mapping of this process.

    With ksm=True, give the same ranges MADV_MERGEABLE instead (ksmd merges
    them later): for comparisons with KSM.
    """
    if not ksm and not available():
        raise UPMUnavailable()
    res = {"ranges": 0, "bytes": 0, "skipped": 0, "seconds": 0.0}
    for a, b in anon_ranges():
        t = time.monotonic()
        try:
            (_ksm_advise if ksm else advise)(a, b - a)
        except OSError as e:
            if e.errno != errno.ENOMEM:     # ENOMEM: unmapped meanwhile
                raise
            res["skipped"] += 1
            continue
        finally:
            res["seconds"] += time.monotonic() - t
        res["ranges"] += 1
        res["bytes"] += b - a
    return res


def _process_madvise(pidfd, ranges, advice):
    iov = (_Iovec * len(ranges))(*[_Iovec(a, b - a) for a, b in ranges])
    r = _libc.syscall(SYS_PROCESS_MADVISE, pidfd, iov, len(ranges), advice, 0)
    if r < 0:
        return -ctypes.get_errno()
    return r


def _remote_supported():
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    try:
        return _one_page(lambda a, s: _process_madvise(
            fd, [(a, a + s)], MADV_UPM_MERGEABLE)) >= 0
    finally:
        os.close(fd)


def _pidfd_alive(pidfd):
    """False once the process of pidfd has exited and been reaped."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass    # there, only not ours to signal
    return True


def advise_pid(pid):
    """Advise pid's private anonymous writable mappings by process_madvise().

    Raises ProcessLookupError (ESRCH) if the process does not exist or
    exits before it is advised.
    """
    if not available():
        raise UPMUnavailable()
    pid = int(pid)
    # The pidfd first, then the maps, then a check that the pidfd's process
    # still lives: the maps read are then that process's, not those of
    # another one that was given the same pid meanwhile.
    try:
        fd = os.pidfd_open(pid)
    except OSError as e:
        raise OSError(e.errno, "pidfd_open(%d): %s"
                      % (pid, os.strerror(e.errno))) from None
    res = {"ranges": 0, "bytes": 0, "skipped": 0, "seconds": 0.0}
    try:
        ranges = anon_ranges(pid)
        if not _pidfd_alive(fd):
            raise ProcessLookupError(errno.ESRCH, "process %d exited" % pid)
        for i in range(0, len(ranges), IOV_MAX):
            chunk = ranges[i:i + IOV_MAX]
            t = time.monotonic()
            r = _process_madvise(fd, chunk, MADV_UPM_MERGEABLE)
            res["seconds"] += time.monotonic() - t
            if r == -errno.EINVAL and not _remote_supported():
                raise RemoteUnsupported()
            if r < 0:
                raise OSError(-r, "process_madvise(pid %d): %s"
                              % (pid, os.strerror(-r)))
            res["ranges"] += len(chunk)
            res["bytes"] += r
    finally:
        os.close(fd)
    return res


def read_value(path):
    """The number in file path (under UPM_ROOT), as upm_read_value()."""
    with open(_path(path)) as f:
        try:
            return int(f.read().split()[0])
        except (ValueError, IndexError):
            raise OSError(errno.EIO, "%s holds no number" % path) from None


def read_counters(d):
    """{name: value} of every file of directory d holding an integer.

    d is under UPM_ROOT, e.g. "/sys/kernel/mm/upm". Write-only files,
    words ("[domain] global") and directories are left out. Raises
    FileNotFoundError if d does not exist, as upm_read_counters().
    """
    out = {}
    for n in sorted(os.listdir(_path(d))):
        try:
            out[n] = read_value(os.path.join(d, n))
        except OSError:
            pass        # write-only, non-numeric or a directory
    return out


def read_global():
    """Every integer file of /sys/kernel/mm/upm and /sys/kernel/mm/ksm.

    {"upm": {...}, "ksm": {...}}: whatever counters the running kernel has
    (a kernel without KSM has no "ksm" counters). UPMUnavailable without
    /sys/kernel/mm/upm.
    """
    try:
        upm = read_counters("/sys/kernel/mm/upm")
    except FileNotFoundError:
        raise UPMUnavailable() from None
    try:
        ksm = read_counters("/sys/kernel/mm/ksm")
    except FileNotFoundError:
        ksm = {}
    return {"upm": upm, "ksm": ksm}


def read_process(pid):
    """{key: number} of /proc/<pid>/ksm_stat (upm_* lines where UPM is)."""
    out = {}
    try:
        with open(_path("/proc/%s/ksm_stat" % pid)) as f:
            for line in f:
                k, _, v = line.partition(" ")
                try:
                    out[k] = int(v)
                except ValueError:
                    pass    # "ksm_mergeable: yes" and the like
    except FileNotFoundError:
        if os.path.isdir(_path("/proc/%s" % pid)):
            raise OSError(errno.ENOSYS,
                          "kernel has no /proc/<pid>/ksm_stat (no KSM)")
        raise ProcessLookupError(errno.ESRCH, "no process %s" % pid)
    return out


def processes():
    """[(pid, comm, ksm_stat)] of every process with a nonzero count."""
    out = []
    for d in os.listdir(_path("/proc")):
        if not d.isdigit():
            continue
        try:
            st = read_process(int(d))
            with open(_path("/proc/%s/comm" % d)) as f:
                comm = f.read().strip()
        except OSError:
            continue    # gone, or not ours to read
        if any(v for k, v in st.items() if k != "ksm_process_profit"):
            out.append((int(d), comm, st))
    return sorted(out)


def _prctl(option, arg2):
    r = _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                    ctypes.c_ulong(0), ctypes.c_ulong(0))
    if r < 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL and not available():
            raise UPMUnavailable()
        raise OSError(err, os.strerror(err))
    return r


def get_domain():
    """This process's explicit merge domain, 0 if it has none."""
    return _prctl(PR_GET_UPM_DOMAIN, 0)


def set_domain(domain):
    """Join merge domain 1..INT_MAX (CAP_SYS_ADMIN), or leave it with 0."""
    _prctl(PR_SET_UPM_DOMAIN, int(domain))


def remove_cgroup(path, timeout=10.0):
    """Kill every process of cgroup path and remove the cgroup.

    Writes 1 to path/cgroup.kill (where the kernel has it), then retries
    rmdir(), which fails with EBUSY until the killed processes have
    exited, until timeout seconds have passed; then raises that OSError.
    A cgroup that does not exist is not an error.
    """
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except FileNotFoundError:
        if not os.path.isdir(path):
            return
    except OSError:
        pass    # no cgroup.kill (before Linux 5.14): killed by the caller
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
