"""What a wake-up costs on this machine, measured beside the stack: a thread that sends one byte
through a pipe to a sleeping `cat` and waits, asleep, for it to come back, `rate` times a
second, for as long as a run lasts.

Why: at the contest's rate every request wakes a chain of sleeping threads in turn (k6, nginx,
an instance's event loop, its writer, the event loop again, nginx, k6), and on this VM what a
wake-up costs changes with the host's state: the same binary measured 421-445 us of stack CPU
per request in one window and 787-997 in another (docs/BENCHMARKS.md). Each round trip here is
two such wake-ups (`cat`, then this thread), so a run's CPU per request and its tail can be read
against what wake-ups cost over the same seconds, as the disk probe does for syncs, instead of
being put down to "the host" without a measurement. At 50 a second it costs nothing that shows.
"""
import os
import subprocess
import threading
import time

from .score import latency_stats


class WakeProbe(threading.Thread):
    def __init__(self, csv_path=None, rate=50):
        super().__init__(daemon=True)
        self.csv_path, self.interval = csv_path, 1.0 / rate
        self.samples, self.stop_evt, self.error = [], threading.Event(), None  # (unix ms, round trip us)
        self.echo = None  # the sleeping process, once started

    def run(self):
        # GNU cat writes whatever one read returned at once, so it echoes byte by byte.
        self.echo = echo = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        out, back = echo.stdin.fileno(), echo.stdout.fileno()
        try:
            while not self.stop_evt.is_set():
                t0 = time.perf_counter()
                os.write(out, b"w")
                if os.read(back, 1) != b"w":
                    raise RuntimeError("the echo process stopped answering")
                self.samples.append((time.time() * 1000.0, (time.perf_counter() - t0) * 1e6))
                self.stop_evt.wait(max(0.0, self.interval - (time.perf_counter() - t0)))
        except (OSError, RuntimeError) as error:
            self.error = str(error)
        finally:
            echo.stdin.close()
            echo.wait(5)
            echo.stdout.close()

    def stop(self):
        """Ends the probe; returns latency_stats of the round trips, in microseconds (with
        `error` when the probe broke off), and writes the samples to csv_path."""
        self.stop_evt.set()
        self.join(5)
        if self.csv_path:
            with open(self.csv_path, "w") as out:
                out.write("t_ms,round_trip_us\n")
                out.writelines("%d,%.1f\n" % sample for sample in self.samples)
        stats = latency_stats([us for _, us in self.samples])
        if self.error:
            stats["error"] = self.error
        return stats


def start(csv_path=None, rate=50):
    probe = WakeProbe(csv_path, rate)
    probe.start()
    return probe
