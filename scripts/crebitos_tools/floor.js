// The measuring floor: what one request costs the load generator and the loopback alone.
// A constant arrival rate of GETs to URL, one new TCP connection each (as crebitos.js),
// and the same "full" response time (connection set-up included).
//   k6 run -e URL=http://127.0.0.1:9996/ -e RATE=100 -e SECONDS=20 floor.js
import http from 'k6/http';
import { Trend } from 'k6/metrics';

const full = new Trend('full_ms', true);
const URL = __ENV.URL || 'http://127.0.0.1:9999/clientes/1/extrato';
const METHOD = __ENV.METHOD || 'GET';
const RATE = Number(__ENV.RATE || '100');
const SECONDS = Number(__ENV.SECONDS || '20');

export const options = {
  noConnectionReuse: true,
  noVUConnectionReuse: true,
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  scenarios: {
    floor: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: `${SECONDS}s`,
      preAllocatedVUs: Math.ceil(RATE / 10) + 5, maxVUs: RATE + 50,
    },
  },
};

let n = 0;
export default function () {
  n += 1;
  const body = METHOD === 'POST'
    ? `{"valor": 1, "tipo": "${n % 2 ? 'c' : 'd'}", "descricao": "floor"}` : null;
  const res = http.request(METHOD, URL, body, { headers: { 'content-type': 'application/json' } });
  const t = res.timings;
  full.add(t.blocked + t.connecting + t.tls_handshaking + t.duration);
}

export function handleSummary(data) {
  const m = data.metrics;
  const pick = (k) => m[k] ? m[k].values : {};
  const out = { url: URL, method: METHOD, rate: RATE, seconds: SECONDS,
    full_ms: pick('full_ms'), waiting_ms: pick('http_req_waiting'), connecting_ms: pick('http_req_connecting'),
    blocked_ms: pick('http_req_blocked'), requests: (m.http_reqs || { values: {} }).values.count };
  return { stdout: JSON.stringify(out) + '\n' };
}
