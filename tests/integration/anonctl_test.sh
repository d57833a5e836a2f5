#!/usr/bin/env bash
# anonctl end to end, as a new user runs it: `anonctl scrub` on captured requests (JSON,
# gzip, form, NDJSON, nested base64(gzip(JSON)), query string, headers) under the default
# conf/anonproxy.json, the refusals (400, 413, 415, 422) and their exit codes, and
# `anonctl check`. Prints "ok - …" / "not ok - …" per check; exits 1 if any failed.
# Needs `make` first ($BIN/anonctl, default bin/anonctl; conf/dev.key).
set -u
cd "$(dirname "$0")/../.." || exit 2

ANONCTL=${BIN:-bin}/anonctl
CONF=conf/anonproxy.json
. tests/integration/anonctl_lib.sh anonctl_test

# A JSON validator that is not ours: jq or python3, whichever is installed.
if command -v jq >/dev/null 2>&1; then
	json_valid() { jq -e . "$1" >/dev/null 2>&1; }
elif command -v python3 >/dev/null 2>&1; then
	json_valid() { python3 -m json.tool "$1" >/dev/null 2>&1; }
else
	json_valid() { return 2; }
fi
# check_json DESCRIPTION FILE
check_json() {
	json_valid "$2"
	case $? in
	0) ok "$1" ;;
	2) echo "ok - $1 # SKIP neither jq nor python3 installed" ;;
	*) not_ok "$1" ;;
	esac
}

absent() { ! grep -qiF -e "$1" "${@:2}"; }
# count_is N REGEX FILE: exactly N lines match.
count_is() { [ "$(grep -cE -e "$2" "$3")" = "$1" ]; }
# check_refused WHAT STATUS: the last scrub refused the request, exit 1, with STATUS.
check_refused() {
	check "$1: exit 1" rc_is 1
	check "$1: refused ($2)" grep_q "^anonctl: refused \\($2\\)" "$T/err"
}

IMEI=490154203237518
MAC=00:1A:2B:3C:4D:5E
OAID=a1b2c3d4-e5f6-4789-abcd-ef0123456789
IP=203.0.113.77

# ---- a JSON capture ----
cat >"$T/event.json" <<EOF
{"event":"app_launch","ts":1700000000000,"app_version":"5.2.1",
 "device":{"imei":"$IMEI","mac":"$MAC","oaid":"$OAID","os":"Android 13"},
 "net":{"ip":"$IP"},"loc":{"lat":48.858844}}
EOF
scrub -c "$CONF" --route /v1/track <"$T/event.json"
check "json: exit 0" rc_is 0
check_json "json: stdout is valid JSON" "$T/out"
check "json: raw IMEI not on stdout or stderr" absent "$IMEI" "$T/out" "$T/err"
check "json: raw MAC not on stdout or stderr" absent "$MAC" "$T/out" "$T/err"
check "json: MAC without separators not on stdout or stderr" \
	absent "${MAC//:/}" "$T/out" "$T/err"
check "json: raw OAID not on stdout or stderr" absent "$OAID" "$T/out" "$T/err"
check "json: raw IP not on stdout or stderr" absent "$IP" "$T/out" "$T/err"
for cls in imei mac oaid ip gps; do
	check "json: one finding line for class $cls" count_is 1 "^$cls +body " "$T/err"
done
check "json: five findings in all" grep_q '^anonctl: 5 findings, body rewritten' "$T/err"
check "json: IMEI hashed to 15 digits (format preserve)" \
	grep_q '"imei":"[0-9]{15}"' "$T/out"
check "json: MAC keeps its shape" \
	grep_q '"mac":"[0-9A-F]{2}(:[0-9A-F]{2}){5}"' "$T/out"
check "json: IP truncated to /24" grep_q "\"ip\":\"203\\.0\\.113\\.0\"" "$T/out"
check "json: latitude rounded to 2 decimals" grep_q '"lat":48\.86\}' "$T/out"
check "json: other fields untouched" \
	grep_q '"event":"app_launch","ts":1700000000000,"app_version":"5.2.1"' "$T/out"
cp "$T/out" "$T/first.json"
scrub -c "$CONF" --route /v1/track <"$T/event.json"
check "json: same input, same pseudonyms" cmp -s "$T/out" "$T/first.json"

# ---- query string and headers ----
scrub -c "$CONF" --route "/t?imei=$IMEI&v=2" </dev/null
check "query: exit 0" rc_is 0
check "query: imei replaced, other parameters kept" \
	grep_q '^query: imei=[0-9]{15}&v=2$' "$T/err"
