# Sourced by .ci/demo and .ci/test: make .venv (Python 3.11+) and install the
# project into it, again only when pyproject.toml changes. Usage: source .ci/venv.sh [extra]
extra="${1:-}"
python_bin=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python_bin=$(command -v "$candidate")
    break
  fi
done
if [ -z "$python_bin" ]; then
  echo "Countersign needs Python 3.11 or newer (Django 5.2); none was found on PATH." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
# The SDK (sdk/python) goes in with the test extra: its tests run in the main suite.
stamp=".venv/.installed-$(cat pyproject.toml sdk/python/pyproject.toml | sha256sum | cut -c1-16)${extra:+-$extra}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extra:+[$extra]}"
  if [ "$extra" = test ]; then
    .venv/bin/python -m pip install --quiet -e "./sdk/python[langgraph,langchain,mcp,openai-agents]"
  fi
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
