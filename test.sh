#!/bin/sh
# Runs the whole test suite: unit tests and integration tests against a real
# lxssd (as root). Extra arguments go to pytest.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
"$here/setup.sh" deps
cd "$here"
exec "$here/.venv/bin/python3" -m pytest "$@"
