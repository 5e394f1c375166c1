"""Open-model load on the stack that records every request and every answer.

Each *intent* is one transaction a client wants done: a unique `descricao` (10 characters)
names it, so that the ledger audit finds its row. Two kinds of clients:

  keyed     sends `Idempotency-Key` and, after an answer that does not tell whether the
            transaction happened (no answer, connection reset, 502, 503, 504), retries the
            same request with the same key until a definitive one (200 or 422) or until its
            retry window closes;
  plain     the contest's client: no key, one attempt, whatever the answer.

Statements (GET /clientes/{id}/extrato) run beside them and are checked for saldo.total >= -limite.
"""
import asyncio
import random
import string
import time
from collections import Counter

from . import httpc

DEFINITIVE = (200, 422)
ALNUM = string.ascii_letters + string.digits


class Attempt:
    __slots__ = ("t0", "t1", "status", "error", "instance", "replayed", "saldo", "limite")

    def __init__(self, t0):
        self.t0, self.t1, self.status, self.error, self.instance = t0, None, 0, None, None
        self.replayed, self.saldo, self.limite = False, None, None

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Intent:
    __slots__ = ("n", "client", "tipo", "valor", "descricao", "key", "attempts", "t0")

    def __init__(self, n, client, tipo, valor, descricao, key, t0):
        self.n, self.client, self.tipo, self.valor = n, client, tipo, valor
        self.descricao, self.key, self.t0, self.attempts = descricao, key, t0, []

    @property
    def final(self):
        return self.attempts[-1] if self.attempts else None

    @property
    def final_status(self):
        return self.final.status if self.attempts else None

    @property
    def definitive(self):
        return self.final_status in DEFINITIVE

    def body(self):
        return '{"valor": %d, "tipo": "%s", "descricao": "%s"}' % (self.valor, self.tipo, self.descricao)

    def as_dict(self):
        return dict({k: getattr(self, k) for k in self.__slots__}, attempts=[a.as_dict() for a in self.attempts])


class Statement:
    __slots__ = ("t0", "t1", "client", "status", "error", "instance", "total", "limite")

    def __init__(self, t0, client):
        self.t0, self.t1, self.client = t0, None, client
        self.status, self.error, self.instance, self.total, self.limite = 0, None, None, None, None


