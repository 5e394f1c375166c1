"""Tests of the wake-up probe (wakeprobe.py) with a real echo process: it times round trips
for as long as it runs, writes them out, says when its echo stopped answering, and the
summary and the report show it."""
import os
import signal
import tempfile
import time
import unittest

from crebitos_tools import report, wakeprobe


class WakeProbeTests(unittest.TestCase):
    def test_it_times_round_trips_while_it_runs_and_writes_them_out(self):
        with tempfile.TemporaryDirectory() as directory:
            csv_path = os.path.join(directory, "wake-probe.csv")
            probe = wakeprobe.start(csv_path, rate=100)
            time.sleep(0.5)
            stats = probe.stop()
            self.assertNotIn("error", stats)
            # 100 a second for half a second, less what the machine's load takes away.
            self.assertGreaterEqual(stats["count"], 10)
            self.assertLessEqual(stats["count"], 60)
            self.assertGreater(stats["min"], 0)
            self.assertLessEqual(stats["p50"], stats["p99"])
            with open(csv_path) as written:
                lines = written.read().splitlines()
            self.assertEqual(lines[0], "t_ms,round_trip_us")
            self.assertEqual(len(lines) - 1, stats["count"])
            # The echo process is gone once the probe stopped.
            self.assertIsNotNone(probe.echo.poll())

    def test_an_echo_that_dies_is_reported_not_hidden(self):
        probe = wakeprobe.start(rate=100)
        for _ in range(200):
            if probe.samples:
                break
            time.sleep(0.01)
        probe.echo.send_signal(signal.SIGKILL)
        probe.join(5)
        stats = probe.stop()
        self.assertIn("error", stats)
        self.assertGreaterEqual(stats["count"], 1)

    def test_the_summary_and_the_report_show_it(self):
        wake = {"count": 6000, "p50": 41.2, "p99": 212.7, "max": 3055.0}
        self.assertEqual(report.wake_probe_line(wake), "  wake-ups  6000 round trips through a pipe to a sleeping "
                         "process (two wake-ups each): p50 41  p99 213  max 3055 us")
        self.assertTrue(report.wake_probe_line(dict(wake, error="the echo process stopped answering"))
                        .endswith("us; broke off: the echo process stopped answering"))
        row = dict(report.COMPARE)["wake probe: a round trip's p50 / p99 µs (two wake-ups)"]
        self.assertEqual(row({"wake": wake}), "41 / 213")
        self.assertEqual(row({"wake": {}}), "- / -")

if __name__ == "__main__":
    unittest.main()
