// The Rinha de Backend 2024/Q1 load test ("RinhaBackendCrebitosSimulation"), for k6, and
// the constant-rate probes of `scripts/loadtest floor` and `scripts/loadtest instance`.
//
// The contest (the default) keeps the order, the rates and the checks of the official
// Gatling simulation (docs/API.md, "The load test"):
//   setup()        phase 1: 25 simultaneous debits of 1 on client 1, statement == -25,
//                  25 simultaneous credits of 1, statement == 0;
//                  phase 2: the 5 clients at once (initial statement, "toma", "devolve",
//                  statement order, "danada" + 4 simultaneous statements, 5 invalid
//                  payloads) and, at the same moment, GET /clientes/6/extrato -> 404.
//   scenarios      phase 3: open model, debits 1 -> 220/s, credits 1 -> 110/s,
//                  statements 1 -> 10/s over RAMP_S seconds, then PLATEAU_S seconds flat.
// setup() runs to completion before any scenario starts: that is Gatling's `andThen`.
//
// Like Gatling, every request opens its own TCP connection (noConnectionReuse).
//
// Nothing is judged here: every request is written as one line to the console output
// (k6 --console-output FILE --log-format raw), and score.py / loadtest_audit.py judge the
// run from those lines. One line per request:
//   R|phase|t0_ms|rt_ms|status|ok|inc|cliente|tipo|valor|descricao|saldo|instance|reason
// phase: v = phases 1-2 (validations), d = debit, c = credit, e = statement.
// rt_ms: full response time, connection set-up included (as Gatling measures it).
// ok: expected status and every Gatling check passed; inc: a balance inconsistency;
// reason: why ok or inc is 0/1 ("" when fine), plus "x:..." for checks stricter than
// Gatling's that do not change the score.
//
// Environment: BASE_URL, SCALE (rate multiplier), RAMP_S, PLATEAU_S, SUMMARY_PATH, LIMITS.
//
// With RATE set, none of that: a constant RATE requests/s for SECONDS, nothing recorded,
// only the `full_ms` trend (connection set-up included) in the summary. TARGET=mix sends
// the contest's blend (220 : 110 : 10 debits, credits, statements on random clients) to
// BASE_URL; otherwise every request is METHOD (GET) to TARGET, a POST alternating credits
// and debits of 1 on client 1 ("floor"). REUSE=1 keeps connections open (as nginx's
// upstream keep-alive does); by default each request opens its own, as in the contest.

import http from 'k6/http';
import { Trend } from 'k6/metrics';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:9999';
const SCALE = Number(__ENV.SCALE || '1');
const RAMP_S = Number(__ENV.RAMP_S === undefined ? '120' : __ENV.RAMP_S);
const PLATEAU_S = Number(__ENV.PLATEAU_S === undefined ? '120' : __ENV.PLATEAU_S);
const SUMMARY_PATH = __ENV.SUMMARY_PATH || '';
const RATE = Number(__ENV.RATE || '0');
const CONSTANT = RATE > 0;

// The five clients and their limits (docs/API.md): scripts/loadtest passes them from
// crebitos_tools/clients.py, the one place they are written down.
const LIMITS = JSON.parse(__ENV.LIMITS || '{}');
const CLIENTS = [1, 2, 3, 4, 5];

const PARAMS = { headers: { 'content-type': 'application/json' } };
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function rampScenario(exec, baseRate) {
  const target = Math.max(1, Math.round(baseRate * SCALE));
  const stages = [];
  if (RAMP_S > 0) stages.push({ target, duration: `${RAMP_S}s` });
  if (PLATEAU_S > 0) stages.push({ target, duration: `${PLATEAU_S}s` });
  return {
    executor: 'ramping-arrival-rate',
    exec,
    startRate: RAMP_S > 0 ? 1 : target,
    timeUnit: '1s',
    // A VU is busy for one request (about a millisecond on a healthy stack). Room for
    // 100 ms of latency up front, up to 1 s before k6 starts dropping arrivals (dropped
    // arrivals are counted as failed requests by score.py: past 250 ms they would fail
    // the SLA anyway, and thousands of extra VUs would make k6 the bottleneck).
    preAllocatedVUs: Math.ceil(target * 0.1) + 10,
    maxVUs: Math.ceil(target * 1) + 50,
    stages,
    gracefulStop: '65s',
  };
}

