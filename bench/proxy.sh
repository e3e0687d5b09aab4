#!/usr/bin/env bash
# peergate serve vs HAProxy vs nginx stream, as TCP proxies with an address ACL in front of the same
# upstream. Each proxy gets one worker core (GOMAXPROCS=1 / nbthread 1 / worker_processes 1) pinned
# to CPU 1; the load generator and the upstream share CPU 0. Targets are run interleaved in every
# round so that ratios hold on a noisy machine. All traffic is on 127.0.0.0/8.
#
#   bash bench/proxy.sh [rounds] [seconds-per-run]
#   SCENARIOS="flood1m" bash bench/proxy.sh 3 5    # only some: connect unpinned bulk flood scale flood1m
#
# Scenarios: connect rate with a 10-rule allow list and with a 100k-prefix blocklist; the same
# 10-rule connect run unpinned, as a user runs each proxy by default on this box (peergate's default
# GOMAXPROCS, HAProxy nbthread 2, nginx worker_processes 2, nothing pinned); bulk transfer
# of 1 GiB with CPU seconds per GiB; allowed latency under a flood of denied connects (peergate);
# start-up time and memory with a 1M-prefix blocklist; and the denied flood again with the 1M-prefix
# blocklist (flood1m: peergate's gate alone, peergate with the eBPF kernel filter, HAProxy).
# Results: bench/results/proxy.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
scenarios=${SCENARIOS:-connect unpinned bulk flood scale flood1m}
want() { [[ " $scenarios " == *" $1 "* ]]; }
out=${OUT:-bench/results/proxy.txt}
work=$(mktemp -d /tmp/pgbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if ! command -v haproxy >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  apt-get update -qq && apt-get install -y -qq haproxy nginx-light libnginx-mod-stream >/dev/null
fi
go build -o "$work/peergate" ./cmd/peergate
go build -o "$work/pgbench" ./bench/pgbench
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000" 2>/dev/null || true

mkdir -p "$(dirname "$out")"
exec > >(tee "$out") 2>&1
echo "# bench/proxy.sh $(date -u +%FT%TZ) rounds=$rounds secs=$secs"
echo "# $(nproc) cores; $(haproxy -v | head -1); $(nginx -v 2>&1); $(go version)"

pin_proxy="taskset -c 1"
pin_load="taskset -c 0"
[ "$(nproc)" -ge 2 ] || { pin_proxy=""; pin_load=""; }
gmp="env GOMAXPROCS=1"

wait_port() { # addr: wait until something accepts there (bounded)
  for _ in $(seq 600); do
    if "$work/pgbench" load -target "$1" -n 1 -c 1 -d 1s 2>/dev/null | grep -q 'ok=1'; then return 0; fi
    sleep 0.05
  done
  echo "nothing listening on $1" >&2; return 1
}
cpu_ticks() { local t=0; for p in "$@"; do set -- $(sed 's/.*) //' /proc/$p/stat); t=$((t + ${12} + ${13})); done; echo $t; }
pss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup))); done; echo $t; }

# --- the upstream -----------------------------------------------------------------------------
$pin_load "$work/pgbench" upstream -listen 127.0.0.1:9000 & pids+=($!)
wait_port 127.0.0.1:9000

# --- ACLs: a 10-rule allow list and a 100k-prefix blocklist, in each proxy's own syntax -----------
gen_prefixes() { # n: random /16-/32 prefixes outside 127/8, one per line
  python3 - "$1" <<'PY'
import random, sys, ipaddress
random.seed(7); n = int(sys.argv[1]); seen = set()
while len(seen) < n:
    bits = random.randint(16, 32); a = random.getrandbits(32)
    if a >> 24 in (0, 10, 127) or a >> 28 >= 14: continue
    p = ipaddress.ip_network((a >> (32 - bits) << (32 - bits), bits))
    seen.add(str(p))
print("\n".join(sorted(seen)))
PY
}
gen_prefixes 9 > "$work/allow10.lst"; echo 127.0.0.0/8 >> "$work/allow10.lst"
gen_prefixes 100000 > "$work/block100k.lst"

