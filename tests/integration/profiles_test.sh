#!/usr/bin/env bash
# `anonctl scrub` with SDK profiles (conf/profiles/sdk.json, included by the default
# conf/anonproxy.json), as a user checks a capture against one: the fixtures in
# tests/fixtures/sdk/ through the routes that select each profile, with the findings on
# stderr, no planted identifier on stdout, the signatures right (checked by python3 when
# it is installed), opaque payloads refused with 415 and exit 1, or passed unchanged by a
# route whose policy is "pass". Prints "ok - …" / "not ok - …"; exits 1 if any failed.
set -u
cd "$(dirname "$0")/../.." || exit 2

ANONCTL=${BIN:-bin}/anonctl
CONF=conf/anonproxy.json
FIX=tests/fixtures/sdk
. tests/integration/anonctl_lib.sh profiles_test
FORM='Content-Type: application/x-www-form-urlencoded'

# What make_fixtures.py plants (and the MAC without its separators).
PLANTED="356938035643809 490154203237518 A10000009296F2 A4:5E:60:C2:17:9B A45E60C2179B
9774d56d682e549c f3b8c2d1-6e4a-4c55-9a0b-2d7e8f9a1b3c 38400000-8cf0-11bd-b23e-10b96e40000d
6d92078a-8246-4ba4-ae5b-76104861e7dc dev-7f3a9c21e5b84d06 user-4401982 203.0.113.77"
# none_planted FILE: no planted value in FILE, as it stands.
none_planted() {
	for v in $PLANTED; do grep -qF -e "$v" "$1" && return 1; done
	return 0
}

# python3 opens the layers (form, base64, gzip, JSON) and checks the signatures.
have_py=false
command -v python3 >/dev/null 2>&1 && have_py=true
# py_check DESCRIPTION SCRIPT: ok when the script exits 0 on $T/out.
py_check() {
	if ! $have_py; then
		echo "ok - $1 # SKIP python3 not installed"
		return
	fi
	if python3 -c "$2" "$T/out" "$PLANTED" >"$T/py" 2>&1; then ok "$1"; else
		not_ok "$1"
		sed 's/^/#   python: /' "$T/py" | head -10
	fi
}
PY_PRELUDE='
import sys, urllib.parse, base64, gzip, json, hashlib
body = open(sys.argv[1], "rb").read()
planted = sys.argv[2].split()
def clean(what, text):
    for v in planted:
        assert v not in text, "%s holds %s" % (what, v)
def form(b):
    return dict(urllib.parse.parse_qsl(b.decode(), keep_blank_values=True, strict_parsing=True))
