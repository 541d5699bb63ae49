#!/usr/bin/env bash
# The project's one test command: bash scripts/test.sh [extra args for the first cargo test]
#
# 1. makes sure the Python reference peer (peng3dnet 0.1.3a0) is installed in
#    .venv-ref at the repo root, creating the venv if needed;
# 2. points the interoperability tests at it (PENG3DNET_REF_PYTHON);
# 3. runs cargo test --workspace --all-targets "$@", then cargo test --workspace --doc;
# 4. builds the Python package (peng3dnet-py/) with maturin and runs its pytest suite
#    (scripts/test-python.sh, with its own venv .venv-py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv-ref"
REF_PY="$VENV/bin/python"
REF_PACKAGES=(peng3dnet==0.1.3a0 msgpack bidict peng3d)

# peng3dnet imports peng3d, which imports pyglet: without this, importing it
# needs a display.
export PYGLET_SHADOW_WINDOW=0

ref_ok() {
    [ -x "$REF_PY" ] && "$REF_PY" -c 'import peng3dnet, peng3dnet.ext.ping, msgpack' >/dev/null 2>&1
}

if ref_ok; then
    echo "==> reference peer: $REF_PY (peng3dnet already installed)"
else
    echo "==> reference peer: creating $VENV with ${REF_PACKAGES[*]}"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 not found; it is needed for the Python reference peer (.venv-ref)" >&2
        exit 1
    fi
    if ! python3 -m venv "$VENV"; then
        echo "error: 'python3 -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    if ! "$REF_PY" -m pip install --disable-pip-version-check "${REF_PACKAGES[@]}"; then
        echo "error: could not install ${REF_PACKAGES[*]} into $VENV (network? PyPI reachable?)" >&2
        exit 1
    fi
    if ! ref_ok; then
        echo "error: $REF_PY still cannot 'import peng3dnet, msgpack' after installing; see the output above" >&2
        "$REF_PY" -c 'import peng3dnet, peng3dnet.ext.ping, msgpack' || true
        exit 1
    fi
fi

export PENG3DNET_REF_PYTHON="$REF_PY"
echo "==> PENG3DNET_REF_PYTHON=$PENG3DNET_REF_PYTHON PYGLET_SHADOW_WINDOW=$PYGLET_SHADOW_WINDOW"

echo "==> cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@"

echo "==> cargo test --workspace --doc"
cargo test --workspace --doc

# The examples that run on their own (each starts its own server on a free port).
for example in pingable_server classic game_loop; do
    echo "==> cargo run -p peng3dnet --example $example"
    cargo run -q -p peng3dnet --example "$example"
done

echo "==> bash scripts/test-python.sh (the Python package: maturin build, pytest)"
bash "$ROOT/scripts/test-python.sh"

echo "==> all tests passed"
