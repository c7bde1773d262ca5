#!/bin/bash
# c-thread-scaling.sh [EVENTS] [ROUNDS] [CSV]: events/s against producer threads
# 1, 2, 4, 8 under both tracers: examples/c/threads.c built against libustrace and
# against liblttng-ust (the anchor's tp.h/tp.c), per-UID, sub-buffers 1 MiB x 8 for
# both (one ring per CPU, shared by the threads), alternating ours and LTTng's at
# each thread count, ROUNDS times. Prints every run, then per thread count the best
# events/s of each and the ratio; with CSV, writes `threads,ours,lttng` (best
# events/s) there for docs/scaling.gp. Each run says what its tracer discarded
# during it (a discarded event costs less than a stored one: read rates with it).
set -euo pipefail
N=${1:-2000000}; ROUNDS=${2:-3}; CSV=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
anchor=$root/../shared/anchors/lttng
bin=$root/target/release
work=$(mktemp -d)
export USTRACE_RUNDIR=$work/run
mkdir -p "$USTRACE_RUNDIR"
bash "$root/scripts/install-c.sh" "$work/prefix" >/dev/null
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig
# shellcheck disable=SC2046
cc -O2 -DUSTRACE -o "$work/threads-ust" "$root/examples/c/threads.c" -pthread \
  $(pkg-config --cflags --libs ustrace) -Wl,-rpath,"$work/prefix/lib"
cp "$anchor/tp.h" "$anchor/tp.c" "$work/"
cc -O2 -I"$work" -o "$work/threads-lttng" "$root/examples/c/threads.c" "$work/tp.c" \
  -pthread -llttng-ust -ldl
# common.sh looks for setup.sh beside $0 (this script): build the anchor first.
[ -x "${LTTNG_ANCHOR_BUILD:-/tmp/lttng-anchor}/app" ] || bash "$anchor/setup.sh" >/dev/null
source "$anchor/common.sh"
"$bin/ustraced" >/dev/null 2>&1 &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  lttng destroy ts$$ >/dev/null 2>&1 || true
  stop_sessiond
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 200); do [ -S "$USTRACE_RUNDIR/control.sock" ] && break; sleep 0.05; done
"$bin/ustrace" create ts --output "$work/ours" >/dev/null
"$bin/ustrace" enable-channel ch --buffers-uid --subbuf-size 1M --num-subbuf 8 >/dev/null
"$bin/ustrace" enable-event -c ch 'bench:*' >/dev/null
"$bin/ustrace" start >/dev/null
session_up ts$$ uid "$work/lttng" 1M 8
ours_discarded() { "$bin/ustrace" --json status | sed -n 's/.*"events_discarded":\([0-9]*\).*/\1/p' | head -n 1; }
lttng_discarded() { lttng list ts$$ -c ch 2>/dev/null | awk '/Discarded events:/ {s+=$3} END {print s+0}'; }
declare -A best_ours best_lttng
for _ in $(seq "$ROUNDS"); do
  for t in 1 2 4 8; do
    for tracer in ours lttng; do
      if [ $tracer = ours ]; then
        before=$(ours_discarded); line=$("$work/threads-ust" "$t" "$N"); after=$(ours_discarded)
      else
        before=$(lttng_discarded); line=$("$work/threads-lttng" "$t" "$N"); after=$(lttng_discarded)
      fi
      echo "$tracer: $line, $((after - before)) discarded"
      rate=$(echo "$line" | awk '{print $7}')
      if [ $tracer = ours ]; then prev=${best_ours[$t]:-0}; else prev=${best_lttng[$t]:-0}; fi
      if awk -v a="$rate" -v b="$prev" 'BEGIN {exit !(a > b)}'; then
        if [ $tracer = ours ]; then best_ours[$t]=$rate; else best_lttng[$t]=$rate; fi
      fi
    done
  done
done
[ -z "$CSV" ] || echo "threads,ours,lttng" > "$CSV"
for t in 1 2 4 8; do
  o=${best_ours[$t]}; l=${best_lttng[$t]}
  awk -v t="$t" -v o="$o" -v l="$l" 'BEGIN {printf "threads %d: best ours %.2fM events/s, LTTng %.2fM events/s, ours/LTTng %.2f\n", t, o/1e6, l/1e6, o/l}'
  [ -z "$CSV" ] || echo "$t,$o,$l" >> "$CSV"
done
"$bin/ustrace" stop >/dev/null
echo "ours discarded in all: $(ours_discarded)"
echo "LTTng discarded in all: $(session_down ts$$)"
