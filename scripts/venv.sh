# Sourced by the other scripts: makes .venv (Python 3.13) and installs chatcore into it when needed.
# Usage: ensure_venv [extras]   e.g. ensure_venv dev
find_python() {
  for candidate in "${PYTHON:-}" python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "chatcore needs Python 3.13 (set PYTHON=/path/to/python3.13)" >&2; return 1
}

ensure_venv() {
  local extras="${1:-}" spec="." marker
  [ -n "$extras" ] && spec=".[$extras]"
  marker=".venv/.installed-${extras:-base}"
  if [ ! -x .venv/bin/python ]; then
    "$(find_python)" -m venv .venv
  fi
  # Reinstall when pyproject.toml changed since the last install.
  if [ ! -f "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e "$spec"
    touch "$marker"
  fi
}
