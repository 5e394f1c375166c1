// The Rinha de Backend 2024/Q1 load test ("RinhaBackendCrebitosSimulation") for k6, with the
// order, rates and checks of the official Gatling simulation (docs/API.md, "The load test"):
//   setup()    phase 1: 25 simultaneous debits of 1 on client 1, statement == -25, 25 simultaneous
//              credits of 1, statement == 0; phase 2: the 5 clients at once (initial statement,
//              "toma", "devolve", statement order, "danada" + 4 simultaneous statements, 5 invalid
//              payloads) and, at the same moment, GET /clientes/6/extrato -> 404;
//   scenarios  phase 3: open model, debits 1 -> RATES.d/s, credits 1 -> RATES.c/s, statements 1 -> RATES.e/s
//              over RAMP_S seconds, then PLATEAU_S seconds flat.
// setup() ends before any scenario starts (Gatling's `andThen`); each request opens its own TCP
// connection (noConnectionReuse). Environment: BASE_URL, SCALE (rate multiplier), RAMP_S,
// PLATEAU_S, SUMMARY_PATH, LIMITS and RATES (the clients' limits and the rates, from
// crebitos_tools/clients.py).
//
// Nothing is judged here: each request becomes a line of console output (k6 --console-output
// FILE --log-format raw) for score.py and loadtest_audit.py to judge:
//   R|phase|t0_ms|rt_ms|status|ok|inc|cliente|tipo|valor|descricao|saldo|instance|reason
// phase: v = phases 1-2, d = debit, c = credit, e = statement; rt_ms: connection set-up included
// (as Gatling measures it); ok: expected status and every Gatling check passed; inc: a balance
// inconsistency; reason: why not, plus "x:..." for stricter checks than Gatling's (never scored).
//
// With RATE set (`scripts/loadtest instance`): the contest's blend (RATES.d : RATES.c : RATES.e) on random
// clients at RATE requests/s for SECONDS over kept-alive connections (as nginx's upstream
// keep-alive), nothing recorded, only the `full_ms` trend in the summary.

import http from 'k6/http';
import { Trend } from 'k6/metrics';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:9999';
const num = (name, otherwise) => Number(__ENV[name] ?? otherwise);
const [SCALE, RAMP_S, PLATEAU_S, RATE] = [num('SCALE', 1), num('RAMP_S', 120), num('PLATEAU_S', 120), num('RATE', 0)];
const LIMITS = JSON.parse(__ENV.LIMITS || '{}');
// New requests per second per kind at the top of the ramp (d, c, e): clients.py's, which
// loadrun.py and bench.py pass (there is no default here, so that they live in one place).
const RATES = JSON.parse(__ENV.RATES);
const CLIENTS = [1, 2, 3, 4, 5];
const PARAMS = { headers: { 'content-type': 'application/json' } };
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function rampScenario(exec, baseRate) {
  const target = Math.max(1, Math.round(baseRate * SCALE));
  // A VU is busy for one request (about a millisecond on a healthy stack): room for 100 ms of
  // latency up front, up to 1 s before k6 drops arrivals (score.py counts those as failed:
  // past 250 ms they would fail the SLA anyway, and thousands of VUs would make k6 the bottleneck).
  return {
    executor: 'ramping-arrival-rate', exec, startRate: RAMP_S > 0 ? 1 : target, timeUnit: '1s',
    preAllocatedVUs: Math.ceil(target * 0.1) + 10, maxVUs: target + 50, gracefulStop: '65s',
    stages: [RAMP_S, PLATEAU_S].filter((s) => s > 0).map((s) => ({ target, duration: `${s}s` })),
  };
}

export const options = {
  noConnectionReuse: !RATE,
  noVUConnectionReuse: !RATE,
  userAgent: 'Agente do Caos - 2024/Q1',
  batch: 32,
  batchPerHost: 32,
  setupTimeout: '300s',
  // Fewer tags: less work per sample for k6 (its metrics do not make the score).
  systemTags: ['status', 'method', 'scenario'],
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  scenarios: RATE ? {
    constant: { executor: 'constant-arrival-rate', exec: 'constant', rate: RATE, timeUnit: '1s',
      duration: `${num('SECONDS', 20)}s`, preAllocatedVUs: Math.ceil(RATE / 10) + 5, maxVUs: RATE + 50 },
  } : {
    debitos: rampScenario('debito', RATES.d),
    creditos: rampScenario('credito', RATES.c),
    extratos: rampScenario('extrato', RATES.e),
  },
};

