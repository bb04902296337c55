#!/usr/bin/env bash
# Run a command as on a machine that never ran the tests: the Debian packages that `invoke test` installs
# (Unicode data, fonts, Chromium) are hidden by a private mount namespace, and the suite's cache starts
# empty. Needs root (unshare -m). Usage: .ci/fresh_machine.sh bash -c 'COMMAND'
set -eu
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
hide=""
for d in /usr/share/unicode /usr/share/fonts /usr/lib/chromium; do
  [ -d "$d" ] && hide="$hide mount -t tmpfs none $d;"
done
[ -e /usr/bin/chromium ] && hide="$hide mount --bind /dev/null /usr/bin/chromium;"
export GUIDANCE_BENCH_CACHE="$cache/guidance-bench" XDG_CACHE_HOME="$cache"
exec unshare -m bash -c "$hide cd \"\$1\" && shift && exec \"\$@\"" fresh "$PWD" "$@"