function constantScenario() {
  return {
    executor: 'constant-arrival-rate', exec: 'constant', rate: RATE, timeUnit: '1s',
    duration: `${Number(__ENV.SECONDS || '20')}s`, preAllocatedVUs: Math.ceil(RATE / 10) + 5, maxVUs: RATE + 50,
  };
}

const REUSE = CONSTANT && __ENV.REUSE === '1';

export const options = {
  noConnectionReuse: !REUSE,
  noVUConnectionReuse: !REUSE,
  userAgent: 'Agente do Caos - 2024/Q1',
  batch: 32,
  batchPerHost: 32,
  setupTimeout: '300s',
  // Fewer tags: less work per sample for k6 (we do not use its metrics for the score).
  systemTags: ['status', 'method', 'scenario'],
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  scenarios: CONSTANT ? { constant: constantScenario() } : {
    debitos: rampScenario('debito', 220),
    creditos: rampScenario('credito', 110),
    extratos: rampScenario('extrato', 10),
  },
};

function randomClient() {
  return 1 + Math.floor(Math.random() * 5);
}

function randomDescricao() {
  let s = '';
  for (let i = 0; i < 10; i++) s += ALNUM[Math.floor(Math.random() * 62)];
  return s;
}

function body(valor, tipo, descricao) {
  return `{"valor": ${valor}, "tipo": "${tipo}", "descricao": ${descricao === null ? 'null' : `"${descricao}"`}}`;
}

function fullTime(res) {
  const t = res.timings;
  return t.blocked + t.connecting + t.tls_handshaking + t.duration;
}

function instanceOf(res) {
  const h = res.headers['X-Instance'] || res.headers['x-instance'];
  return h || '';
}

function parse(res) {
  try {
    return JSON.parse(res.body);
  } catch (e) {
    return null;
  }
}

function isInt(v) {
  return typeof v === 'number' && Number.isInteger(v);
}

// One record line; see the header comment.
function record(phase, t0, res, ok, inc, cliente, tipo, valor, descricao, saldo, reason) {
  console.log(
    `R|${phase}|${t0}|${fullTime(res).toFixed(3)}|${res.status}|${ok ? 1 : 0}|${inc ? 1 : 0}|` +
      `${cliente}|${tipo}|${valor}|${descricao === null ? '' : descricao}|${saldo === null ? '' : saldo}|` +
      `${instanceOf(res)}|${reason}`,
  );
}

// Gatling's "ConsistenciaSaldoLimite": saldo >= -limite, both read from the response.
// Returns [ok, inconsistent, reason].
function saldoLimite(saldo, limite, cliente) {
  if (!isInt(saldo) || !isInt(limite)) return [false, false, 'body'];
  if (saldo < -limite) return [false, true, 'limite ultrapassado'];
  if (limite !== LIMITS[cliente]) return [true, false, 'x:limite'];
  return [true, false, ''];
}

// A transaction (POST) and its checks; `accept` lists the expected statuses.
// Returns the parsed body of a 200 (or null).
function checkTransaction(phase, t0, res, cliente, tipo, valor, descricao, accept) {
  let ok = accept.indexOf(res.status) >= 0;
  let inc = false;
  let reason = ok ? '' : `status ${res.status}`;
  let saldo = null;
  let b = null;
  if (ok && res.status === 200) {
    b = parse(res);
    saldo = b && isInt(b.saldo) ? b.saldo : null;
    const [sok, sinc, sreason] = saldoLimite(b && b.saldo, b && b.limite, cliente);
    ok = sok;
    inc = sinc;
    reason = sreason;
  }
  record(phase, t0, res, ok, inc, cliente, tipo, valor, descricao, saldo, reason);
  return b;
}

