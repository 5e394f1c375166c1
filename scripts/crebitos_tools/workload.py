"""Open-model load on the stack that records every request and every answer.

Each *intent* is one transaction a client wants done: a unique `descricao` (10
characters) names it, so the ledger audit can find its row. Two kinds of clients:

  keyed     sends `Idempotency-Key` and, after an answer that does not tell whether the
            transaction happened (no answer, connection reset, 502, 503, 504), retries
            the same request with the same key until it gets a definitive one (200 or
            422) or its retry window closes;
  plain     the contest's client: no key, one attempt, whatever the answer.

Statements (GET /clientes/{id}/extrato) run beside them and are checked for
saldo.total >= -limite.
"""
import asyncio
import random
import string
import time

from . import httpc

DEFINITIVE = (200, 422)
ALNUM = string.ascii_letters + string.digits


class Attempt:
    __slots__ = ("t0", "t1", "status", "error", "instance", "replayed", "saldo", "limite")

    def __init__(self, t0):
        self.t0 = t0
        self.t1 = None
        self.status = 0
        self.error = None
        self.instance = None
        self.replayed = False
        self.saldo = None
        self.limite = None

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Intent:
    __slots__ = ("n", "client", "tipo", "valor", "descricao", "key", "attempts", "t0")

    def __init__(self, n, client, tipo, valor, descricao, key, t0):
        self.n, self.client, self.tipo, self.valor = n, client, tipo, valor
        self.descricao, self.key, self.t0 = descricao, key, t0
        self.attempts = []

    @property
    def final(self):
        return self.attempts[-1] if self.attempts else None

    @property
    def final_status(self):
        return self.attempts[-1].status if self.attempts else None

    @property
    def definitive(self):
        return self.final_status in DEFINITIVE

    def body(self):
        return '{"valor": %d, "tipo": "%s", "descricao": "%s"}' % (self.valor, self.tipo, self.descricao)

    def as_dict(self):
        return {"n": self.n, "client": self.client, "tipo": self.tipo, "valor": self.valor,
                "descricao": self.descricao, "key": self.key, "t0": self.t0,
                "attempts": [a.as_dict() for a in self.attempts]}


class Statement:
    __slots__ = ("t0", "client", "status", "error", "instance", "total", "limite")

    def __init__(self, t0, client):
        self.t0, self.client = t0, client
        self.status, self.error, self.instance, self.total, self.limite = 0, None, None, None, None