check "query: raw IMEI not shown" absent "$IMEI" "$T/err" "$T/out"
check "query: finding line" count_is 1 '^imei +query +hash ' "$T/err"

scrub -c "$CONF" --route /t -H "X-Forwarded-For: $IP, 198.51.100.23" </dev/null
check "x-forwarded-for: exit 0" rc_is 0
check "x-forwarded-for: every address truncated" \
	grep_q '^header: X-Forwarded-For: 203\.0\.113\.0, 198\.51\.100\.0$' "$T/err"
check "x-forwarded-for: raw addresses not shown" absent "$IP" "$T/err"
check "x-forwarded-for: raw addresses not shown (2)" absent 198.51.100.23 "$T/err"

scrub -c "$CONF" --route /t -H "X-Device-Id: dev-$IMEI" </dev/null
check "x-device-id: hashed" grep_q '^header: X-Device-Id: [0-9a-f]{32}$' "$T/err"

# ---- gzip body ----
gzip -c "$T/event.json" >"$T/event.json.gz"
scrub -c "$CONF" --route /v1/track -H 'Content-Encoding: gzip' <"$T/event.json.gz"
check "gzip: exit 0" rc_is 0
if gzip -dc <"$T/out" >"$T/gunzipped" 2>/dev/null; then
	ok "gzip: stdout is gzip"
else
	not_ok "gzip: stdout is gzip"
fi
check_json "gzip: it gunzips to valid JSON" "$T/gunzipped"
check "gzip: scrubbed inside" grep_q '"imei":"[0-9]{15}"' "$T/gunzipped"
check "gzip: raw IMEI and MAC gone" absent "$IMEI" "$T/gunzipped" "$T/err"
check "gzip: raw MAC gone" absent "$MAC" "$T/gunzipped" "$T/err"

# ---- form body ----
printf 'event=launch&imei=%s&mac=%s&v=1' "$IMEI" "${MAC//:/%3A}" >"$T/form"
scrub -c "$CONF" --route /collect -H 'Content-Type: application/x-www-form-urlencoded' \
	<"$T/form"
check "form: exit 0" rc_is 0
check "form: imei and mac rewritten, the rest kept" \
	grep_q '^event=launch&imei=[0-9]{15}&mac=[0-9A-F]{2}(%3A[0-9A-F]{2}){5}&v=1$' "$T/out"
check "form: raw IMEI gone" absent "$IMEI" "$T/out" "$T/err"
check "form: raw MAC gone (encoded or not)" absent "${MAC//:/%3A}" "$T/out" "$T/err"
check "form: raw MAC gone (decoded)" absent "$MAC" "$T/out" "$T/err"

# ---- NDJSON, and a batch nested as base64(gzip(JSON)) the way SDKs send it ----
printf '{"imei":"%s"}\n{"mac":"%s"}\n' "$IMEI" "$MAC" >"$T/batch.ndjson"
scrub -c "$CONF" --route /batch -H 'Content-Type: application/x-ndjson' <"$T/batch.ndjson"
check "ndjson: exit 0" rc_is 0
check "ndjson: two lines out" count_is 2 '^\{' "$T/out"
check "ndjson: raw values gone" absent "$IMEI" "$T/out"
printf '[{"imei":"%s","oaid":"%s"}]' "$IMEI" "$OAID" | gzip -c | base64 -w0 >"$T/inner.b64"
printf '{"appid":"x","data_list":"%s"}' "$(cat "$T/inner.b64")" >"$T/nested.json"
scrub -c "$CONF" --route /sdk <"$T/nested.json"
check "nested data_list: exit 0" rc_is 0
check_json "nested data_list: valid JSON" "$T/out"
sed -E 's/.*"data_list":"([^"]*)".*/\1/' "$T/out" | base64 -d 2>/dev/null | gzip -dc \
	>"$T/inner.json" 2>/dev/null
check_json "nested data_list: opens to valid JSON" "$T/inner.json"
check "nested data_list: scrubbed inside" grep_q '"imei":"[0-9]{15}"' "$T/inner.json"
check "nested data_list: raw IMEI and OAID gone" absent "$IMEI" "$T/inner.json" "$T/err"
check "nested data_list: raw OAID gone" absent "$OAID" "$T/inner.json"
check "nested data_list: finding path through the codecs" \
	grep_q 'data_list>base64>gzip>\$\[0\]\.imei' "$T/err"

