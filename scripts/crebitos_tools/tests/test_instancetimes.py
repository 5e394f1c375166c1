"""Tests of the instances' own times (instancetimes.py): its reading of /metrics, against lines
of an instance's /metrics read on this machine after a load run; the difference over a run;
the bounds a histogram gives; and the summary line."""
import math
import unittest

from crebitos_tools import instancetimes, report

# api01's statement histogram after the half-length profile, 2026-12-03 19:14 UTC (buckets in
# seconds, cumulative), with a line of another metric and a route the summary leaves out.
AFTER = """# TYPE crebitos_http_request_duration_seconds histogram
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.0001"} 8
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.00025"} 58
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.0005"} 422
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.001"} 558
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.002"} 577
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.005"} 580
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.01"} 580
crebitos_http_request_duration_seconds_bucket{route="extrato",le="+Inf"} 580
crebitos_http_request_duration_seconds_sum{route="extrato"} 0.265584264
crebitos_http_request_duration_seconds_count{route="extrato"} 580
crebitos_http_request_duration_seconds_bucket{route="health",le="0.0001"} 1
crebitos_http_request_duration_seconds_bucket{route="health",le="+Inf"} 1
crebitos_commit_batch_size_bucket{le="1.0"} 14000
"""
# The same instance before the run: the start-up checks' statements.
BEFORE = """crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.0001"} 0
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.00025"} 0
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.0005"} 2
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.001"} 2
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.002"} 3
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.005"} 3
crebitos_http_request_duration_seconds_bucket{route="extrato",le="0.01"} 3
crebitos_http_request_duration_seconds_bucket{route="extrato",le="+Inf"} 3
"""


# The time from nginx's stamp to the instance, for the same statements (the stamp is good to
# a millisecond, so most fall in the first buckets).
QUEUE_BEFORE = """crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.001"} 3
crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.002"} 3
crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.005"} 3
crebitos_http_request_queue_seconds_bucket{route="extrato",le="+Inf"} 3
"""
QUEUE_AFTER = """crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.001"} 560
crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.002"} 576
crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.005"} 580
crebitos_http_request_queue_seconds_bucket{route="extrato",le="+Inf"} 580
"""


class ParseTest(unittest.TestCase):
    def test_buckets_by_route_with_infinity(self):
        parsed = instancetimes.parse(AFTER)
        self.assertEqual(sorted(parsed), ["extrato", "health"])
        self.assertEqual(parsed["extrato"][0.002], 577)
        self.assertEqual(parsed["extrato"][math.inf], 580)
        self.assertEqual(len(parsed["extrato"]), 8)

    def test_the_time_from_nginx_is_a_histogram_of_its_own(self):
        parsed = instancetimes.parse(AFTER + QUEUE_AFTER)
        self.assertEqual(parsed[instancetimes.FROM_NGINX + "extrato"][0.002], 576)
        self.assertEqual(parsed["extrato"][0.002], 577)

    def test_other_metrics_and_text_are_ignored(self):
        self.assertEqual(instancetimes.parse("crebitos_commit_batch_size_bucket{le=\"1.0\"} 3\nnot found\n"), {})


class BoundTest(unittest.TestCase):
    def test_each_bound_is_the_edge_of_the_bucket_holding_that_rank(self):
        buckets = instancetimes.parse(AFTER)["extrato"]
        self.assertEqual(instancetimes.bound_ms(buckets, 0.50), 0.5)   # rank 290: 422 at 0.5 ms
        self.assertEqual(instancetimes.bound_ms(buckets, 0.99), 2.0)   # rank 575: 558 at 1 ms, 577 at 2
        self.assertEqual(instancetimes.bound_ms(buckets, 1.0), 5.0)    # all 580 by 5 ms

    def test_a_request_past_the_last_finite_bucket_is_unbounded(self):
        buckets = {0.001: 9, 0.01: 9, math.inf: 10}
        self.assertEqual(instancetimes.bound_ms(buckets, 0.9), 1.0)
        self.assertTrue(math.isinf(instancetimes.bound_ms(buckets, 1.0)))
        self.assertEqual(instancetimes.fmt_bound(math.inf), "> the last bucket")

    def test_an_empty_histogram_has_no_bound(self):
        self.assertIsNone(instancetimes.bound_ms({0.001: 0, math.inf: 0}, 0.99))
        self.assertIsNone(instancetimes.bound_ms({}, 0.99))