class Workload:
    def __init__(self, port, rate=150.0, get_rate=15.0, keyed_share=0.8, attempt_timeout=15.0,
                 retry_window=120.0, max_inflight=3000, seed=None, run_tag=None):
        self.port, self.rate, self.get_rate, self.keyed_share = port, rate, get_rate, keyed_share
        self.attempt_timeout, self.retry_window, self.max_inflight = attempt_timeout, retry_window, max_inflight
        self.rng = random.Random(seed)
        self.run_tag = run_tag or "".join(self.rng.choice(ALNUM) for _ in range(6))
        self.intents, self.statements, self.tasks = [], [], set()
        self.skipped, self.t_start = 0, None
        self.finished = []  # (phase, ms, ok) of each answer since take_finished() last ran

    def take_finished(self):
        """The answers since the last call, for a progress line (crebitos_tools.progress)."""
        items, self.finished = self.finished, []
        return items

    def now(self):
        return time.monotonic() - self.t_start

    async def _intent(self, it):
        """One transaction, retried with its key while the answers leave it unknown."""
        headers = {"Content-Type": "application/json"}
        if it.key:
            headers["Idempotency-Key"] = it.key
        backoff = 0.1
        while True:
            a = Attempt(self.now())
            it.attempts.append(a)
            try:
                r = await httpc.request("POST", "/clientes/%d/transacoes" % it.client, it.body(), headers,
                                        port=self.port, timeout=self.attempt_timeout)
                a.status, a.instance, a.replayed = r.status, r.instance, r.header("idempotent-replayed") == "true"
                if r.status == 200:
                    j = r.json() or {}
                    a.saldo, a.limite = j.get("saldo"), j.get("limite")
            except httpc.HTTPError as e:
                a.error = e.kind
            a.t1 = self.now()
            self.finished.append((None, (a.t1 - a.t0) * 1000, a.status in DEFINITIVE))
            # A 4xx other than 422 is definitive too, and unexpected: the audit says so.
            if not it.key or (a.status and a.status < 500) or self.now() - it.t0 > self.retry_window:
                return
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, 1.0)

    async def _statement(self, st):
        try:
            r = await httpc.request("GET", "/clientes/%d/extrato" % st.client, port=self.port, timeout=self.attempt_timeout)
            st.status, st.instance = r.status, r.instance
            if r.status == 200:
                saldo = (r.json() or {}).get("saldo") or {}
                st.total, st.limite = saldo.get("total"), saldo.get("limite")
        except httpc.HTTPError as e:
            st.error = e.kind
        st.t1 = self.now()
        self.finished.append((None, (st.t1 - st.t0) * 1000, st.status == 200))

    def _room(self):
        """Whether one more arrival may start; past max_inflight it is skipped (and counted)."""
        self.skipped += len(self.tasks) >= self.max_inflight
        return len(self.tasks) < self.max_inflight

    def _spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def new_intent(self):
        n = len(self.intents)
        client, tipo, valor = self.rng.randint(1, 5), "d" if self.rng.random() < 2 / 3 else "c", self.rng.randint(1, 10000)
        # 10 characters, unique in the run: the counter in 5 base-62 digits, then 5 random.
        counter = "".join(ALNUM[n // 62 ** i % 62] for i in range(4, -1, -1))
        descricao = counter + "".join(self.rng.choice(ALNUM) for _ in range(5))
        key = ("%s-%d" % (self.run_tag, n)) if self.rng.random() < self.keyed_share else None
        self.intents.append(Intent(n, client, tipo, valor, descricao, key, self.now()))
        return self.intents[-1]

    def burst(self, n):
        """Starts n transactions at once (so that a fault finds requests in flight)."""
        for _ in range(n):
            self._spawn(self._intent(self.new_intent()))

    async def one(self, client=1, tipo="c", valor=1):
        """One keyed transaction, awaited; returns the Intent."""
        it = self.new_intent()
        it.client, it.tipo, it.valor, it.key = client, tipo, valor, it.key or "%s-%d" % (self.run_tag, it.n)
        await self._intent(it)
        return it

    async def run(self, duration):
        """Starts transactions at `rate` and statements at `get_rate` per second for `duration`
        seconds (open model: a slow answer does not slow the arrivals), then returns; the
        started requests go on (see drain)."""
        if self.t_start is None:
            self.t_start = time.monotonic()
        begin, sent_w, sent_g = self.now(), 0, 0
        while self.now() - begin < duration:
            el = self.now() - begin
            for _ in range(int(el * self.rate) - sent_w):
                sent_w += 1
                if self._room():
                    self._spawn(self._intent(self.new_intent()))
            for _ in range(int(el * self.get_rate) - sent_g):
                sent_g += 1
                if self._room():
                    self.statements.append(Statement(self.now(), self.rng.randint(1, 5)))
                    self._spawn(self._statement(self.statements[-1]))
            await asyncio.sleep(0.005)

    async def drain(self, timeout):
        """Waits for every started request (and its retries) to end; returns how many did not."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.1, deadline - time.monotonic()))
        left = len(self.tasks)
        for t in list(self.tasks):
            t.cancel()
        return left

    def counts(self, t_from=None, t_to=None):
        """Answers seen by every attempt (and statement) started in [t_from, t_to)."""
        within = lambda t: (t_from is None or t >= t_from) and (t_to is None or t < t_to)
        seen = ["POST %s" % (a.status or a.error or "error") for it in self.intents for a in it.attempts if within(a.t0)]
        seen += ["GET %s" % (st.status or st.error or "error") for st in self.statements if within(st.t0)]
        return dict(Counter(seen))