# ---- refusals: never forwarded as they are ----
printf '{"imei":"%s",' "$IMEI" >"$T/corrupt.json"
scrub -c "$CONF" --route /t <"$T/corrupt.json"
check_refused "corrupt JSON" 400
check "corrupt JSON: nothing on stdout" test ! -s "$T/out"
check "corrupt JSON: raw IMEI not echoed" absent "$IMEI" "$T/err"

printf 'imei %s' "$IMEI" >"$T/plain"
scrub -c "$CONF" --route /t -H 'Content-Type: text/plain' <"$T/plain"
check_refused "unknown content type" 415
check "unknown content type: nothing on stdout" test ! -s "$T/out"

scrub -c "$CONF" --route /t -H 'Content-Encoding: br' <"$T/event.json"
check_refused "unsupported Content-Encoding" 415

printf 'garbage' >"$T/notgzip"
scrub -c "$CONF" --route /t -H 'Content-Encoding: gzip' <"$T/notgzip"
check_refused "body that is not gzip" 400

# decoded_bytes is 8 MiB in the default configuration: 9 MB inside 9 kB of gzip
{
	printf '{"a":"'
	head -c 9000000 /dev/zero | tr '\0' a
	printf '"}'
} | gzip -c >"$T/bomb.gz"
scrub -c "$CONF" --route /t -H 'Content-Encoding: gzip' <"$T/bomb.gz"
check_refused "gzip over decoded_bytes" 413

# ---- configurations: the default, a copy with "scan", broken ones ----
mkdir "$T/conf"
cp conf/dev.key "$T/conf/dev.key"
cp -r conf/profiles "$T/conf/profiles" # the SDK profiles conf/anonproxy.json includes
sed 's/"unknown_content": "reject"/"unknown_content": "scan"/' "$CONF" >"$T/conf/scan.json"
scrub -c "$T/conf/scan.json" --route /t -H 'Content-Type: text/plain' <"$T/plain"
check_refused "unknown content, scan, identifier inside" 422
printf 'hello world, version 5.2.1' >"$T/harmless"
scrub -c "$T/conf/scan.json" --route /t -H 'Content-Type: text/plain' <"$T/harmless"
check "unknown content, scan, nothing inside: exit 0" rc_is 0
check "unknown content, scan, nothing inside: passed as it is" cmp -s "$T/out" "$T/harmless"

"$ANONCTL" check -c "$CONF" >"$T/out" 2>"$T/err"
rc=$?
check "check: the default configuration is valid (exit 0)" rc_is 0
check "check: says ok" grep_q "^conf/anonproxy.json: ok \(2 rulesets, [0-9]+ routes" "$T/out"

# a typo in an action: the message names the key path
sed '0,/"action": "hash"/s//"action": "hsah"/' "$CONF" >"$T/conf/typo.json"
scrub -c "$T/conf/typo.json" --route /t <"$T/event.json"
check "bad config: scrub exits 2" rc_is 2
check "bad config: the message names the key path" \
	grep_q 'typo.json: rulesets\.analytics\.classes\.imei\.action: unknown action "hsah"' \
	"$T/err"
check "bad config: nothing on stdout" test ! -s "$T/out"
"$ANONCTL" check -c "$T/conf/typo.json" >"$T/out" 2>"$T/err"
rc=$?
check "bad config: check fails" test "$rc" != 0
check "bad config: check names the key path" \
	grep_q 'rulesets\.analytics\.classes\.imei\.action: unknown action' "$T/err"

sed 's/"json_depth": 64/"json_dpeth": 64/' "$CONF" >"$T/conf/unknown.json"
scrub -c "$T/conf/unknown.json" --route /t <"$T/event.json"
check "misspelt key: exit 2" rc_is 2
check "misspelt key: named" grep_q 'limits\.json_dpeth: unknown key' "$T/err"

cp "$CONF" "$T/conf/open.json"
cp conf/dev.key "$T/conf/open.key"
chmod 644 "$T/conf/open.key"
sed -i 's/"dev": "dev.key"/"dev": "open.key"/' "$T/conf/open.json"
scrub -c "$T/conf/open.json" --route /t <"$T/event.json"
check "world-readable key: exit 2" rc_is 2
check "world-readable key: refused, the file named" \
	grep_q 'open\.key\): readable by others \(mode 0644\)' "$T/err"

scrub -c "$T/conf/missing.json" --route /t <"$T/event.json"
check "missing config file: exit 2" rc_is 2
check "missing config file: named" grep_q 'missing\.json: No such file' "$T/err"

scrub -c "$CONF" </dev/null
check "usage error: exit 2" rc_is 2
check "usage error: usage shown" grep_q '^usage: anonctl' "$T/err"

finish
