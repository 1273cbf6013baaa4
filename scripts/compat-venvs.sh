#!/usr/bin/env bash
# Builds throwaway venvs with older runpod SDK lines (1.6.2, 1.7.13) for the compatibility tests.
# Prints `export` lines for the ones that installed; a line that cannot install is reported and skipped,
# and its tests then skip with the reason.
set -uo pipefail
root=${COMPAT_VENV_ROOT:-.cache/compat}
mkdir -p "$root"
for version in 1.6.2 1.7.13; do
    dir="$root/runpod-$version"
    var="GPUSERVE_COMPAT_VENV_${version//./_}"
    if [[ ! -x "$dir/bin/python" ]] || ! "$dir/bin/python" -c "import runpod" 2>/dev/null; then
        rm -rf "$dir"
        if ! { python3 -m venv "$dir" && "$dir/bin/pip" install -q "runpod==$version"; } >"$dir.log" 2>&1; then
            echo "compat-venvs: runpod==$version did not install (see $dir.log); its tests will skip" >&2
            continue
        fi
    fi
    echo "export $var=$(cd "$dir" && pwd)"
done
