#!/usr/bin/env bash
# Runs a command (the daemon tests) and fails if it left new crad-* folders in the temp dir:
# tests must remove what they make, also when they fail. The check compares the temp dir before
# and after, so a test run of someone else's on the same machine at the same time can show up too:
# the folder's prefix names the test helper or file that made it.
set -uo pipefail
tmp="${TMPDIR:-/tmp}"
tmp="${tmp%/}"

# crad-tiny-models-<16 hex> is the generated-model cache (test/fixtures/tiny-models.ts), kept on purpose.
crad_dirs() {
  find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'crad-*' ! -name 'crad-tiny-models-????????????????' | sort
}

before="$(crad_dirs)"
"$@"
status=$?
left="$(comm -13 <(printf '%s\n' "$before") <(crad_dirs) | sed '/^$/d')"
if [ -n "$left" ]; then
  echo >&2
  echo "check-temp-leftovers: the run left these folders in $tmp (a test or helper did not remove them):" >&2
  printf '  %s\n' $left >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
