#!/usr/bin/env bash
# Compares the divvy proxy example with nginx as a reverse proxy, on this machine, under the
# same wrk load: requests/s, p99 latency, and their ratio.
#
#   bash benches/proxy/compare.sh            # 10 s per run, 64 connections
#   DURATION=5s CONNECTIONS=32 bash benches/proxy/compare.sh
#   PROXY_BIN=path/to/proxy bash benches/proxy/compare.sh   # an already built proxy binary
#
# Both proxies run one worker (divvy: `--threads 1`, a current-thread tokio runtime; nginx:
# `worker_processes 1`), balance round robin over the same three backends (a separate nginx
# instance answering a short fixed body on three ports), keep connections to the backends
# alive, and log nothing per request. Everything listens on 127.0.0.1 only and every run is
# bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}          # wrk threads
# Ports BASE+1..3 (backends), BASE+10 (divvy), BASE+11 (nginx); a random free range by default,
# so the script does not collide with other servers on the machine.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -n "${BASE_PORT:-}" ]; then
  BASE=$BASE_PORT
else
  for _ in $(seq 1 50); do
    # Below the kernel's ephemeral range (32768 and up), where wrk's and the proxies' own
    # outgoing connections would otherwise collide with a port picked here.
    BASE=$((20000 + RANDOM % 12000))
    port_free $((BASE + 1)) && port_free $((BASE + 2)) && port_free $((BASE + 3)) &&
      port_free $((BASE + 10)) && port_free $((BASE + 11)) && break
  done
fi
export PATH="$PATH:/usr/sbin"

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ -z "${PROXY_BIN:-}" ]; then
  echo "== building the proxy (release)"
  cargo build --release --example proxy -q
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  PROXY_BIN="$target_dir/release/examples/proxy"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/backends/nginx.pid" ] && kill "$(cat "$work/backends/nginx.pid")" 2>/dev/null || true
  [ -f "$work/front/nginx.pid" ] && kill "$(cat "$work/front/nginx.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT

B1=$((BASE + 1)); B2=$((BASE + 2)); B3=$((BASE + 3))
DIVVY=$((BASE + 10)); NGINX=$((BASE + 11))

# --- backends: one nginx, three ports, a short fixed body ---
mkdir -p "$work/backends" "$work/front"
cat >"$work/backends/nginx.conf" <<EOF
worker_processes 1;
pid $work/backends/nginx.pid;
error_log $work/backends/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$B1; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:$B2; location / { return 200 "backend-2\n"; } }
  server { listen 127.0.0.1:$B3; location / { return 200 "backend-3\n"; } }
}
EOF
nginx -p "$work/backends" -c "$work/backends/nginx.conf"

# --- nginx as the proxy under test ---
cat >"$work/front/nginx.conf" <<EOF
worker_processes 1;
pid $work/front/nginx.pid;
error_log $work/front/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app {
    server 127.0.0.1:$B1;
    server 127.0.0.1:$B2;
    server 127.0.0.1:$B3;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF
nginx -p "$work/front" -c "$work/front/nginx.conf"

# --- the divvy proxy, same shape ---
cat >"$work/divvy.toml" <<EOF
listen = ["127.0.0.1:$DIVVY"]
[[host]]
default = true
upstream = "app"
[upstream.app]
strategy = "round_robin"
[[upstream.app.server]]
address = "127.0.0.1:$B1"
[[upstream.app.server]]
address = "127.0.0.1:$B2"
[[upstream.app.server]]
address = "127.0.0.1:$B3"
EOF
"$PROXY_BIN" --config "$work/divvy.toml" --check >/dev/null
RUST_LOG=warn "$PROXY_BIN" --config "$work/divvy.toml" --threads 1 >"$work/divvy.log" 2>&1 &
pids+=($!)

wait_up() {
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$1/" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  exit 1
}
wait_up "$B1"; wait_up "$NGINX"; wait_up "$DIVVY"

cpu_ticks() { # pid -> user + system clock ticks used so far
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

run() { # port pid -> "rps p99_ms cpu_us_per_request"
  local out rps p99 t0 t1
  t0=$(cpu_ticks "$2")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1/" >"$work/wrk.$1" 2>&1
  t1=$(cpu_ticks "$2")
  out=$(cat "$work/wrk.$1")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    grep "Non-2xx\|Socket errors" <<<"$out" >&2
  fi
  # wrk prints latencies as 1.23ms / 456.00us / 1.20s: normalise to milliseconds.
  p99=$(awk -v v="$p99" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } }')
  # The proxy's own CPU time per request (both are single processes with one worker): the
  # figure that does not depend on how much of the machine the proxy happened to get.
  local total cpu
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v d=$((t1 - t0)) -v n="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
  echo "$rps $p99 $cpu"
}

echo "== load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== warm-up (2 s each)"
divvy_pid=${pids[0]}
nginx_pid=$(pgrep -P "$(cat "$work/front/nginx.pid")" | head -1)
DURATION=2s run "$DIVVY" "$divvy_pid" >/dev/null
DURATION=2s run "$NGINX" "$nginx_pid" >/dev/null

echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION, one proxy worker each"
read -r d_rps d_p99 d_cpu < <(run "$DIVVY" "$divvy_pid")
read -r n_rps n_p99 n_cpu < <(run "$NGINX" "$nginx_pid")

echo "== load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '\n%-8s %12s %10s %18s\n' proxy "requests/s" "p99 (ms)" "CPU us / request"
printf '%-8s %12.0f %10.2f %18s\n' divvy "$d_rps" "$d_p99" "$d_cpu"
printf '%-8s %12.0f %10.2f %18s\n' nginx "$n_rps" "$n_p99" "$n_cpu"
awk -v a="$d_rps" -v b="$n_rps" -v c="$d_p99" -v d="$n_p99" \
  'BEGIN { printf "\ndivvy / nginx: throughput %.2fx, p99 %.2fx\n", a / b, c / d }'
