#!/usr/bin/env bash
# The Python package's tests: bash scripts/test-python.sh [extra pytest args]
#
# 1. makes sure .venv-py at the repo root has maturin, pytest and the Python reference
#    peer (peng3dnet 0.1.3a0 and what it imports), creating the venv if needed;
# 2. checks the binding crate (peng3dnet-py/): cargo fmt --check, cargo clippy -D warnings;
# 3. builds the package's wheel with maturin (release) and installs it into the venv;
# 4. runs its pytest suite, whose interop tests use the reference from the same venv
#    (they fail, never skip, when it is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRATE="$ROOT/peng3dnet-py"
VENV="$ROOT/.venv-py"
PY="$VENV/bin/python"
PACKAGES=("maturin>=1.9.4,<2" "pytest>=7" peng3dnet==0.1.3a0 msgpack bidict peng3d)

# peng3dnet imports peng3d, which imports pyglet: without this it needs a display.
export PYGLET_SHADOW_WINDOW=0

venv_ok() {
    [ -x "$PY" ] && "$PY" -c 'import pytest, peng3dnet.ext.ping, msgpack' >/dev/null 2>&1 \
        && [ -x "$VENV/bin/maturin" ]
}

if venv_ok; then
    echo "==> python venv: $VENV (ready)"
else
    echo "==> python venv: creating $VENV with ${PACKAGES[*]}"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 not found; it is needed to build and test the Python package" >&2
        exit 1
    fi
    if [ ! -x "$PY" ] && ! python3 -m venv "$VENV"; then
        echo "error: 'python3 -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    if ! "$PY" -m pip install --disable-pip-version-check -q "${PACKAGES[@]}"; then
        echo "error: could not install ${PACKAGES[*]} into $VENV (is PyPI reachable?)" >&2
        exit 1
    fi
    if ! venv_ok; then
        echo "error: $VENV still lacks pytest, maturin or the reference after installing" >&2
        exit 1
    fi
fi

cd "$CRATE"
# Build for the venv's interpreter (abi3: the wheel also fits newer ones).
export PYO3_PYTHON="$PY"

echo "==> peng3dnet-py: cargo fmt --check"
cargo fmt --check

echo "==> peng3dnet-py: cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "==> peng3dnet-py: maturin build --release"
rm -rf "$CRATE/target/wheels"
"$VENV/bin/maturin" build --release --interpreter "$PY" --out "$CRATE/target/wheels"
WHEELS=("$CRATE"/target/wheels/peng3dnet_rs-*.whl)
"$PY" -m pip install --disable-pip-version-check -q --force-reinstall --no-deps "${WHEELS[0]}"

echo "==> peng3dnet-py: pytest $*"
export PENG3DNET_REF_PYTHON="$PY"
# From the crate directory, so the tests import the installed wheel, not the sources.
"$PY" -m pytest -p no:cacheprovider tests "$@"

echo "==> python package tests passed"