def java_hash(s):
    h = 0
    b = s.encode("utf-16-le")
    for i in range(0, len(b), 2):
        h = (31 * h + int.from_bytes(b[i:i + 2], "little")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h
'

# ---- Sensors: crc over data_list, base64(gzip(JSON)), "##" pairs ----
scrub -c "$CONF" --route '/sa?project=default' -H "$FORM" <"$FIX/sensors_track.form"
check "sensors: exit 0" rc_is 0
check "sensors: the route's profile" grep_q '^route: \*/sa -> upstream sink, ruleset analytics\+sensors$' "$T/err"
check "sensors: findings inside the pairs" grep_q '^imei +body +hash .*\$ios_install_source>pairs:imei_slot1$' "$T/err"
check "sensors: no planted identifier on stdout" none_planted "$T/out"
check "sensors: none on stderr either" none_planted "$T/err"
py_check "sensors: crc is the Java hashCode of the new data_list, no identifier inside" "$PY_PRELUDE
f = form(body)
assert int(f['crc']) == java_hash(f['data_list']), 'crc'
raw = gzip.decompress(base64.b64decode(f['data_list'], validate=True)).decode()
clean('data_list', raw)
ev = json.loads(raw)
assert ev[0]['properties']['\$ios_install_source'].count('##') == 8
"

# gzip=9 and gzip=13: the SDK's own encryption, opaque
for g in 9 13; do
	scrub -c "$CONF" --route /sa -H "$FORM" <"$FIX/sensors_encrypted$g.form"
	check "sensors gzip=$g: refused, exit 1" rc_is 1
	check "sensors gzip=$g: 415, opaque" grep_q '^anonctl: refused \(415\): opaque payload refused on this route' "$T/err"
	check "sensors gzip=$g: the rule named" grep_q 'opaque:sensors-encrypted$' "$T/err"
done
mkdir -p "$T/conf"
cp conf/dev.key "$T/conf/dev.key"
cp -r conf/profiles "$T/conf/profiles"
sed 's/"opaque": "refuse"/"opaque": "pass"/' "$CONF" >"$T/conf/pass.json"
scrub -c "$T/conf/pass.json" --route /sa -H "$FORM" <"$FIX/sensors_encrypted9.form"
check "sensors gzip=9, opaque pass: exit 0" rc_is 0
check "sensors gzip=9, opaque pass: forwarded as it came" cmp -s "$T/out" "$FIX/sensors_encrypted9.form"

# ---- Amplitude: checksum = md5(v + client + e + upload_time) ----
scrub -c "$CONF" --host api.amplitude.com --route / -H "$FORM" <"$FIX/amplitude_legacy.form"
check "amplitude legacy: exit 0" rc_is 0
check "amplitude legacy: no planted identifier" none_planted "$T/out"
py_check "amplitude legacy: checksum is the MD5 of the new values" "$PY_PRELUDE
f = form(body)
want = hashlib.md5((f['v'] + f['client'] + f['e'] + f['upload_time']).encode()).hexdigest()
assert f['checksum'] == want, (f['checksum'], want)
clean('e', f['e'])
json.loads(f['e'])
"
scrub -c "$CONF" --host api2.amplitude.com --route /2/httpapi <"$FIX/amplitude_v2.json"
check "amplitude v2: exit 0" rc_is 0
check "amplitude v2: no planted identifier" none_planted "$T/out"
py_check "amplitude v2: valid JSON, IP truncated" "$PY_PRELUDE
j = json.loads(body)
assert j['events'][0]['ip'] == '203.0.113.0'
"

# ---- Mixpanel, Adjust, Segment ----
scrub -c "$CONF" --host api.mixpanel.com --route /track -H "$FORM" <"$FIX/mixpanel_track.form"
check "mixpanel: exit 0" rc_is 0
py_check "mixpanel: data is base64 of JSON with nothing planted" "$PY_PRELUDE
clean('form', body.decode())
clean('data', base64.b64decode(form(body)['data']).decode())
"
scrub -c "$CONF" --host api.mixpanel.com --route /track -H "$FORM" -H 'Content-Encoding: gzip' \
	<"$FIX/mixpanel_track.form.gz"
check "mixpanel gzip'd: exit 0" rc_is 0
py_check "mixpanel gzip'd: re-compressed, nothing planted inside" "$PY_PRELUDE
b = gzip.decompress(body)
clean('data', base64.b64decode(form(b)['data']).decode())
"
scrub -c "$CONF" --host app.adjust.com --route /session -H "$FORM" <"$FIX/adjust_session.form"
check "adjust: exit 0" rc_is 0
check "adjust: no planted identifier" none_planted "$T/out"
check "adjust: app_token kept" grep_q '^app_token=abc123def456&' "$T/out"
scrub -c "$CONF" --host api.segment.io --route /v1/batch <"$FIX/segment_batch.json"
check "segment: exit 0" rc_is 0
check "segment: no planted identifier" none_planted "$T/out"

# ---- Firebase / GA4: gzip'd protobuf ----
scrub -c "$CONF" --host app-measurement.com --route /a -H "$FORM" -H 'Content-Encoding: gzip' \
	<"$FIX/firebase_batch.pb.gz"
check "firebase: exit 0" rc_is 0
check "firebase: the advertising id found by its field number" grep_q '^gaid +body +hash .*body>pb:1\.19$' "$T/err"
py_check "firebase: re-compressed, nothing planted inside" "$PY_PRELUDE
clean('protobuf', gzip.decompress(body).decode('latin-1'))
"

# ---- Umeng, JPush: opaque ----
scrub -c "$CONF" --host ulogs.umeng.com --route /unify_logs -H 'Content-Type: application/octet-stream' \
	-H 'Msg-Type: envelope/json' <"$FIX/umeng_envelope.bin"
check "umeng: refused, exit 1" rc_is 1
check "umeng: 415" grep_q '^anonctl: refused \(415\)' "$T/err"
scrub -c "$T/conf/pass.json" --host stats.jpush.cn --route /v3/report \
	-H 'Content-Type: application/octet-stream' <"$FIX/jpush_report.bin"
check "jpush, opaque pass: exit 0" rc_is 0
check "jpush, opaque pass: forwarded as it came" cmp -s "$T/out" "$FIX/jpush_report.bin"

# ---- a profile in configuration alone: a new SDK made of existing pieces ----
cat >"$T/conf/new.json" <<'EOF'
{
  "keys": { "active": "dev", "files": { "dev": "dev.key" } },
  "rulesets": { "base": { "classes": { "imei": { "action": "hash", "format": "preserve" } } } },
  "profiles": {
    "acme": {
      "fields": [
        { "keys": ["p"], "codec": ["base64", { "name": "pairs", "separator": "|", "assign": ":" }] },
        { "class": "imei", "keys": ["dev_imei"] }
      ],
      "signers": [{ "field": "sig", "algorithm": "md5_hex", "over": ["p", "ts"] }]
    }
  },
  "routes": [{ "path": "/", "upstream": "sink", "ruleset": "base", "profile": "acme" }]
}
EOF
P=$(printf 'dev_imei:356938035643809|app:demo' | base64 -w0)
S=$(printf '%s' "${P}1700000000" | md5sum | cut -d' ' -f1)
printf 'p=%s&ts=1700000000&sig=%s' "$(printf %s "$P" | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')" "$S" >"$T/new.form"
scrub -c "$T/conf/new.json" --route /acme -H "$FORM" <"$T/new.form"
check "new SDK in configuration: exit 0" rc_is 0
check "new SDK in configuration: the IMEI found inside base64 pairs" grep_q '^imei +body +hash .*p>base64>pairs:dev_imei$' "$T/err"
py_check "new SDK in configuration: re-signed, IMEI gone" "$PY_PRELUDE
f = form(body)
inner = base64.b64decode(f['p']).decode()
clean('p', inner)
assert inner.endswith('|app:demo') and inner.startswith('dev_imei:')
assert f['sig'] == hashlib.md5((f['p'] + f['ts']).encode()).hexdigest()
"

finish
