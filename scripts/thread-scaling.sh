#!/bin/bash
# thread-scaling.sh [EVENTS] [ROUNDS]: events/s against producer threads 1, 2, 4, 8.
# A private ustraced, one per-UID channel (1 MiB x 8: one ring per CPU, shared by
# the threads), then ustrace-demo --threads T --events EVENTS --report per line
# (`N events X ns/event`: wall time over all events); last, what was discarded.
set -eu
N=${1:-2000000}; ROUNDS=${2:-3}
B=$(cd "$(dirname "$0")/.." && pwd)/target/release
R=$(mktemp -d)
export USTRACE_RUNDIR=$R/run
mkdir -p "$USTRACE_RUNDIR"
"$B/ustraced" >/dev/null 2>&1 & D=$!
trap 'kill $D 2>/dev/null; wait $D 2>/dev/null; rm -rf "$R"' EXIT
for _ in $(seq 100); do "$B/ustrace" status >/dev/null 2>&1 && break; sleep 0.1; done
"$B/ustrace" create s --output "$R/t" >/dev/null
"$B/ustrace" enable-channel c --buffers-uid --subbuf-size 1048576 --num-subbuf 8 >/dev/null
"$B/ustrace" enable-event -c c 'demo:*' >/dev/null
"$B/ustrace" start >/dev/null
for _ in $(seq "$ROUNDS"); do
  for t in 1 2 4 8; do
    echo "threads $t: $("$B/ustrace-demo" --threads "$t" --events "$N" --report 2>&1 >/dev/null | head -n 1)"
  done
done
"$B/ustrace" stop >/dev/null
"$B/ustrace" status | grep -i 'discarded' | head -n 1