function post(cliente, valor, tipo, descricao) {
  return ['POST', `${BASE}/clientes/${cliente}/transacoes`, body(valor, tipo, descricao), PARAMS];
}

function get(cliente) {
  return ['GET', `${BASE}/clientes/${cliente}/extrato`, null, PARAMS];
}

// A statement and a list of expectations [jsonPathDescription, actual => bool, isBalance].
// A failed expectation on the balance counts as an inconsistency.
function checkStatement(phase, t0, res, cliente, expectations) {
  let ok = res.status >= 200 && res.status < 300;
  let inc = false;
  const reasons = [];
  if (!ok) reasons.push(`status ${res.status}`);
  const b = ok ? parse(res) : null;
  let total = null;
  if (ok) {
    if (!b || !b.saldo || !isInt(b.saldo.total) || !isInt(b.saldo.limite)) {
      ok = false;
      reasons.push('body');
    } else {
      total = b.saldo.total;
      for (const [what, test, balance] of expectations) {
        let pass = false;
        try {
          pass = test(b);
        } catch (e) {
          pass = false;
        }
        if (!pass) {
          // "x:" checks are stricter than Gatling's: reported, never scored.
          if (!what.startsWith('x:')) ok = false;
          if (balance) inc = true;
          reasons.push(what);
        }
      }
    }
  }
  record(phase, t0, res, ok, inc, cliente, 'e', '', '', total, reasons.join(';'));
  return b;
}

const ULT = (b, i) => b.ultimas_transacoes[i];

export function setup() {
  if (CONSTANT) return;
  // Phase 1: concurrency on client 1.
  for (const [tipo, expected] of [['d', -25], ['c', 0]]) {
    let t0 = Date.now();
    const batch = [];
    for (let i = 0; i < 25; i++) batch.push(post(1, 1, tipo, 'validacao'));
    const rs = http.batch(batch);
    for (const r of rs) checkTransaction('v', t0, r, 1, tipo, 1, 'validacao', [200]);
    t0 = Date.now();
    const r = http.get(`${BASE}/clientes/1/extrato`, PARAMS);
    checkStatement('v', t0, r, 1, [[`saldo.total == ${expected}`, (b) => b.saldo.total === expected, true]]);
  }

  // Phase 2: the five clients at once, and the 404 at the same moment.
  let t0 = Date.now();
  let rs = http.batch(CLIENTS.map(get).concat([get(6)]));
  CLIENTS.forEach((c, i) =>
    checkStatement('v', t0, rs[i], c, [
      ['saldo.limite initial', (b) => b.saldo.limite === LIMITS[c], true],
      ['saldo.total == 0', (b) => b.saldo.total === 0, true],
    ]),
  );
  const r404 = rs[5];
  record('v', t0, r404, r404.status === 404, false, 6, 'e', '', '', null, r404.status === 404 ? '' : `status ${r404.status}`);

  for (const [tipo, descricao] of [['c', 'toma'], ['d', 'devolve']]) {
    t0 = Date.now();
    rs = http.batch(CLIENTS.map((c) => post(c, 1, tipo, descricao)));
    CLIENTS.forEach((c, i) => checkTransaction('v', t0, rs[i], c, tipo, 1, descricao, [200]));
  }

  t0 = Date.now();
  rs = http.batch(CLIENTS.map(get));
  CLIENTS.forEach((c, i) =>
    checkStatement('v', t0, rs[i], c, [
      ['[0] devolve d 1', (b) => ULT(b, 0).descricao === 'devolve' && ULT(b, 0).tipo === 'd' && ULT(b, 0).valor === 1, true],
      ['[1] toma c 1', (b) => ULT(b, 1).descricao === 'toma' && ULT(b, 1).tipo === 'c' && ULT(b, 1).valor === 1, true],
    ]),
  );

  // "danada": a credit, then (Gatling `.resources`) 4 simultaneous statements that must
  // show it first and the balance it returned.
  t0 = Date.now();
  rs = http.batch(CLIENTS.map((c) => post(c, 1, 'c', 'danada')));
  const after = CLIENTS.map((c, i) => checkTransaction('v', t0, rs[i], c, 'c', 1, 'danada', [200]));
  const reqs = [];
  const owners = [];
  CLIENTS.forEach((c, i) => {
    for (let k = 0; k < 4; k++) {
      reqs.push(get(c));
      owners.push(i);
    }
  });
  t0 = Date.now();
  rs = http.batch(reqs);
  rs.forEach((r, j) => {
    const i = owners[j];
    const c = CLIENTS[i];
    const a = after[i];
    checkStatement('v', t0, r, c, [
      ['[0] danada c 1', (b) => ULT(b, 0).descricao === 'danada' && ULT(b, 0).tipo === 'c' && ULT(b, 0).valor === 1, true],
      ['saldo.limite == credit limite', (b) => a !== null && b.saldo.limite === a.limite, true],
      ['saldo.total == credit saldo', (b) => a !== null && b.saldo.total === a.saldo, true],
    ]);
  });

  // Five invalid payloads per client (each client's in sequence, the clients at once).
  const invalid = [
    ['{"valor": 1.2, "tipo": "d", "descricao": "devolve"}', 'd', '1.2', 'devolve'],
    ['{"valor": 1, "tipo": "x", "descricao": "devolve"}', 'x', 1, 'devolve'],
    ['{"valor": 1, "tipo": "c", "descricao": "123456789 e mais um pouco"}', 'c', 1, '123456789 e mais um pouco'],
    ['{"valor": 1, "tipo": "c", "descricao": ""}', 'c', 1, ''],
    ['{"valor": 1, "tipo": "c", "descricao": null}', 'c', 1, null],
  ];
  for (const [payload, tipo, valor, descricao] of invalid) {
    t0 = Date.now();
    rs = http.batch(CLIENTS.map((c) => ['POST', `${BASE}/clientes/${c}/transacoes`, payload, PARAMS]));
    CLIENTS.forEach((c, i) => checkTransaction('v', t0, rs[i], c, tipo, valor, descricao, [422, 400]));
  }
}

