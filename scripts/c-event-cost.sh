#!/bin/bash
# c-event-cost.sh APP [N] [uid|pid]: ns/event of examples/c/app.c built as APP
# (see docs/c-api.md) under a private release ustraced, sub-buffers 1 MiB x 8:
# the counterpart of LTTng's anchor event_cost.sh, same program, same geometry.
set -euo pipefail
APP=$1; N=${2:-5000000}; MODE=${3:-uid}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
[ -x "$bin/ustraced" ] && [ -x "$bin/ustrace" ] || cargo build --release --manifest-path "$root/Cargo.toml"
export USTRACE_RUNDIR=$(mktemp -d)
out=$(mktemp -d)
"$bin/ustraced" >/dev/null 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$out" "$USTRACE_RUNDIR"' EXIT
for _ in $(seq 200); do [ -S "$USTRACE_RUNDIR/control.sock" ] && break; sleep 0.05; done
"$bin/ustrace" create ec --output "$out/t" >/dev/null
"$bin/ustrace" enable-channel ch --buffers-"$MODE" --subbuf-size 1M --num-subbuf 8 >/dev/null
"$bin/ustrace" enable-event -c ch 'bench:*' >/dev/null
"$bin/ustrace" start >/dev/null
"$APP" "$N" x 2>&1
"$bin/ustrace" stop >/dev/null
"$bin/ustrace" status | grep -i 'events discarded' | head -n 1
echo "recorded: $(babeltrace2 "$out/t" | wc -l)"
