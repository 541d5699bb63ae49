#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each:
#
#     bash scripts/fuzz.sh [SECONDS]        (default 30 seconds per target)
#
# Targets: frame_decoder (FrameCodec over arbitrary bytes in chunks) and state_machine
# (frames from arbitrary bytes fed to ServerProtocol and ClientProtocol).
#
# What it needs, and installs when missing:
# - cargo-fuzz: `cargo install cargo-fuzz --locked` (from crates.io).
# - A compiler that accepts the -Z flags cargo-fuzz passes (-Zsanitizer=..., and the
#   sanitizer coverage options). In order of preference:
#     1. FUZZ_TOOLCHAIN=<name> if set (for example `nightly`, or `stable` to force 3.);
#     2. an installed rustup `nightly` toolchain: `cargo +nightly fuzz ...`;
#     3. otherwise the default (stable) toolchain with RUSTC_BOOTSTRAP=1, which lets a
#        stable rustc accept -Z flags. Nothing is downloaded for this, so the script never
#        needs network access for a toolchain. Set FUZZ_INSTALL_NIGHTLY=1 to try
#        `rustup toolchain install nightly --profile minimal` before falling back to 3.
#   The fuzz crate has its own [workspace] and target dir (fuzz/target): the rest of the
#   project keeps building and testing on stable, untouched by any of this.
#   Both routes were checked: stable rustc 1.95.0 with RUSTC_BOOTSTRAP=1 (FUZZ_TOOLCHAIN=
#   stable) and rustup's nightly 1.97.0 build, run and find nothing with the address
#   sanitizer. Cost, cold, on 2 cores: installing cargo-fuzz about 45 s, building the
#   fuzz crate 1.5 to 3 minutes, then 2 x SECONDS.
#
# Other knobs: FUZZ_SANITIZER (address, the default; `none` runs faster),
# FUZZ_JOBS (parallel libFuzzer workers per target, default 1).
# Corpora live in fuzz/corpus/<target> and crashes in fuzz/artifacts/<target> (git-ignored);
# a crash makes this script fail with libFuzzer's reproduction command in the output.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECS="${1:-30}"
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
    echo "usage: $0 [SECONDS per target, a positive integer]" >&2
    exit 2
fi
SANITIZER="${FUZZ_SANITIZER:-address}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS=(frame_decoder state_machine)

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found on PATH; install a Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

if cargo fuzz --version >/dev/null 2>&1; then
    echo "==> cargo-fuzz: $(cargo fuzz --version)"
else
    echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

have_toolchain() {
    command -v rustup >/dev/null 2>&1 && rustup run "$1" rustc --version >/dev/null 2>&1
}

TOOLCHAIN_ARGS=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    TOOLCHAIN="$FUZZ_TOOLCHAIN"
elif have_toolchain nightly; then
    TOOLCHAIN=nightly
elif [ "${FUZZ_INSTALL_NIGHTLY:-0}" = 1 ] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain install nightly --profile minimal; then
    TOOLCHAIN=nightly
else
    TOOLCHAIN=""
fi
if [ -n "$TOOLCHAIN" ]; then
    TOOLCHAIN_ARGS=("+$TOOLCHAIN")
fi
if [ -z "$TOOLCHAIN" ] || ! rustup run "$TOOLCHAIN" rustc --version 2>/dev/null | grep -q nightly; then
    # A stable (or beta) rustc: let it accept the -Z flags cargo-fuzz passes.
    export RUSTC_BOOTSTRAP=1
fi
if [ -n "$TOOLCHAIN" ]; then
    RUSTC_VERSION="$(rustup run "$TOOLCHAIN" rustc --version)"
else
    RUSTC_VERSION="$(rustc --version)"
fi
echo "==> compiler: $RUSTC_VERSION${RUSTC_BOOTSTRAP:+ with RUSTC_BOOTSTRAP=1}"

PARALLEL=()
if [ "$JOBS" -gt 1 ]; then
    PARALLEL=(-jobs="$JOBS" -workers="$JOBS")
fi

for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "==> fuzzing $target for ${SECS}s (sanitizer: $SANITIZER, jobs: $JOBS)"
    # -rss_limit_mb / -malloc_limit_mb: a decoder that allocates past its limits fails.
    cargo "${TOOLCHAIN_ARGS[@]}" fuzz run --fuzz-dir fuzz --sanitizer "$SANITIZER" \
        "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256 \
        "${PARALLEL[@]}" -print_final_stats=1
done

echo "==> fuzzing finished without a crash"