function transaction(tipo) {
  const cliente = randomClient();
  const valor = 1 + Math.floor(Math.random() * 10000);
  const descricao = randomDescricao();
  const t0 = Date.now();
  const res = http.post(`${BASE}/clientes/${cliente}/transacoes`, body(valor, tipo, descricao), PARAMS);
  checkTransaction(tipo, t0, res, cliente, tipo, valor, descricao, tipo === 'd' ? [200, 422] : [200]);
}

export function debito() {
  transaction('d');
}

export function credito() {
  transaction('c');
}

export function extrato() {
  const cliente = randomClient();
  const t0 = Date.now();
  const res = http.get(`${BASE}/clientes/${cliente}/extrato`, PARAMS);
  checkStatement('e', t0, res, cliente, [
    ['limite ultrapassado', (b) => b.saldo.total >= -b.saldo.limite, true],
    ['x:limite', (b) => b.saldo.limite === LIMITS[cliente], false],
  ]);
}

// The constant-rate probe: one request, timed as the contest's are.
const fullMs = new Trend('full_ms', true);
let sent = 0;
export function constant() {
  sent += 1;
  let res;
  if (__ENV.TARGET === 'mix') {
    const cliente = randomClient();
    const pick = Math.random() * 340;
    res = pick < 10 ? http.get(`${BASE}/clientes/${cliente}/extrato`, PARAMS)
      : http.post(`${BASE}/clientes/${cliente}/transacoes`,
        body(1 + Math.floor(Math.random() * 10000), pick < 120 ? 'c' : 'd', randomDescricao()), PARAMS);
  } else {
    const post = __ENV.METHOD === 'POST';
    res = http.request(post ? 'POST' : 'GET', __ENV.TARGET, post ? body(1, sent % 2 ? 'c' : 'd', 'floor') : null, PARAMS);
  }
  fullMs.add(fullTime(res));
}

export function handleSummary(data) {
  const out = { stdout: '' };
  if (SUMMARY_PATH) out[SUMMARY_PATH] = JSON.stringify(data);
  return out;
}
