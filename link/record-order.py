#!/usr/bin/env python3
"""Record link/perstack-run.order: the functions one `perstack run` of experts/fanout executes.

    python3 link/record-order.py target/release/perstack link/perstack-run.order

Runs the binary once (in a fresh temporary directory holding a copy of experts/fanout) under
ptrace with a one-shot breakpoint (int3) at the entry of every function symbol of `.text`; each
hit is recorded, the original byte put back and the thread resumed. Writes the mangled names in
first-call order, one a line; build.rs hands the file to the linker (--symbol-ordering-file),
which places those functions first and together. Linux x86_64 only; needs ptrace (root or
kernel.yama.ptrace_scope 0 for a child, which is the default) and binutils (nm, readelf).
Record it on the binary `cargo build --release --locked` builds (the binaries alone): symbol
names carry a hash of their crate's metadata, which covers the crate's dependencies and their
features, so the same source built together with the examples or benches (dev-dependencies
unify other features) has other names. Re-record after dependency or feature changes and after
changes that move the run's code; a stale file only costs layout (`link/measure-run.py` says
how much of the list the binary has).
"""
import ctypes, os, sys, re, subprocess, shutil, tempfile, struct, signal

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
TRACEME, CONT, GETREGS, SETREGS, SETOPTIONS, GETEVENTMSG = 0, 7, 12, 13, 0x4200, 0x4201
O_TRACECLONE, O_TRACEFORK, O_TRACEVFORK, O_TRACEEXEC = 0x8, 0x2, 0x4, 0x10
WALL = 0x40000000


class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
        "fs_base gs_base ds es fs gs").split()]


def text_symbols(bin_):
    lo = hi = None
    for l in subprocess.run(["readelf", "-SW", bin_], capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+\.text\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", l)
        if m:
            lo = int(m.group(1), 16); hi = lo + int(m.group(2), 16)
    syms = {}
    out = subprocess.run(["nm", "--defined-only", "-S", bin_], capture_output=True, text=True).stdout
    for l in out.splitlines():
        p = l.split()
        if len(p) != 4 or p[2] not in "tTwW":
            continue
        a = int(p[0], 16)
        if lo <= a < hi and int(p[1], 16) > 0:
            syms.setdefault(a, []).append(p[3])
    return syms


def main():
    bin_, out_path = os.path.abspath(sys.argv[1]), sys.argv[2]
    syms = text_symbols(bin_)
    d = tempfile.mkdtemp(prefix="perstack-order-")
    shutil.copytree(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experts", "fanout"), os.path.join(d, "fanout"))
    args = sys.argv[3:] or ["run", "--config", "fanout/perstack.toml", "coordinator", "hello"]
    pid = os.fork()
    if pid == 0:
        os.chdir(d)
        fd = os.open(os.path.join(d, "out.jsonl"), os.O_WRONLY | os.O_CREAT)
        os.dup2(fd, 1)
        libc.ptrace(TRACEME, 0, None, None)
        os.execv(bin_, [bin_] + args)
    os.waitpid(pid, 0)
    base = None
    for l in open(f"/proc/{pid}/maps"):
        p = l.split()
        if len(p) > 5 and p[5] == bin_ and int(p[2], 16) == 0:
            base = int(p[0].split("-")[0], 16)
            break
    mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)
    orig = {}
    for a in syms:
        va = base + a
        orig[va] = os.pread(mem, 1, va)
        os.pwrite(mem, b"\xcc", va)
    os.close(mem)
    libc.ptrace(SETOPTIONS, pid, None, ctypes.c_void_p(O_TRACECLONE | O_TRACEFORK | O_TRACEVFORK))
    libc.ptrace(CONT, pid, None, None)
    hits = []
    seen = {}  # (mm owner pid, addr)
    mems = {}
    live = {pid}
    tgid = {pid: pid}
    while live:
        try:
            tid, st = os.waitpid(-1, WALL)
        except ChildProcessError:
            break
        if os.WIFEXITED(st) or os.WIFSIGNALED(st):
            live.discard(tid)
            continue
        if not os.WIFSTOPPED(st):
            continue
        live.add(tid)
        sig = os.WSTOPSIG(st)
        ev = st >> 16
        if sig == signal.SIGTRAP and ev:
            libc.ptrace(CONT, tid, None, None)
            continue
        if sig == signal.SIGTRAP:
            r = Regs()
            libc.ptrace(GETREGS, tid, None, ctypes.byref(r))
            va = r.rip - 1
            if va in orig:
                f = os.open(f"/proc/{tid}/mem", os.O_RDWR)
                cur = os.pread(f, 1, va)
                if cur == b"\xcc":
                    os.pwrite(f, orig[va], va)
                os.close(f)
                r.rip = va
                libc.ptrace(SETREGS, tid, None, ctypes.byref(r))
                if va not in seen:
                    seen[va] = True
                    hits.append(va - base)
                libc.ptrace(CONT, tid, None, None)
                continue
            libc.ptrace(CONT, tid, None, ctypes.c_void_p(sig))
            continue
        if sig == signal.SIGSTOP:
            libc.ptrace(CONT, tid, None, None)
            continue
        libc.ptrace(CONT, tid, None, ctypes.c_void_p(sig))
    lines = open(os.path.join(d, "out.jsonl")).read().count("\n")
    shutil.rmtree(d)
    with open(out_path, "w") as o:
        for a in hits:
            for n in syms[a]:
                o.write(n + "\n")
    size = 0
    sizes = {}
    for l in subprocess.run(["nm", "--defined-only", "-S", bin_], capture_output=True, text=True).stdout.splitlines():
        p = l.split()
        if len(p) == 4:
            sizes[int(p[0], 16)] = int(p[1], 16)
    size = sum(sizes.get(a, 0) for a in hits)
    print(f"{len(hits)} of {len(syms)} functions executed, {size / 1024:.0f} KiB of code; output lines {lines}")


main()
