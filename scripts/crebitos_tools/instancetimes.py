"""The instances' own time per request over a load run, from their /metrics: how long each
request took inside an instance (from the parsed request to the written answer), and how long
it took to get there from nginx (from nginx's X-Request-Start stamp to the parsed request),
beside what the client measured end to end.

Why: the client's tail includes nginx, the kernel's loopback TCP, k6 and the two cores they
share with the stack; the instance's histogram does not. A statement p99 of 6 ms at the
client with a p99 under 2 ms inside the instances says the 4 ms are outside the instance,
where a change to the instance cannot remove them.

The instances keep cumulative Prometheus histograms since they started
(`crebitos_http_request_duration_seconds`, one per route), so a run reads them before and
after and keeps the difference. A histogram gives bounds, not values: "p99 <= 2 ms" means
the 99th percentile request fell in the bucket that ends at 2 ms.
"""
import math
import re

from . import stackstate
from .processes import http_get

# The routes a load run is about, by their label on /metrics, and the words the summary uses.
ROUTES = (("extrato", "statements"), ("transacoes", "transactions"))
# crebitos_http_request_duration_seconds (handled) and crebitos_http_request_queue_seconds
# (from nginx's stamp to here; only requests that carry one).
BUCKET = re.compile(r'^crebitos_http_request_(duration|queue)_seconds_bucket\{route="([^"]+)",le="([^"]+)"\} (\d+)', re.M)
FROM_NGINX = "from nginx:"


def parse(text):
    """{histogram: {le_seconds: cumulative count}} from a /metrics text, where a histogram is
    the route's label for the time handled and FROM_NGINX + the label for the time since
    nginx's stamp; +Inf is math.inf."""
    out = {}
    for kind, route, le, count in BUCKET.findall(text):
        key = route if kind == "duration" else FROM_NGINX + route
        out.setdefault(key, {})[math.inf if le == "+Inf" else float(le)] = int(count)
    return out


def listen_addresses(state_dir):
    """{instance: its listen address} of the stack that stack-up started in state_dir."""
    env = stackstate.stack_env(state_dir)
    return {svc: env[svc.upper() + "_LISTEN"] for svc in env.get("INSTANCES", "").split()
            if env.get(svc.upper() + "_LISTEN")}


def snapshot(addresses, get=http_get):
    """{instance: parse(its /metrics)} for every instance that answered with a histogram."""
    out = {}
    for svc, address in sorted(addresses.items()):
        status, text = get(address, "/metrics", 5)
        histograms = parse(text) if status == 200 else None
        if histograms:
            out[svc] = histograms
    return out


def restarted(before, after):
    """Whether an instance's counts went down between the readings: its histograms started
    again from zero, so it was restarted during the run."""
    return any(count < before.get(route, {}).get(le, 0)
               for route, buckets in after.items() for le, count in buckets.items())


def difference(before, after, left_out=()):
    """What the run added: after minus before, summed over the instances present in both. An
    instance missing from `before` (not yet up), restarted during the run (its process changed,
    or its counts went down) or named in `left_out` is left out, since what it counted cannot
    be told apart from what came before the run."""
    added = {}
    for svc, routes in after.items():
        if svc not in before or svc in left_out or restarted(before[svc], routes):
            continue
        for route, buckets in routes.items():
            earlier = before[svc].get(route, {})
            summed = added.setdefault(route, {})
            for le, count in buckets.items():
                summed[le] = summed.get(le, 0) + count - earlier.get(le, 0)
    return added


def total(buckets):
    """How many requests a cumulative histogram counted: its +Inf bucket, or its largest one
    when +Inf is missing; 0 for none."""
    return buckets.get(math.inf, max(buckets.values(), default=0))


def bound_ms(buckets, fraction):
    """The upper edge (ms) of the bucket holding the request at `fraction` of the count, or
    None when the histogram is empty; math.inf when it lies beyond the last finite bucket."""
    count = total(buckets)
    if count <= 0:
        return None
    rank = max(1, math.ceil(fraction * count))
    return next(le * 1000 for le in sorted(buckets) if buckets[le] >= rank)


def bounds(buckets):
    """{count, p50_le_ms, p99_le_ms, max_le_ms} of a histogram, or None when it is empty."""
    if not buckets or bound_ms(buckets, 1.0) is None:
        return None
    return {"count": total(buckets), "p50_le_ms": bound_ms(buckets, 0.50),
            "p99_le_ms": bound_ms(buckets, 0.99), "max_le_ms": bound_ms(buckets, 1.0)}


def summarize(added):
    """{route word: bounds of the time handled, with "from_nginx": bounds of the time since
    nginx's stamp when requests carried one} for the routes of ROUTES."""
    out = {}
    for route, word in ROUTES:
        handled = bounds(added.get(route))
        if handled is None:
            continue
        from_nginx = bounds(added.get(FROM_NGINX + route))
        out[word] = dict(handled, from_nginx=from_nginx) if from_nginx else handled
    return out


def fmt_bound(ms):
    if ms is None:
        return "-"
    if math.isinf(ms):
        return "> the last bucket"
    return "<= %g ms" % ms


def headline(summary):
    """One line: each route's p50, p99 and max bounds and its count, then the p99 and max of
    its time from nginx when known."""
    def route(word, s):
        text = "%s p50 %s, p99 %s, max %s (%d)" % (
            word, fmt_bound(s["p50_le_ms"]), fmt_bound(s["p99_le_ms"]), fmt_bound(s["max_le_ms"]), s["count"])
        n = s.get("from_nginx")
        return text + (", from nginx p99 %s, max %s" % (fmt_bound(n["p99_le_ms"]), fmt_bound(n["max_le_ms"])) if n else "")
    return "; ".join(route(word, s) for word, s in summary.items())


def running_pids(state_dir):
    """{service: pid} of the stack in state_dir, or {} when it has no pid files (a stack
    started some other way, compose for one). Kept here rather than in stackstate.pids, whose
    callers compare pids before and after a fault and must not read a missing record as
    "no process"."""
    try:
        return stackstate.pids(state_dir)
    except OSError:
        return {}


class Reading:
    """The instances' histograms around a run: `start()` before the load, `stop()` after it.
    JSON has no infinity, so a bound beyond the last bucket is stored as the string "inf"."""

    def __init__(self, state_dir, get=http_get, pids=None):
        self.addresses, self.get, self.before = listen_addresses(state_dir), get, None
        self.pids = pids or (lambda: running_pids(state_dir))
        self.pids_before = {}

    def start(self):
        self.before, self.pids_before = snapshot(self.addresses, self.get), self.pids()
        return self

    def stop(self):
        if not self.before:
            return None
        pids_after = self.pids()
        replaced = {svc for svc, pid in self.pids_before.items() if pids_after.get(svc) != pid}
        summary = summarize(difference(self.before, snapshot(self.addresses, self.get), replaced))
        return to_json(summary) or None


def to_json(value):
    """`value` with every infinite bound as the string "inf"."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return "inf" if isinstance(value, float) and math.isinf(value) else value


def from_json(stored):
    """The inverse of to_json, for the summary."""
    if isinstance(stored, dict):
        return {k: from_json(v) for k, v in stored.items()}
    return math.inf if stored == "inf" else stored
