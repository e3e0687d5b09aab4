#!/usr/bin/env bash
# Shedding denied connection attempts: the ACL compiled into a socket filter on the listener
# (the kernel drops each SYN) against gate.Listener alone (handshake, accept, getpeername, close),
# in the same run, interleaved, with the server's CPU measured apart from the client's (see
# BenchmarkShed in gate/kfilter). Traffic stays on 127.0.0.0/8; each round is a bounded number of
# attempts.
#   bash bench/kfilter.sh [rounds] [attempts-per-case]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
n=${2:-20000}
out=${OUT:-bench/results/kfilter.txt}
mkdir -p "$(dirname "$out")"
go test -c -o /tmp/kfilter.bench.test ./gate/kfilter
go install golang.org/x/perf/cmd/benchstat@v0.0.0-20250414141345-ef18a6b38a0d >/dev/null 2>&1 || true
: > "$out"
for _ in $(seq "$rounds"); do
  /tmp/kfilter.bench.test -test.run '^$' -test.bench 'Shed' -test.benchtime "${n}x" | grep '^Benchmark' | tee -a "$out"
done
# Medians per case and metric (benchstat, when installed, adds confidence intervals).
echo
for case in $(awk '{print $1}' "$out" | sort -u); do
  echo "$case"
  for unit in ns/op srv-cpu-ns/op cli-cpu-ns/op gate-denied/op; do
    vals=$(awk -v c="$case" -v u="$unit" '$1 == c { for (i = 3; i < NF; i++) if ($(i+1) == u) print $i }' "$out" | sort -g)
    n=$(echo "$vals" | wc -l)
    printf '  %-15s median %10s   min %10s   max %10s   (%d runs)\n' "$unit" \
      "$(echo "$vals" | sed -n "$(( (n + 1) / 2 ))p")" "$(echo "$vals" | head -1)" "$(echo "$vals" | tail -1)" "$n"
  done
done
if command -v benchstat >/dev/null || [ -x "$HOME/go/bin/benchstat" ]; then
  PATH="$PATH:$HOME/go/bin" benchstat -col /filter "$out" 2>/dev/null || PATH="$PATH:$HOME/go/bin" benchstat "$out"
fi
