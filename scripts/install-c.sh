#!/bin/sh
# Installs the C library of ustrace under PREFIX:
#   PREFIX/lib/libustrace.so, PREFIX/lib/libustrace.a,
#   PREFIX/include/ustrace/ustrace.h, PREFIX/lib/pkgconfig/ustrace.pc
# so that `cc app.c $(pkg-config --cflags --libs ustrace)` builds a traced program
# (with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig for a prefix pkg-config does not search).
# Usage: scripts/install-c.sh PREFIX [--debug]   (release build unless --debug)
set -eu
[ $# -ge 1 ] || { echo "usage: $0 PREFIX [--debug]" >&2; exit 2; }
prefix=$1
profile=release
flag=--release
if [ "${2:-}" = "--debug" ]; then profile=debug; flag=; fi
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --manifest-path "$root/Cargo.toml" -p ustrace-c $flag
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include/ustrace"
prefix=$(cd "$prefix" && pwd)
install -m 0755 "$target/$profile/libustrace_c.so" "$prefix/lib/libustrace.so"
install -m 0644 "$target/$profile/libustrace_c.a" "$prefix/lib/libustrace.a"
install -m 0644 "$root/include/ustrace/ustrace.h" "$prefix/include/ustrace/ustrace.h"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/ustrace-c/Cargo.toml" | head -n 1)
cat > "$prefix/lib/pkgconfig/ustrace.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: ustrace
Description: User-space tracer: trace C and C++ programs with ustrace
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lustrace
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
PC
echo "installed ustrace $version under $prefix"
