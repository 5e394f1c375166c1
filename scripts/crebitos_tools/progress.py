"""A line every few seconds while a long run goes on: how long it has run, the request rate
over the last interval, the requests and errors so far, the p99 so far and the phase.

`poll` returns the requests finished since its last call as (phase, latency_ms, ok) triples
(phase None: unchanged; a run may also set .phase itself). The load test polls the records k6
appends to records.log (tail_records); the fault tests poll their workload's answers.
"""
import bisect
import sys
import threading
import time

from .score import percentile


class Progress(threading.Thread):
    def __init__(self, poll, every=5.0, label="progress", out=sys.stderr):
        super().__init__(daemon=True)
        self.poll, self.every, self.label, self.out = poll, every, label, out
        self.stop_evt, self.t0 = threading.Event(), time.monotonic()
        self.latencies, self.errors, self.phase = [], 0, "starting"  # latencies sorted, for the p99

    def tick(self):
        new = self.poll()
        for phase, ms, ok in new:
            self.phase = phase or self.phase
            bisect.insort(self.latencies, ms)
            self.errors += not ok
        p99 = percentile(self.latencies, 99)
        self.out.write("%s: %5.0f s  %7.1f req/s  %7d requests  %5d errors  p99 %-9s  phase %s\n" % (
            self.label, time.monotonic() - self.t0, len(new) / self.every, len(self.latencies), self.errors,
            "-" if p99 is None else "%.1f ms" % p99, self.phase))
        self.out.flush()

    def run(self):
        while not self.stop_evt.wait(self.every):
            self.tick()

    def stop(self):
        self.stop_evt.set()
        self.join(2)


def tail_records(path, parse):
    """A poll over a file another process appends to: `parse` of each complete new line, None dropped."""
    state = {"pos": 0, "partial": ""}

    def poll():
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(state["pos"])
                chunk, state["pos"] = fh.read(), fh.tell()
        except FileNotFoundError:
            return []
        *lines, state["partial"] = (state["partial"] + chunk).split("\n")
        return [r for r in map(parse, lines) if r is not None]
    return poll
