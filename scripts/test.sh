#!/usr/bin/env bash
# The test suite: the Rust workspace (release mode: the crypto tests are slow in debug), then
# the Python package built from this checkout into a virtual environment (maturin) and its
# pytest suite, which also drives the `hecc serve` binary the first step built and a local
# two-node Ray cluster. What the Python side needs comes from the package registry.
# Environment: VENV [.venv-test], PYTHON [python3] (the interpreter the environment is made from).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace --locked

VENV=${VENV:-.venv-test}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "numpy>=1.21" "ray>=2.9"
# maturin's build hook looks for its own executable on PATH.
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pip install --quiet --no-build-isolation ./python
HECC_BIN=target/release/hecc "$VENV/bin/python" -m pytest -q python/tests