class ReadingTest(unittest.TestCase):
    def fake_get(self, pages):
        """/metrics answers from a list per instance: each call takes the next one."""
        def get(address, path, timeout):
            self.assertEqual(path, "/metrics")
            page = pages[address].pop(0)
            return (200, page) if page is not None else (None, "connection refused")
        return get

    def reading(self, pages, pids=None):
        """A Reading of fake instances; `pids`: the pid readings in turn (default: unchanged)."""
        readings = list(pids or [{"api01": 10, "api02": 20}] * 2)
        r = instancetimes.Reading("/nonexistent", get=self.fake_get(pages), pids=lambda: readings.pop(0))
        r.addresses = {svc: svc for svc in pages}
        return r

    def test_the_run_counts_only_what_it_added_summed_over_instances(self):
        r = self.reading({"api01": [BEFORE, AFTER], "api02": [BEFORE, AFTER]}).start()
        stored = r.stop()
        self.assertEqual(stored["statements"]["count"], 2 * (580 - 3))
        self.assertEqual(stored["statements"]["p99_le_ms"], 2.0)
        self.assertEqual(stored["statements"]["max_le_ms"], 5.0)
        self.assertNotIn("transactions", stored)

    def test_an_instance_that_did_not_answer_before_the_run_is_left_out(self):
        r = self.reading({"api01": [BEFORE, AFTER], "api02": [None, AFTER]}).start()
        self.assertEqual(r.stop()["statements"]["count"], 577)

    def test_an_instance_restarted_during_the_run_is_left_out(self):
        # Its process changed (the supervisor restarted it), though its counts grew past the old ones.
        more = AFTER.replace('} 580', '} 1580')
        r = self.reading({"api01": [BEFORE, AFTER], "api02": [BEFORE, more]},
                         pids=[{"api01": 10, "api02": 20}, {"api01": 10, "api02": 21}]).start()
        self.assertEqual(r.stop()["statements"]["count"], 577)

    def test_counts_that_went_down_mean_a_restart_even_with_no_pid_to_tell(self):
        fewer = BEFORE.replace('} 3', '} 1')
        r = self.reading({"api01": [BEFORE, AFTER], "api02": [BEFORE, fewer]}, pids=[{}, {}]).start()
        self.assertEqual(r.stop()["statements"]["count"], 577)

    def test_the_time_from_nginx_is_shown_beside_the_time_handled(self):
        stored = self.reading({"api01": [BEFORE + QUEUE_BEFORE, AFTER + QUEUE_AFTER]}).start().stop()
        self.assertEqual(stored["statements"]["from_nginx"]["count"], 577)
        self.assertEqual(instancetimes.headline(instancetimes.from_json(stored)),
                         "statements p50 <= 0.5 ms, p99 <= 2 ms, max <= 5 ms (577), from nginx p99 <= 2 ms, max <= 5 ms")

    def test_no_instance_answering_gives_nothing(self):
        self.assertIsNone(self.reading({"api01": [None, AFTER]}).start().stop())

    def test_an_unbounded_max_survives_json_and_reads_back(self):
        late = AFTER.replace('le="+Inf"} 580', 'le="+Inf"} 581')
        stored = self.reading({"api01": [BEFORE, late]}).start().stop()
        self.assertEqual(stored["statements"]["max_le_ms"], "inf")
        self.assertTrue(math.isinf(instancetimes.from_json(stored)["statements"]["max_le_ms"]))

    def test_headline_names_route_bounds_and_count(self):
        stored = self.reading({"api01": [BEFORE, AFTER]}).start().stop()
        self.assertEqual(instancetimes.headline(instancetimes.from_json(stored)),
                         "statements p50 <= 0.5 ms, p99 <= 2 ms, max <= 5 ms (577)")


class ListenAddressesTest(unittest.TestCase):
    def test_from_the_stack_record(self):
        import os
        import tempfile
        with tempfile.TemporaryDirectory() as state:
            with open(os.path.join(state, "stack.env"), "w") as fh:
                fh.write("INSTANCES='api01 api02'\nAPI01_LISTEN=unix:/s/api01.sock\nAPI02_LISTEN=127.0.0.1:8081\n")
            self.assertEqual(instancetimes.listen_addresses(state),
                             {"api01": "unix:/s/api01.sock", "api02": "127.0.0.1:8081"})
            self.assertEqual(instancetimes.listen_addresses(os.path.join(state, "none")), {})
            self.assertEqual(instancetimes.running_pids(state), {})  # no pids/ directory


class CompareRowTest(unittest.TestCase):
    def test_the_report_row_reads_the_stored_bounds_or_a_dash(self):
        row = dict(report.COMPARE)["statements inside the instances: p99 / max"]
        self.assertEqual(row({"inside": {"statements": {"p99_le_ms": 2.0, "max_le_ms": math.inf}}}),
                         "<= 2 ms / > the last bucket")
        self.assertEqual(row({"inside": {}}), "- / -")
        from_nginx = dict(report.COMPARE)["statements from nginx's stamp to the instances: p99 / max"]
        self.assertEqual(from_nginx({"inside": {"statements": {"from_nginx": {"p99_le_ms": 1.0, "max_le_ms": 5.0}}}}),
                         "<= 1 ms / <= 5 ms")
        self.assertEqual(from_nginx({"inside": {"statements": {"p99_le_ms": 2.0}}}), "- / -")


if __name__ == "__main__":
    unittest.main()
