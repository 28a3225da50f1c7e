# Shared by scripts/demo and scripts/test: find a Python >= 3.12, make a virtualenv.

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

# Print the path of a Python >= 3.12: $PYTHON if set, else python3.13/python3.12 on
# PATH, else one that pyenv has installed, else python3 if it is new enough.
find_python() {
    if [ -n "${PYTHON:-}" ]; then
        python_ok "$PYTHON" || die "PYTHON=$PYTHON is not a Python >= 3.12"
        command -v "$PYTHON"
        return
    fi
    local candidate version prefix
    for candidate in python3.13 python3.12; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.[0-9]+)?$' | sort -rV); do
            prefix="$(pyenv prefix "$version" 2>/dev/null)" || continue
            for candidate in "$prefix/bin/python3" "$prefix/bin/python"; do
                if [ -x "$candidate" ] && python_ok "$candidate"; then
                    echo "$candidate"
                    return
                fi
            done
        done
    fi
    if command -v python3 >/dev/null 2>&1 && python_ok python3; then
        command -v python3
        return
    fi
    die "pgqueue needs Python >= 3.12 and none was found. Install one (for example 'pyenv install 3.12') or point PYTHON at it: PYTHON=/path/to/python3.12 $0"
}

# ensure_venv PYTHON DIR: create DIR as a virtualenv of PYTHON (if needed) and
# install this checkout into it, editable, with its dev extra.
ensure_venv() {
    local python="$1" venv="$2"
    if [ ! -x "$venv/bin/python" ] || ! python_ok "$venv/bin/python"; then
        step "Creating a virtualenv in $venv with $("$python" --version)"
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
    step "Installing pgqueue and its dev tools into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev]"
}