const randomClient = () => 1 + Math.floor(Math.random() * 5);
const randomValor = () => 1 + Math.floor(Math.random() * 10000);
const randomDescricao = () => Array.from({ length: 10 }, () => ALNUM[Math.floor(Math.random() * 62)]).join('');
const body = (valor, tipo, descricao) => `{"valor": ${valor}, "tipo": "${tipo}", "descricao": ${descricao === null ? 'null' : `"${descricao}"`}}`;
const post = (cliente, payload) => ['POST', `${BASE}/clientes/${cliente}/transacoes`, payload, PARAMS];
const get = (cliente) => ['GET', `${BASE}/clientes/${cliente}/extrato`, null, PARAMS];
const isInt = (v) => typeof v === 'number' && Number.isInteger(v);
const fullTime = ({ timings: t }) => t.blocked + t.connecting + t.tls_handshaking + t.duration;

const parse = (res) => { try { return JSON.parse(res.body); } catch (e) { return null; } };

function record(phase, t0, res, ok, inc, cliente, tipo, valor, descricao, saldo, reason) {
  const instance = res.headers['X-Instance'] || res.headers['x-instance'] || '';
  console.log(`R|${phase}|${t0}|${fullTime(res).toFixed(3)}|${res.status}|${ok ? 1 : 0}|${inc ? 1 : 0}|${cliente}|${tipo}|` +
    `${valor}|${descricao ?? ''}|${saldo ?? ''}|${instance}|${reason}`);
}

// A transaction (POST) with `accept`, its expected statuses; on a 200, Gatling's
// "ConsistenciaSaldoLimite": saldo >= -limite, both read from the response. Returns the body.
function checkTransaction(phase, t0, res, cliente, tipo, valor, descricao, accept) {
  let [ok, inc, reason, b] = [accept.includes(res.status), false, '', null];
  if (!ok) reason = `status ${res.status}`;
  else if (res.status === 200) {
    b = parse(res);
    const [saldo, limite] = [b && b.saldo, b && b.limite];
    if (!isInt(saldo) || !isInt(limite)) [ok, reason] = [false, 'body'];
    else if (saldo < -limite) [ok, inc, reason] = [false, true, 'limite ultrapassado'];
    else if (limite !== LIMITS[cliente]) reason = 'x:limite';
  }
  record(phase, t0, res, ok, inc, cliente, tipo, valor, descricao, b && isInt(b.saldo) ? b.saldo : null, reason);
  return b;
}

// A statement and its expectations [what, test(body), isBalance]: a failed one on the balance
// is an inconsistency; an "x:" one is stricter than Gatling's, reported and never scored.
function checkStatement(phase, t0, res, cliente, expectations) {
  let [ok, inc, total] = [res.status >= 200 && res.status < 300, false, null];
  const reasons = ok ? [] : [`status ${res.status}`];
  const b = ok ? parse(res) : null;
  if (ok && !(b && b.saldo && isInt(b.saldo.total) && isInt(b.saldo.limite))) {
    ok = false;
    reasons.push('body');
  } else if (ok) {
    total = b.saldo.total;
    for (const [what, test, balance] of expectations) {
      let pass = false;
      try {
        pass = test(b);
      } catch (e) { /* a missing field fails the expectation */ }
      if (pass) continue;
      if (!what.startsWith('x:')) ok = false;
      inc = inc || balance;
      reasons.push(what);
    }
  }
  record(phase, t0, res, ok, inc, cliente, 'e', '', '', total, reasons.join(';'));
}

// Sends `requests` at once, then checks each: check(response, t0, index); returns the results.
function together(requests, check) {
  const t0 = Date.now();
  return http.batch(requests).map((r, i) => check(r, t0, i));
}

const latest = (i, descricao, tipo) => (b) => {
  const t = b.ultimas_transacoes[i];
  return t.descricao === descricao && t.tipo === tipo && t.valor === 1;
};