write_configs() { # name default(allow|deny) list-action(allow|deny) list-file port-base
  local name=$1 def=$2 act=$3 list=$4 base=$5
  cat > "$work/$name.peergate.yaml" <<Y
acls:
  a: {default: $def, include: [{path: $list, action: $act}]}
services:
  - {name: p, listen: ["127.0.0.1:$((base+1))"], acl: a, upstream: "127.0.0.1:9000", max_conns: 0, idle_timeout: 0s}
Y
  sed "s/:$((base+1))\"/:$((base+4))\"/; s/idle_timeout: 0s}/idle_timeout: 0s, kernel_filter: auto}/" \
    "$work/$name.peergate.yaml" > "$work/$name.peergate-kf.yaml"
  local rule="reject unless"; [ "$act" = deny ] && rule="reject if"
  cat > "$work/$name.haproxy.cfg" <<H
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fe
  bind 127.0.0.1:$((base+2))
  tcp-request connection $rule { src -f $list }
  default_backend be
backend be
  server s1 127.0.0.1:9000
H
  { echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    echo "worker_processes 1; daemon off; error_log stderr error; pid $work/$name.nginx.pid;"
    echo "events { worker_connections 8000; }"
    echo "stream { server { listen 127.0.0.1:$((base+3)); proxy_pass 127.0.0.1:9000; proxy_half_close on;"
    sed "s/.*/  $act &;/" "$list"
    [ "$def" = allow ] && echo "  allow all;" || echo "  deny all;"
    echo "} }"; } > "$work/$name.nginx.conf"
}

start_proxies() { # name base [kf]: start all three (and peergate with kernel_filter), wait until ready
  local name=$1 base=$2 kf=${3:-}
  $gmp $pin_proxy "$work/peergate" serve -config "$work/$name.peergate.yaml" -watch 0 2>/dev/null & pids+=($!); PG=$!
  $pin_proxy haproxy -f "$work/$name.haproxy.cfg" -db 2>/dev/null & pids+=($!); HA=$!
  $pin_proxy nginx -c "$work/$name.nginx.conf" -e stderr 2>/dev/null & pids+=($!); NG=$!
  local ports="1 2 3"; KF=
  if [ -n "$kf" ]; then
    $gmp $pin_proxy "$work/peergate" serve -config "$work/$name.peergate-kf.yaml" -watch 0 2>/dev/null & pids+=($!); KF=$!
    ports="1 2 3 4"
  fi
  for p in $ports; do wait_port 127.0.0.1:$((base+p)); done
}
stop_proxies() { kill $PG $HA $NG $KF 2>/dev/null || true; wait $PG $HA $NG $KF 2>/dev/null || true; }

