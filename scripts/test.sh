#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then checks
# formatting and lints and runs every test. Runs as root in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

# babeltrace (1) too: tests/e2e_daemon.rs checks that it reads our traces.
if ! command -v babeltrace2 >/dev/null || ! command -v babeltrace >/dev/null \
  || ! command -v lttng-relayd >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "babeltrace2, babeltrace or lttng-relayd is missing: install them (apt-get install babeltrace2 babeltrace lttng-tools) or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq babeltrace2 babeltrace lttng-tools >/dev/null
fi

# tests/c_api.rs builds C and C++ programs through pkg-config.
if ! command -v c++ >/dev/null || ! command -v pkg-config >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "a C++ compiler or pkg-config is missing: apt-get install g++ pkg-config" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq g++ pkg-config >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy -p ustrace-c --all-targets -- -D warnings
cargo clippy -p ustrace-tracing --all-targets -- -D warnings

# The app side (ust, shm, ctf, protocol) builds and passes its unit tests without the
# daemon feature, and links no actor runtime.
cargo test --no-default-features --lib
if cargo tree --no-default-features -e normal | grep -E 'actix|tokio'; then
  echo "the app side (--no-default-features) depends on actix/tokio (above)" >&2
  exit 1
fi
# The tracing layer is app side too (its tokio is the example's, a dev-dependency).
if cargo tree -p ustrace-tracing -e normal | grep -E 'actix|tokio'; then
  echo "ustrace-tracing depends on actix/tokio (above)" >&2
  exit 1
fi

cargo test --release -- --test-threads 2
# After the package's own tests: those of ustrace-tracing run its binaries
# (ustraced) from the same profile directory.
cargo test --release -p ustrace-tracing -- --test-threads 2