export function setup() {
  if (RATE) return;
  // Phase 1: concurrency on client 1.
  for (const [tipo, expected] of [['d', -25], ['c', 0]]) {
    together(Array(25).fill(post(1, body(1, tipo, 'validacao'))),
      (r, t0) => checkTransaction('v', t0, r, 1, tipo, 1, 'validacao', [200]));
    together([get(1)], (r, t0) => checkStatement('v', t0, r, 1,
      [[`saldo.total == ${expected}`, (b) => b.saldo.total === expected, true]]));
  }

  // Phase 2: the five clients at once (client c at index c - 1), and the 404 at the same moment.
  together(CLIENTS.map(get).concat([get(6)]), (r, t0, i) => (i === 5
    ? record('v', t0, r, r.status === 404, false, 6, 'e', '', '', null, r.status === 404 ? '' : `status ${r.status}`)
    : checkStatement('v', t0, r, i + 1, [
      ['saldo.limite initial', (b) => b.saldo.limite === LIMITS[i + 1], true],
      ['saldo.total == 0', (b) => b.saldo.total === 0, true]])));
  for (const [tipo, descricao] of [['c', 'toma'], ['d', 'devolve']]) {
    together(CLIENTS.map((c) => post(c, body(1, tipo, descricao))),
      (r, t0, i) => checkTransaction('v', t0, r, i + 1, tipo, 1, descricao, [200]));
  }
  together(CLIENTS.map(get), (r, t0, i) => checkStatement('v', t0, r, i + 1, [
    ['[0] devolve d 1', latest(0, 'devolve', 'd'), true], ['[1] toma c 1', latest(1, 'toma', 'c'), true]]));

  // "danada": a credit, then (Gatling `.resources`) 4 simultaneous statements per client that
  // must show it first, with the balance and limit the credit returned.
  const credited = together(CLIENTS.map((c) => post(c, body(1, 'c', 'danada'))),
    (r, t0, i) => checkTransaction('v', t0, r, i + 1, 'c', 1, 'danada', [200]));
  const owners = CLIENTS.flatMap((c) => [c, c, c, c]);
  together(owners.map(get), (r, t0, j) => {
    const a = credited[owners[j] - 1];
    checkStatement('v', t0, r, owners[j], [
      ['[0] danada c 1', latest(0, 'danada', 'c'), true],
      ['saldo.limite == credit limite', (b) => a !== null && b.saldo.limite === a.limite, true],
      ['saldo.total == credit saldo', (b) => a !== null && b.saldo.total === a.saldo, true]]);
  });

  // Five invalid payloads (each client's in sequence, the clients at once): 422 or 400.
  for (const [payload, tipo, valor, descricao] of [
    ['{"valor": 1.2, "tipo": "d", "descricao": "devolve"}', 'd', '1.2', 'devolve'],
    ['{"valor": 1, "tipo": "x", "descricao": "devolve"}', 'x', 1, 'devolve'],
    ['{"valor": 1, "tipo": "c", "descricao": "123456789 e mais um pouco"}', 'c', 1, '123456789 e mais um pouco'],
    ['{"valor": 1, "tipo": "c", "descricao": ""}', 'c', 1, ''],
    ['{"valor": 1, "tipo": "c", "descricao": null}', 'c', 1, null],
  ]) {
    together(CLIENTS.map((c) => post(c, payload)),
      (r, t0, i) => checkTransaction('v', t0, r, i + 1, tipo, valor, descricao, [422, 400]));
  }
}

function transaction(tipo) {
  const [cliente, valor, descricao, t0] = [randomClient(), randomValor(), randomDescricao(), Date.now()];
  const res = http.request(...post(cliente, body(valor, tipo, descricao)));
  checkTransaction(tipo, t0, res, cliente, tipo, valor, descricao, tipo === 'd' ? [200, 422] : [200]);
}

export const debito = () => transaction('d');
export const credito = () => transaction('c');

export function extrato() {
  const [cliente, t0] = [randomClient(), Date.now()];
  checkStatement('e', t0, http.request(...get(cliente)), cliente, [
    ['limite ultrapassado', (b) => b.saldo.total >= -b.saldo.limite, true],
    ['x:limite', (b) => b.saldo.limite === LIMITS[cliente], false],
  ]);
}

const fullMs = new Trend('full_ms', true);
export function constant() {
  const [cliente, pick] = [randomClient(), Math.random() * (RATES.e + RATES.c + RATES.d)];
  const req = pick < RATES.e ? get(cliente)
    : post(cliente, body(randomValor(), pick < RATES.e + RATES.c ? 'c' : 'd', randomDescricao()));
  fullMs.add(fullTime(http.request(...req)));
}

export function handleSummary(data) {
  return __ENV.SUMMARY_PATH ? { stdout: '', [__ENV.SUMMARY_PATH]: JSON.stringify(data) } : { stdout: '' };
}
