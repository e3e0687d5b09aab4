#!/usr/bin/env bash
# Accept throughput through gate.Listener vs a plain net.Listener, and the rate at which the gate
# sheds denied connections. The cases run interleaved (plain, allowed, denied, plain, ...) so that
# the ratios hold on a noisy machine; benchstat summarises. Traffic stays on 127.0.0.0/8.
#   bash bench/accept.sh [rounds] [conns-per-case]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
n=${2:-20000}
out=${OUT:-bench/results/accept.txt}
mkdir -p "$(dirname "$out")"
go test -c -o /tmp/gate.bench.test ./gate
go install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da >/dev/null 2>&1 || true
: > "$out"
for _ in $(seq "$rounds"); do
  /tmp/gate.bench.test -test.run '^$' -test.bench 'Accept$' -test.benchtime "${n}x" -test.benchmem | grep '^Benchmark' >> "$out"
done
if command -v benchstat >/dev/null || [ -x "$HOME/go/bin/benchstat" ]; then
  PATH="$PATH:$HOME/go/bin" benchstat -col /case "$out" 2>/dev/null || PATH="$PATH:$HOME/go/bin" benchstat "$out"
fi
