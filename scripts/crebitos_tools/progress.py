"""A line every few seconds while a long run goes on: where it is (phase), how long it has
run, the request rate over the last interval, the errors so far and the p99 so far.

The run hands in a `poll` function that returns the requests finished since its last call as
(phase, latency_ms, ok) triples; Progress keeps the totals and prints. k6 writes every
request to records.log as it finishes (crebitos.js), so the load test polls that file; the
fault tests poll their workload's answers.
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
        self.stop_evt = threading.Event()
        self.t0 = time.monotonic()
        self.latencies = []  # sorted, for the running p99
        self.total = self.errors = 0
        self.phase = "starting"

    def tick(self):
        new = self.poll()
        for phase, ms, ok in new:
            self.phase = phase or self.phase  # a run may also set .phase itself
            bisect.insort(self.latencies, ms)
            self.total += 1
            self.errors += 0 if ok else 1
        p99 = percentile(self.latencies, 99)
        self.out.write("%s: %5.0f s  %7.1f req/s  %7d requests  %5d errors  p99 %-9s  phase %s\n" % (
            self.label, time.monotonic() - self.t0, len(new) / self.every, self.total, self.errors,
            "-" if p99 is None else "%.1f ms" % p99, self.phase))
        self.out.flush()

    def run(self):
        while not self.stop_evt.wait(self.every):
            self.tick()

    def stop(self):
        self.stop_evt.set()
        self.join(2)


def tail_records(path, parse):
    """A poll function over a file another process appends to: the records (as `parse` makes
    them from each complete new line) since the last call."""
    state = {"pos": 0, "partial": ""}

    def poll():
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(state["pos"])
                chunk = fh.read()
                state["pos"] = fh.tell()
        except FileNotFoundError:
            return []
        lines = (state["partial"] + chunk).split("\n")
        state["partial"] = lines.pop()
        return [r for r in map(parse, lines) if r is not None]
    return poll
