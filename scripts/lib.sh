# Shared by the scripts: make sure the build prerequisites are present.
# Sourced, not run.

set -euo pipefail

# A target dir outside the clone lets repeated runs (and CI on the same
# machine) reuse the ~13 min RocksDB C++ build. Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbor-target}"

have_libclang() {
  # On Debian/Ubuntu ask dpkg: libclang-cpp (often preinstalled) is not enough,
  # bindgen needs libclang itself and clang's builtin headers (libclang-dev).
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s libclang-dev >/dev/null 2>&1
  else
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib*/libclang.so* /usr/lib*/*/libclang-[0-9]*.so* >/dev/null 2>&1
  fi
}

ensure_prereqs() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
  fi
  if ! have_libclang; then
    echo "==> installing libclang-dev (RocksDB's bindings need it)"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
  fi
}
