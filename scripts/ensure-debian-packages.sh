#!/usr/bin/env bash
# Installs the Debian packages that the tests need, when their command is missing:
#   bash scripts/ensure-debian-packages.sh tmux promtool=prometheus [more...]
# Each argument is a command that is also the name of its Debian package (tmux), or
# COMMAND=PACKAGE when they differ (promtool is in package prometheus).
# Commands already on PATH are left alone, and apt is not touched at all when every
# command is there. Otherwise: one `apt-get update`, then `apt-get install -y` of the
# missing ones (through sudo when not root).
set -euo pipefail

missing=()
commands=()
for argument in "$@"; do
    command="${argument%%=*}"
    package="${argument#*=}"
    if command -v "$command" >/dev/null 2>&1; then
        echo "==> $command: $(command -v "$command")"
    else
        commands+=("$command")
        # Each package once, whichever commands it provides.
        case " ${missing[*]:-} " in
            *" $package "*) ;;
            *) missing+=("$package") ;;
        esac
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} missing and apt-get not found; install ${missing[*]} by hand" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: ${missing[*]} missing; installing needs root or sudo" >&2
        exit 1
    fi
    as_root=(sudo)
fi

echo "==> installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
for command in "${commands[@]}"; do
    if ! command -v "$command" >/dev/null 2>&1; then
        echo "error: $command still not found after installing ${missing[*]}" >&2
        exit 1
    fi
done
