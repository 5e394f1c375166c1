"""The disk's own tail, measured beside the stack's: a thread that appends 4 KB to a file in the
database's directory and `fdatasync`s it, `rate` times a second, for as long as a run lasts.

Why: a durable write cannot be faster than its sync, and this machine's disk usually syncs in
0.3-0.5 ms and now and then takes 50 ms to over a second. A run's p99 or max is read against
what the disk did over the same seconds, not explained by "other programs" (docs/BENCHMARKS.md).
An append (not an overwrite) is what SQLite's WAL does while it grows; the probe file is cut
back every 4 MB so it never grows without bound, and removed at the end.
"""
import os
import threading
import time

from .score import latency_stats

SLOW_MS = 50.0


class DiskProbe(threading.Thread):
    def __init__(self, directory, csv_path=None, rate=50):
        super().__init__(daemon=True)
        self.path, self.csv_path, self.interval = os.path.join(directory, ".disk-probe"), csv_path, 1.0 / rate
        self.samples, self.stop_evt = [], threading.Event()  # (unix ms, sync ms)

    def run(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        block, size = b"p" * 4096, 0
        try:
            while not self.stop_evt.is_set():
                t0 = time.perf_counter()
                os.write(fd, block)
                os.fdatasync(fd)
                self.samples.append((time.time() * 1000.0, (time.perf_counter() - t0) * 1000.0))
                size += len(block)
                if size >= 4 << 20:
                    os.ftruncate(fd, 0)
                    size = 0
                self.stop_evt.wait(max(0.0, self.interval - (time.perf_counter() - t0)))
        finally:
            os.close(fd)
            os.unlink(self.path)

    def stop(self):
        """Ends the probe; returns its summary (latency_stats of the syncs, and how many took
        over SLOW_MS) and writes the samples to csv_path."""
        self.stop_evt.set()
        self.join(5)
        if self.csv_path:
            with open(self.csv_path, "w") as out:
                out.write("t_ms,sync_ms\n")
                out.writelines("%d,%.3f\n" % sample for sample in self.samples)
        stats = latency_stats([ms for _, ms in self.samples])
        stats["over_%d_ms" % SLOW_MS] = sum(ms > SLOW_MS for _, ms in self.samples)
        return stats


def start(directory, csv_path=None, rate=50):
    probe = DiskProbe(directory, csv_path, rate)
    probe.start()
    return probe
