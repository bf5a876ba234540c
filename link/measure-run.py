#!/usr/bin/env python3
"""Measure target T1: N runs of `perstack run` of experts/fanout, each in a fresh directory.

    python3 link/measure-run.py target/release/perstack [N] [--smaps]

Each run copies experts/fanout into a new directory under /dev/shm (tmpfs, so that fsync costs
nothing) and runs `perstack run --config fanout/perstack.toml coordinator hello` there. Prints
the median wall and CPU time (wait4 rusage) of N runs (default 15), then the median peak RSS of
N more runs through /usr/bin/time (a fork of this Python process would report Python's own
resident set: the kernel keeps the larger high-water mark across exec). With --smaps, first
one run stopped at its exit (ptrace, PTRACE_O_TRACEEXIT) prints the resident set by mapping
(the binary's code, read-only data, libraries, anonymous memory); with T1_PAGEMAP=1 also the
resident runs of pages in the binary's mappings. First it says how much of
link/perstack-run.order the binary still has (a stale list costs the T1 memory). Linux only.
"""
import ctypes, os, sys, time, shutil, statistics, tempfile, signal

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_TRACEME, PTRACE_CONT, PTRACE_SETOPTIONS = 0, 7, 0x4200
PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT = 0x40, 6


def setup():
    d = tempfile.mkdtemp(prefix="t1-", dir="/dev/shm")
    shutil.copytree(os.path.join(REPO, "experts/fanout"), os.path.join(d, "fanout"))
    return d


def argv(bin_):
    return [bin_, "run", "--config", "fanout/perstack.toml", "coordinator", "hello"]


def run_once(bin_):
    d = setup()
    out = os.open(os.path.join(d, "out.jsonl"), os.O_WRONLY | os.O_CREAT)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.chdir(d)
        os.dup2(out, 1)
        os.execv(bin_, argv(bin_))
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    os.close(out)
    lines = open(os.path.join(d, "out.jsonl")).read().count("\n")
    shutil.rmtree(d)
    return wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status), lines


def rss_once(bin_):
    """Peak RSS (KiB) through /usr/bin/time: a fork of this Python process would report
    Python's own resident set (the kernel keeps the larger hiwater across exec)."""
    d = setup()
    tf = os.path.join(d, "time.txt")
    pid = os.fork()
    if pid == 0:
        os.chdir(d)
        fd = os.open(os.path.join(d, "out.jsonl"), os.O_WRONLY | os.O_CREAT)
        os.dup2(fd, 1)
        os.execv("/usr/bin/time", ["/usr/bin/time", "-f", "%M", "-o", tf] + argv(bin_))
    os.waitpid(pid, 0)
    v = int(open(tf).read().split()[-1])
    shutil.rmtree(d)
    return v


def parse_smaps(text):
    maps = []
    cur = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if "-" in parts[0] and not parts[0].endswith(":"):
            cur = {"range": parts[0], "perms": parts[1], "path": parts[5] if len(parts) > 5 else "[anon]"}
            maps.append(cur)
        elif parts[0].endswith(":") and len(parts) >= 2 and cur is not None:
            try:
                cur[parts[0][:-1]] = int(parts[1])
            except ValueError:
                pass
    return maps


