#!/usr/bin/env bash
# The measuring floor beside the stack: the same k6 request (new connection each, full
# response time) against
#   1. a bare nginx on 127.0.0.1:9996 answering a constant body (k6 + TCP + nginx, no API);
#   2. the running stack's GET /clientes/1/extrato (a read: no commit);
#   3. the running stack's POST /clientes/1/transacoes (a write: one commit).
# Usage: scripts/loadtest.d/floor.sh [RATE=100] [SECONDS=20] [STACK_URL=http://127.0.0.1:9999]
# The POSTs alternate credits and debits of 1 on client 1 ("floor"): run it on a stack
# whose ledger you do not mind growing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rate=${1:-100}; secs=${2:-20}; url=${3:-http://127.0.0.1:9999}
dir=$(mktemp -d /tmp/crebitos-floor.XXXXXX)
cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen 127.0.0.1:9996 backlog=4096; location / { default_type application/json; return 200 '{"saldo":{"total":0,"limite":0}}'; } }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf"
trap 'kill "$(cat "$dir/nginx.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
sleep 0.3
k6 run -q --no-usage-report -e URL=http://127.0.0.1:9996/ -e RATE="$rate" -e SECONDS="$secs" "$here/floor.js"
k6 run -q --no-usage-report -e URL="$url/clientes/1/extrato" -e RATE="$rate" -e SECONDS="$secs" "$here/floor.js"
k6 run -q --no-usage-report -e URL="$url/clientes/1/transacoes" -e METHOD=POST -e RATE="$rate" -e SECONDS="$secs" "$here/floor.js"
