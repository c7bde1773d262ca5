#!/usr/bin/env bash
# profile_churn.sh strace|perf [churn options...]: runs `ustrace bench churn` and
# attaches strace -c (syscall counts and time) or perf record -g (CPU profile) to
# the private ustraced it starts, for the whole run. Output under $OUT (default
# /tmp/ustrace-profile). Needs a release build (cargo build --release).
set -euo pipefail
tool=${1:?usage: profile_churn.sh strace|perf [churn options...]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/ustrace-profile}
mkdir -p "$out"
"$root/target/release/ustrace" bench churn "$@" > "$out/churn.txt" &
bench=$!
daemon=""
for _ in $(seq 500); do
  daemon=$(pgrep -P "$bench" -x ustraced || true)
  [ -n "$daemon" ] && break
  sleep 0.01
done
[ -n "$daemon" ] || { echo "no ustraced under pid $bench" >&2; wait "$bench"; exit 1; }
case $tool in
  strace) strace -f -c -o "$out/strace.txt" -p "$daemon" & ;;
  perf) perf record -q -g -o "$out/perf.data" -p "$daemon" 2>/dev/null & ;;
  *) echo "unknown tool $tool" >&2; kill "$bench"; exit 1 ;;
esac
tracer=$!
wait "$bench"
wait "$tracer" || true
cat "$out/churn.txt"
case $tool in
  strace) head -30 "$out/strace.txt" ;;
  perf) perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -40 ;;
esac