def pagemap_runs(pid, smaps, bin_):
    import struct
    pm = open(f"/proc/{pid}/pagemap", "rb")
    for line in smaps.splitlines():
        parts = line.split()
        if len(parts) > 5 and "-" in parts[0] and parts[5].endswith(os.path.basename(bin_)):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            pm.seek(lo // 4096 * 8)
            raw = pm.read((hi - lo) // 4096 * 8)
            bits = [(struct.unpack_from("<Q", raw, i * 8)[0] >> 63) & 1 for i in range((hi - lo) // 4096)]
            runs = []
            i = 0
            while i < len(bits):
                if bits[i]:
                    j = i
                    while j < len(bits) and bits[j]:
                        j += 1
                    runs.append((i, j - i))
                    i = j
                else:
                    i += 1
            sizes = sorted((r[1] for r in runs), reverse=True)
            print(f"  {parts[1]} {parts[0]} pages present {sum(bits)} of {len(bits)} in {len(runs)} runs; largest runs (pages): {sizes[:12]}")
            hist = {}
            for s in sizes:
                hist[s] = hist.get(s, 0) + 1
            print("    run-length histogram:", sorted(hist.items())[:30])


def smaps_run(bin_):
    d = setup()
    out = os.open(os.path.join(d, "out.jsonl"), os.O_WRONLY | os.O_CREAT)
    pid = os.fork()
    if pid == 0:
        os.chdir(d)
        os.dup2(out, 1)
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.execv(bin_, argv(bin_))
    _, st = os.waitpid(pid, 0)  # exec SIGTRAP
    libc.ptrace(PTRACE_SETOPTIONS, pid, None, ctypes.c_void_p(PTRACE_O_TRACEEXIT))
    libc.ptrace(PTRACE_CONT, pid, None, None)
    report = None
    while True:
        _, st = os.waitpid(pid, 0)
        if os.WIFEXITED(st) or os.WIFSIGNALED(st):
            break
        sig = os.WSTOPSIG(st)
        if sig == signal.SIGTRAP and (st >> 16) == PTRACE_EVENT_EXIT:
            smaps = open(f"/proc/{pid}/smaps").read()
            if os.environ.get("T1_PAGEMAP"):
                pagemap_runs(pid, smaps, bin_)
            status = open(f"/proc/{pid}/status").read()
            report = (smaps, status)
            libc.ptrace(PTRACE_CONT, pid, None, None)
        else:
            libc.ptrace(PTRACE_CONT, pid, None, ctypes.c_void_p(sig))
    os.close(out)
    shutil.rmtree(d)
    smaps, status = report
    for l in status.splitlines():
        if l.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads")):
            print("  " + l)
    maps = parse_smaps(smaps)
    groups = {}
    for m in maps:
        p = m["path"]
        name = os.path.basename(p) if p.startswith("/") else p
        if p.startswith("/") and os.path.basename(p) == os.path.basename(bin_):
            name = "BIN " + m["perms"]
        elif p.startswith("/"):
            name = "lib " + os.path.basename(p) + " " + m["perms"]
        elif m["perms"] == "---p":
            name = "guard"
        g = groups.setdefault(name, [0, 0, 0, 0])
        g[0] += m.get("Rss", 0)
        g[1] += m.get("Pss", 0)
        g[2] += m.get("Anonymous", 0)
        g[3] += 1
    total = sum(g[0] for g in groups.values())
    print(f"  {'mapping':40s} {'Rss KiB':>8s} {'Anon':>8s} n")
    for k, g in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        if g[0]:
            print(f"  {k:40s} {g[0]:8d} {g[2]:8d} {g[3]}")
    print(f"  total Rss at exit {total} KiB = {total/1024:.2f} MiB")
    anon = [m for m in maps if m["path"] == "[anon]" and m.get("Rss", 0)]
    print("  anon mappings with Rss (size KiB, rss KiB):")
    for m in sorted(anon, key=lambda m: -m["Rss"])[:25]:
        print(f"    {m['range']} {m['perms']} size={m.get('Size')} rss={m['Rss']}")


def order_freshness(bin_):
    """How much of link/perstack-run.order names functions the binary has: symbol names carry
    hashes of their crates' metadata, so a dependency or feature change renames them and the
    list goes stale (the run's code spreads over `.text` again) without any build error."""
    import subprocess
    listed = [l.strip() for l in open(os.path.join(REPO, "link/perstack-run.order")) if l.strip()]
    out = subprocess.run(["nm", "--defined-only", bin_], capture_output=True, text=True).stdout
    have = {p[2] for p in (l.split() for l in out.splitlines()) if len(p) >= 3}
    found = sum(1 for s in listed if s in have)
    verdict = "" if found >= 0.9 * len(listed) else (
        " STALE, or the binary is not from `cargo build --release --locked` alone (a bench or"
        " example build writes its own, with other symbol hashes, to the same path): build it"
        " alone and measure again; if still stale, record it again (python3 link/record-order.py"
        " BIN link/perstack-run.order) and rebuild")
    print(f"order list: {found} of {len(listed)} functions found in the binary{verdict}")


def main():
    bin_ = os.path.abspath(sys.argv[1])
    order_freshness(bin_)
    n = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 15
    if "--smaps" in sys.argv:
        smaps_run(bin_)
        if n == 0:
            return
    print("load", open("/proc/loadavg").read().strip())
    res = [run_once(bin_) for _ in range(n)]
    walls = sorted(r[0] * 1000 for r in res)
    rss = sorted(rss_once(bin_) for _ in range(n))
    cpu = sorted(r[2] * 1000 for r in res)
    codes = {r[3] for r in res}
    lines = {r[4] for r in res}
    print(f"runs {n} exit codes {codes} lines {lines}")
    print(f"wall ms median {statistics.median(walls):.2f} min {walls[0]:.2f} max {walls[-1]:.2f}")
    print(f"cpu ms median {statistics.median(cpu):.2f}")
    print(f"peak RSS KiB median {statistics.median(rss)} min {rss[0]} max {rss[-1]} (= {statistics.median(rss)/1024:.2f} MiB)")
    print("load", open("/proc/loadavg").read().strip())


main()
