#!/usr/bin/env bash
# How long a node stays busy after the peer of a deep game dies: beta
# serves a game of 100M nested rounds, alpha is killed (-9) after SECONDS,
# then a new 3-round demo against beta is timed. Loopback only; uses the
# default cluster key (~/.avm/cluster-key).
#
#   cargo build --release && tools/stall-after-peer-death.sh 4
set -euo pipefail
seconds=${1:-4}
bin=${AVM_NODE:-target/release/avm-node}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" --name beta --port "$port" --demo 2>/dev/null &
beta=$!
trap 'kill -INT $beta 2>/dev/null; wait $beta 2>/dev/null || true' EXIT
sleep 0.3
"$bin" --name alpha --port 0 --peer "127.0.0.1:$port" --demo --rounds 100000000 2>/dev/null &
alpha=$!
sleep "$seconds"
kill -9 "$alpha"
wait "$alpha" 2>/dev/null || true
start=$(date +%s.%N)
"$bin" --name alpha2 --port 0 --peer "127.0.0.1:$port" --demo --rounds 3 2>/dev/null | grep -E '^result'
end=$(date +%s.%N)
echo "alpha killed after ${seconds} s; the next 3-round demo took $(python3 -c "print(f'{$end - $start:.2f}')") s"
