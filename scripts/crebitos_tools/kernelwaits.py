"""Where the instances' threads wait in the kernel, sampled beside a run (`scripts/loadtest
--kernel-waits`): every 10 ms each thread of the API instances is read from /proc, and one found
in D state (an uninterruptible wait: the disk, mostly) is counted under its name, the system
call it is in and the innermost frame of its kernel stack.

Why: the disk probe says when the disk stalled; this says which thread waited for it, and in
what. The writer thread (`crebitos-writer`) in `fdatasync` is the durability promise at work;
an event loop (`NIO-ELT-*`) in D state is a request path waiting on the disk, which must not
happen (docs/ARCHITECTURE.md, "No disk wait on an event loop"). It costs about 3% of a core
(measured beside a running stack: 20 threads, 100 rounds a second), so it is off by default.
"""
import collections
import os
import threading
import time

INTERVAL_S = 0.01


def parse_stat(text):
    """(thread name, state letter) of a /proc/PID/task/TID/stat line. The name is between the
    first "(" and the last ")", and may itself hold spaces and parentheses."""
    opening, closing = text.index("("), text.rindex(")")
    return text[opening + 1:closing], text[closing + 2:closing + 3]


def where(stack_text):
    """(system call, innermost frame) of a /proc/PID/task/TID/stack listing, whose lines read
    "[<0>] folio_wait_bit+0x1a/0x30". The system call is the outermost `__x64_sys_*` frame
    (a page fault when there is none but the fault handler), "?" when neither is there."""
    frames = [line.split()[-1].split("+")[0] for line in stack_text.splitlines() if line.strip()]
    if not frames:
        return "?", "?"
    call = next((f[len("__x64_sys_"):] for f in frames if f.startswith("__x64_sys_")), None)
    if call is None:
        call = "page fault" if any(f in ("handle_mm_fault", "do_user_addr_fault") for f in frames) else "?"
    return call, frames[0]


class KernelWaits(threading.Thread):
    """Samples the threads of `pids()` ({service: pid}) until stop()."""

    def __init__(self, pids, interval=INTERVAL_S):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.stop_evt = threading.Event()
        self.samples = 0
        self.waits = collections.Counter()  # (service, thread, call, frame) -> samples in D
        self.longest = {}  # the same key -> longest run of consecutive D samples, in samples
        self._running = {}  # (service, tid) -> (key, consecutive samples)

    def run(self):
        threads = {}  # (service, tid) -> (pid, an open fd of its stat file)
        try:
            while not self.stop_evt.is_set():
                if self.samples % 100 == 0:  # threads and instances come and go: look again about every second
                    threads = self.open_threads(threads)
                self.samples += 1
                for (svc, tid), (pid, fd) in threads.items():
                    self.sample(svc, pid, tid, fd)
                self.stop_evt.wait(self.interval)
        finally:
            for _, fd in threads.values():
                os.close(fd)

    def open_threads(self, threads):
        """The instances' threads now, each stat file opened once and re-read with pread (an
        open, read and close per thread and sample cost 12% of a core at 200 rounds a second,
        pread 5%)."""
        now = {}
        for svc, pid in self.pids().items():
            if not svc.startswith("api"):
                continue
            try:
                tids = os.listdir("/proc/%d/task" % pid)
            except OSError:
                continue
            for tid in tids:
                key = (svc, tid)
                if key in threads and threads[key][0] == pid:
                    now[key] = threads.pop(key)
                    continue
                try:
                    now[key] = (pid, os.open("/proc/%d/task/%s/stat" % (pid, tid), os.O_RDONLY))
                except OSError:
                    pass
        for _, fd in threads.values():  # threads that ended
            os.close(fd)
        return now

    def sample(self, svc, pid, tid, fd):
        try:
            name, state = parse_stat(os.pread(fd, 1024, 0).decode("utf-8", "replace"))
            if state != "D":
                self.record(svc, tid, None)
                return
            with open("/proc/%d/task/%s/stack" % (pid, tid)) as fh:
                call, frame = where(fh.read())
        except (OSError, ValueError):
            return
        self.record(svc, tid, (svc, name, call, frame))

    def record(self, svc, tid, key):
        """One sample of one thread: `key` (service, name, call, frame) when it was in D state,
        None when not; consecutive samples of one wait make a run."""
        if key is None:
            self._running.pop((svc, tid), None)
            return
        self.waits[key] += 1
        previous, run = self._running.get((svc, tid), (None, 0))
        run = run + 1 if previous == key else 1
        self._running[(svc, tid)] = (key, run)
        self.longest[key] = max(self.longest.get(key, 0), run)

    def stop(self, text_path=None):
        """Ends the sampling; returns the summary and writes it, readable, to text_path."""
        self.stop_evt.set()
        if self.is_alive():
            self.join(5)
        ms = 1000.0 * self.interval
        waits = [{"service": svc, "thread": name, "call": call, "at": frame, "samples": n, "ms": round(n * ms, 1),
                  "longest_ms": round(self.longest[(svc, name, call, frame)] * ms, 1)}
                 for (svc, name, call, frame), n in self.waits.most_common()]
        summary = {"interval_ms": ms, "rounds": self.samples, "waits": waits}
        if text_path:
            with open(text_path, "w") as out:
                out.write("Threads of the instances found waiting in the kernel (D state), sampled every %g ms, %d rounds.\n"
                          "ms = samples x interval; longest = the longest run of consecutive samples.\n\n" % (ms, self.samples))
                out.write("%-6s %-16s %-18s %-28s %8s %8s\n" % ("svc", "thread", "system call", "innermost frame", "ms", "longest"))
                for w in waits:
                    out.write("%-6s %-16s %-18s %-28s %8.1f %8.1f\n" % (
                        w["service"], w["thread"], w["call"], w["at"], w["ms"], w["longest_ms"]))
        return summary


def headline(summary, top=3):
    """One line for a run's summary: the threads that waited longest in the kernel, in what."""
    by_thread = collections.Counter()
    calls = collections.defaultdict(collections.Counter)
    for w in summary["waits"]:
        by_thread[w["thread"]] += w["ms"]
        calls[w["thread"]][w["call"]] += w["ms"]
    if not by_thread:
        return "no thread of the instances was seen waiting in the kernel"
    return "; ".join("%s %.0f ms (mostly %s)" % (thread, ms, calls[thread].most_common(1)[0][0])
                     for thread, ms in by_thread.most_common(top))


def start(pids, interval=INTERVAL_S):
    sampler = KernelWaits(pids, interval)
    sampler.start()
    return sampler