class Workload:
    def __init__(self, port, rate=150.0, get_rate=15.0, keyed_share=0.8, attempt_timeout=15.0,
                 retry_window=120.0, max_inflight=3000, seed=None, run_tag=None):
        self.port, self.rate, self.get_rate, self.keyed_share = port, rate, get_rate, keyed_share
        self.attempt_timeout, self.retry_window, self.max_inflight = attempt_timeout, retry_window, max_inflight
        self.rng = random.Random(seed)
        self.run_tag = run_tag or "".join(self.rng.choice(ALNUM) for _ in range(6))
        self.intents = []
        self.statements = []
        self.skipped = 0
        self.tasks = set()
        self.t_start = None
        self.stopping = False
        self.finished = []  # (phase, ms, ok) of each answer since take_finished() last ran

    def take_finished(self):
        """The answers since the last call, for a progress line (crebitos_tools.progress)."""
        items, self.finished = self.finished, []
        return items

    def now(self):
        return time.monotonic() - self.t_start

    # -- one transaction, retried with its key when the answer leaves it unknown -----------
    async def _intent(self, it):
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
                a.status = r.status
                a.instance = r.instance
                a.replayed = r.header("idempotent-replayed") == "true"
                if r.status == 200:
                    j = r.json() or {}
                    a.saldo, a.limite = j.get("saldo"), j.get("limite")
            except httpc.HTTPError as e:
                a.error = e.kind
            a.t1 = self.now()
            self.finished.append((None, (a.t1 - a.t0) * 1000, a.status in DEFINITIVE))
            if a.status in DEFINITIVE or not it.key:
                return
            if a.status and not (a.status >= 500):
                return  # 4xx other than 422: definitive, and unexpected (the audit says so)
            if self.now() - it.t0 > self.retry_window:
                return
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, 1.0)

    async def _statement(self, st):
        try:
            r = await httpc.request("GET", "/clientes/%d/extrato" % st.client, port=self.port,
                                    timeout=self.attempt_timeout)
            st.status, st.instance = r.status, r.instance
            if r.status == 200:
                j = r.json() or {}
                saldo = j.get("saldo") or {}
                st.total, st.limite = saldo.get("total"), saldo.get("limite")
        except httpc.HTTPError as e:
            st.error = e.kind
        self.finished.append((None, (self.now() - st.t0) * 1000, st.status == 200))

    def _spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def new_intent(self):
        n = len(self.intents)
        client = self.rng.randint(1, 5)
        tipo = "d" if self.rng.random() < 2 / 3 else "c"
        valor = self.rng.randint(1, 10000)
        # 10 characters, unique in the run: 5 of counter (base 62), 5 random.
        c, ctr = n, ""
        for _ in range(5):
            c, d = divmod(c, 62)
            ctr = ALNUM[d] + ctr
        descricao = ctr + "".join(self.rng.choice(ALNUM) for _ in range(5))
        key = ("%s-%d" % (self.run_tag, n)) if self.rng.random() < self.keyed_share else None
        it = Intent(n, client, tipo, valor, descricao, key, self.now())
        self.intents.append(it)
        return it

    def burst(self, n):
        """Starts n transactions at once (so that a fault finds requests in flight)."""
        for _ in range(n):
            self._spawn(self._intent(self.new_intent()))

    async def one(self, client=1, tipo="c", valor=1):
        """One keyed transaction, awaited; returns the Intent."""
        it = self.new_intent()
        it.client, it.tipo, it.valor = client, tipo, valor
        if not it.key:
            it.key = "%s-%d" % (self.run_tag, it.n)
        await self._intent(it)
        return it

    async def run(self, duration):
        """Starts transactions at `rate` per second and statements at `get_rate` per
        second for `duration` seconds (open model: a slow answer does not slow the
        arrivals), then returns; the started requests keep going (see drain)."""
        if self.t_start is None:
            self.t_start = time.monotonic()
        begin = self.now()
        sent_w = sent_g = 0
        while not self.stopping:
            el = self.now() - begin
            if el >= duration:
                break
            due_w = int(el * self.rate) - sent_w
            due_g = int(el * self.get_rate) - sent_g
            for _ in range(due_w):
                sent_w += 1
                if len(self.tasks) >= self.max_inflight:
                    self.skipped += 1
                    continue
                self._spawn(self._intent(self.new_intent()))
            for _ in range(due_g):
                sent_g += 1
                if len(self.tasks) >= self.max_inflight:
                    self.skipped += 1
                    continue
                st = Statement(self.now(), self.rng.randint(1, 5))
                self.statements.append(st)
                self._spawn(self._statement(st))
            await asyncio.sleep(0.005)

    async def drain(self, timeout):
        """Waits for every started request (and its retries) to end."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.1, deadline - time.monotonic()))
        left = len(self.tasks)
        for t in list(self.tasks):
            t.cancel()
        return left

    # -- numbers --------------------------------------------------------------------------
    def counts(self, t_from=None, t_to=None):
        """Answers seen by every attempt (and statement) started in [t_from, t_to)."""
        out = {}

        def add(k):
            out[k] = out.get(k, 0) + 1
        for it in self.intents:
            for a in it.attempts:
                if (t_from is None or a.t0 >= t_from) and (t_to is None or a.t0 < t_to):
                    add("POST " + (str(a.status) if a.status else (a.error or "error")))
        for st in self.statements:
            if (t_from is None or st.t0 >= t_from) and (t_to is None or st.t0 < t_to):
                add("GET " + (str(st.status) if st.status else (st.error or "error")))
        return out