proxy_pids() { # target: the processes of one proxy (nginx: master and workers)
  case $1 in
    peergate) echo $PG;; haproxy) echo $HA;; nginx) echo $NG $(pgrep -P $NG);; peergate-kfilter) echo $KF;;
  esac
}
# measure target cmd...: run a pgbench load and add the proxy's CPU per connection, which is what
# bounds its connections a second on its one core, whatever the noise on the other.
measure() {
  local procs; procs=$(proxy_pids "$1"); shift
  local c0 out c1; c0=$(cpu_ticks $procs)
  out=$("$@"); c1=$(cpu_ticks $procs)
  local ok=1; [[ $out == *" ok="* ]] && { ok=${out#* ok=}; ok=${ok%% *}; }
  echo "$out cpu_s=$(python3 -c "print(($c1-$c0)/100)") cpu_us_per_conn=$(python3 -c "print(round(($c1-$c0)*1e4/max($ok,1),1))")"
}

connect_rounds() { # name base
  local name=$1 base=$2
  for r in $(seq "$rounds"); do
    for t in peergate:1 haproxy:2 nginx:3; do
      measure "${t%:*}" $pin_load "$work/pgbench" load -mode connect -target 127.0.0.1:$((base+${t#*:})) -c 16 -d "${secs}s" \
        -src 127.0.0.1,127.0.0.4,127.0.0.5,127.0.0.6 -label "${label:-$name}/${t%:*}/round$r"
    done
  done
}

if want connect; then
echo "## connect: 10-rule allow list (default deny)"
write_configs acl10 deny allow "$work/allow10.lst" 9100
start_proxies acl10 9100; connect_rounds acl10 9100; stop_proxies
fi

if want unpinned; then
echo "## unpinned: 10-rule allow list, each proxy with its default placement on $(nproc) cores: peergate"
echo "## with Go's default GOMAXPROCS, HAProxy nbthread $(nproc), nginx worker_processes $(nproc); nothing pinned"
write_configs unpinned deny allow "$work/allow10.lst" 9600
sed -i "s/nbthread 1/nbthread $(nproc)/" "$work/unpinned.haproxy.cfg"
sed -i "s/worker_processes 1;/worker_processes $(nproc);/" "$work/unpinned.nginx.conf"
( pin_proxy="" pin_load="" gmp=""
  start_proxies unpinned 9600; label=unpinned connect_rounds unpinned 9600; stop_proxies )
fi

if want connect || want bulk; then
echo "## connect: 100k-prefix blocklist (default allow)"
write_configs acl100k allow deny "$work/block100k.lst" 9200
start_proxies acl100k 9200
want connect && connect_rounds acl100k 9200
fi

if want bulk; then
echo "## bulk: 1 GiB through each; cpu_s is the proxy's CPU seconds for the GiB"
for r in $(seq 3); do
  for t in peergate:1 haproxy:2 nginx:3; do
    measure "${t%:*}" $pin_load "$work/pgbench" load -mode bulk -target 127.0.0.1:$((9200+${t#*:})) -bytes $((1<<30)) -label "bulk/${t%:*}/round$r"
  done
done
fi
{ want connect || want bulk; } && stop_proxies

flood_rounds() { # name base label-suffix targets...: calm, then under a flood from 127.0.0.2
  local name=$1 base=$2 sfx=$3; shift 3
  for r in $(seq "$rounds"); do
    for t in "$@"; do
      port=$((base+${t#*:}))
      measure "${t%:*}" $pin_load "$work/pgbench" load -mode connect -target 127.0.0.1:$port -c 4 -d "${secs}s" -label "calm$sfx/${t%:*}/round$r"
      $pin_load "$work/pgbench" load -mode connect -target 127.0.0.1:$port -c 12 -d "$((secs+1))s" -src 127.0.0.2 -label "flooder$sfx/${t%:*}/round$r" &
      fl=$!
      measure "${t%:*}" $pin_load "$work/pgbench" load -mode connect -target 127.0.0.1:$port -c 4 -d "${secs}s" -label "flood$sfx/${t%:*}/round$r"
      wait $fl || true
    done
  done
}

if want flood; then
echo "## flood: allowed latency while denied clients connect as fast as they can (1000-prefix blocklist,"
echo "## small enough for peergate's kernel filter; peergate-kfilter is peergate with kernel_filter: auto)"
gen_prefixes 999 > "$work/block1k.lst"; echo 127.0.0.2/32 >> "$work/block1k.lst"   # the flooding source
write_configs flood allow deny "$work/block1k.lst" 9300
start_proxies flood 9300 kf
flood_rounds flood 9300 "" peergate:1 haproxy:2 nginx:3 peergate-kfilter:4
stop_proxies
fi

{ want scale || want flood1m; } && gen_prefixes 1000000 > "$work/block1m.lst"
if want scale; then
echo "## scale: 1M-prefix blocklist: time until serving, and memory (PSS) once serving"
write_configs scale allow deny "$work/block1m.lst" 9400
for t in peergate haproxy nginx; do
  s=$(date +%s.%N)
  case $t in
    peergate) GOMAXPROCS=1 "$work/peergate" serve -config "$work/scale.peergate.yaml" -watch 0 2>/dev/null & p=$!; port=9401;;
    haproxy)  haproxy -f "$work/scale.haproxy.cfg" -db 2>/dev/null & p=$!; port=9402;;
    nginx)    nginx -c "$work/scale.nginx.conf" -e stderr 2>/dev/null & p=$!; port=9403;;
  esac
  pids+=($p)
  if wait_port 127.0.0.1:$port; then
    e=$(date +%s.%N); procs=$p; [ $t = nginx ] && procs="$p $(pgrep -P $p)"
    echo "label=scale/$t load_s=$(python3 -c "print(round($e-$s,2))") pss_mb=$(( $(pss_kb $procs) / 1024 ))"
  else
    echo "label=scale/$t load_s=timeout"
  fi
  kill $p 2>/dev/null || true; wait $p 2>/dev/null || true
done
fi

if want flood1m; then
echo "## flood1m: the denied flood with the 1M-prefix blocklist (127.0.0.2 added); peergate-kfilter is"
echo "## peergate with kernel_filter: auto, which takes the eBPF filter here (nginx left out: its"
echo "## allow/deny list is linear, 1M lines take minutes to load)"
cp "$work/block1m.lst" "$work/block1m2.lst"; echo 127.0.0.2/32 >> "$work/block1m2.lst"
write_configs flood1m allow deny "$work/block1m2.lst" 9500
start_proxies flood1m 9500 kf
flood_rounds flood1m 9500 1m peergate:1 haproxy:2 peergate-kfilter:4
stop_proxies
fi

# The pictures in BENCHMARKS.md, from the results above.
python3 "$(dirname "$0")/plots.py"
