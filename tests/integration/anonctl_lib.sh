# What the anonctl script tests share, sourced after they set ANONCTL: a scratch directory
# $T (removed at exit), TAP-like "ok - …" / "not ok - …" checks counted in $failed, and
# `scrub`, which runs `anonctl scrub` with stdout to $T/out, stderr to $T/err and the exit
# status in $rc. `finish` prints the summary and exits 1 if any check failed.
# Usage: . tests/integration/anonctl_lib.sh NAME
if [ ! -x "$ANONCTL" ] || [ ! -f conf/dev.key ]; then
	echo "not ok - $ANONCTL or conf/dev.key missing: run make first"
	exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT

failed=0
ok() { echo "ok - $*"; }
not_ok() {
	echo "not ok - $*"
	failed=$((failed + 1))
	# what anonctl said, for whoever reads the log
	[ -s "$T/err" ] && sed 's/^/#   stderr: /' "$T/err" | head -20
}
# check DESCRIPTION COMMAND...: ok when COMMAND succeeds.
check() {
	local d=$1
	shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}
scrub() {
	"$ANONCTL" scrub "$@" >"$T/out" 2>"$T/err"
	rc=$?
}
rc_is() { [ "$rc" = "$1" ]; }
grep_q() { grep -qE -e "$1" "$2"; }

finish() {
	if [ "$failed" -ne 0 ]; then
		echo "# $failed check(s) failed"
		exit 1
	fi
	echo "# all checks passed"
}
