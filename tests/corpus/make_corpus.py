#!/usr/bin/env python3
"""Writes the leak corpus: one raw HTTP/1.1 request per capture (<name>.http) and
manifest.tsv, the identifiers planted in them. Standard library only; the output is
deterministic (gzip mtime 0), so running it again changes nothing unless this file changed.
The captures are committed; tests/integration/leak_test.c reads them, not this script.

Every value here is made up: documentation IP ranges (RFC 5737, RFC 3849), IMEIs and
ICCIDs with valid Luhn digits but invented serials, random UUIDs."""
import base64
import gzip
import hashlib
import json
import os
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
manifest = []  # (capture, class, value, where)


def luhn(body):
    """body + its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def plant(capture, cls, value, where):
    manifest.append((capture, cls, value, where))
    return value


def js(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def form(pairs):
    # What Android/iOS form encoders send: unreserved bytes as they are, the rest %XX.
    return "&".join(k + "=" + urllib.parse.quote(v, safe="-_.~") for k, v in pairs)


def write(name, method, target, host, headers, body):
    if isinstance(body, str):
        body = body.encode()
    head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, host)
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    head += "Content-Length: %d\r\n\r\n" % len(body)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(head.encode() + body)


# ---- Segment: POST /v1/batch, batch[] of calls with context.device, context.ip, location.
c = "segment_batch.http"
dev = {
    "id": plant(c, "android_id", "3f6b2e9a81c4d057", "$.batch[*].context.device.id"),
    "advertisingId": plant(c, "gaid", "cdda802e-fb9c-47ad-9866-0794d394c912",
                           "$.batch[*].context.device.advertisingId"),
    "adTrackingEnabled": True,
    "manufacturer": "samsung",
    "model": "SM-G991B",
    "name": "o1s",
    "type": "android",
    "token": plant(c, "push_token",
                   "7a9f1c3e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a",
                   "$.batch[*].context.device.token"),
}
ctx = {
    "app": {"name": "Shop", "version": "5.2.0", "build": "5200", "namespace": "com.example.shop"},
    "device": dev,
    "ip": plant(c, "ip", "198.51.100.87", "$.batch[*].context.ip"),
    "library": {"name": "analytics-android", "version": "4.11.3"},
    "locale": "en-US",
    "location": {
        "latitude": float(plant(c, "gps", "40.712776", "$.batch[*].context.location.latitude")),
        "longitude": float(plant(c, "gps", "-74.005974", "$.batch[*].context.location.longitude")),
        "speed": 0,
    },
    "network": {"bluetooth": False, "carrier": "T-Mobile", "cellular": True, "wifi": False},
    "os": {"name": "Android", "version": "14"},
    "screen": {"density": 2.75, "height": 2400, "width": 1080},
    "timezone": "America/New_York",
    "userAgent": "Dalvik/2.1.0 (Linux; U; Android 14; SM-G991B Build/UP1A.231005.007)",
}
anon = plant(c, "device_id", "507f191e-810c-4197-9de2-3f4e1b2a6c8d", "$.batch[*].anonymousId")
uid = plant(c, "user_id", "u-88412-kestrel", "$.batch[*].userId")
batch = {
    "batch": [
        {"type": "track", "event": "Order Completed", "messageId": "ajs-8c3b5b9e01f2",
         "anonymousId": anon, "userId": uid, "timestamp": "2026-11-22T18:40:01.123Z",
         "properties": {"order_id": "50314b8e", "total": 27.5, "currency": "USD"},
         "context": ctx, "integrations": {}},
        {"type": "screen", "name": "Checkout", "messageId": "ajs-8c3b5b9e01f3",
         "anonymousId": anon, "userId": uid, "timestamp": "2026-11-22T18:40:02.456Z",
         "properties": {}, "context": ctx, "integrations": {}},
    ],
    "sentAt": "2026-11-22T18:40:03.000Z",
}
write(c, "POST", "/v1/batch", "api.segment.io",
      [("Content-Type", "application/json"),
       ("Authorization", "Basic " + base64.b64encode(b"wk_4c2a1d9e:").decode()),
       ("User-Agent", "analytics-android/4.11.3")], js(batch))

# ---- Amplitude HTTP API v2: {api_key, events:[{device_id, idfa, adid, android_id, ip, ...}]}
c = "amplitude_v2.http"
events = [
    {"user_id": plant(c, "user_id", "amp-user-99172", "$.events[0].user_id"),
     "device_id": plant(c, "device_id", "C8F9E604-F01A-4BD9-95C6-8E5357DF265D", "$.events[0].device_id"),
     "event_type": "watch_tutorial", "time": 1795373437000, "session_id": 1795373400000,
     "insert_id": "5f0adeff-6668-4427-8d02-57d803a2b841",
     "platform": "iOS", "os_name": "ios", "os_version": "17.1", "device_model": "iPhone15,2",
     "carrier": "AT&T", "country": "United States", "language": "en",
     "idfa": plant(c, "idfa", "AEBE52E7-03EE-455A-B3C4-E57283966239", "$.events[0].idfa"),
     "idfv": plant(c, "idfv", "D1E7B3A9-5C2F-4E8D-A6B4-9F0C1E2D3A4B", "$.events[0].idfv"),
     "ip": plant(c, "ip", "203.0.113.45", "$.events[0].ip"),
     "location_lat": float(plant(c, "gps", "37.774929", "$.events[0].location_lat")),
     "location_lng": float(plant(c, "gps", "-122.419416", "$.events[0].location_lng")),
     "event_properties": {"source": "notification"}},
    {"user_id": None,
     "device_id": plant(c, "device_id", "4b9e0d51-2d7a-4c8e-bd3f-9a1c6e2f7b40R", "$.events[1].device_id"),
     "event_type": "session_start", "time": 1795373439000, "session_id": 1795373439000,
     "platform": "Android", "os_name": "android", "os_version": "13", "device_brand": "google",
     "device_manufacturer": "Google", "device_model": "Pixel 7",
     "adid": plant(c, "gaid", "38400000-8cf0-11bd-b23e-10b96e40000d", "$.events[1].adid"),
     "android_id": plant(c, "android_id", "a1b2c3d4e5f60718", "$.events[1].android_id"),
     "ip": plant(c, "ip", "2001:db8:85a3::8a2e:370:7334", "$.events[1].ip")},
]
write(c, "POST", "/2/httpapi", "api2.amplitude.com",
      [("Content-Type", "application/json"), ("Accept", "*/*")],
      js({"api_key": "4f1c3b2a0e9d8c7b6a5f4e3d2c1b0a99", "events": events,
          "options": {"min_id_length": 5}}))

# ---- Mixpanel: POST /track?ip=1, form data=<base64(JSON array)>; distinct_id "$device:<id>".
c = "mixpanel_track.http"
mdev = plant(c, "device_id", "5d1c0b7e-9a4f-4c2b-8e3d-7f6a5b4c3d2e",
             "form:data>base64>$[*].properties.$device_id and distinct_id ($device:…)")
mix = [{"event": "App Open", "properties": {
    "token": "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a", "time": 1795373437, "distinct_id": "$device:" + mdev,
    "$device_id": mdev, "$insert_id": "x1y2z3w4v5u6t7s8",
    "$ios_ifa": plant(c, "idfa", "1E2DFA89-496A-47FD-9941-DF1FC4E6484A",
                      "form:data>base64>$[*].properties.$ios_ifa"),
    "$os": "iOS", "$os_version": "17.1", "$model": "iPhone14,2", "$manufacturer": "Apple",
    "$carrier": "Verizon", "$wifi": True, "$screen_width": 390, "$screen_height": 844,
    "mp_lib": "swift", "$lib_version": "4.1.4", "$app_version_string": "3.8.1"}},
    {"event": "Purchase", "properties": {
        "token": "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a", "time": 1795373490, "distinct_id": "$device:" + mdev,
        "$device_id": mdev, "$insert_id": "a9b8c7d6e5f4g3h2", "amount": 4.99, "mp_lib": "swift"}}]
xff = plant(c, "ip", "192.0.2.146", "header:X-Forwarded-For")
write(c, "POST", "/track?ip=1&verbose=1", "api.mixpanel.com",
      [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
       ("X-Forwarded-For", xff)],
      form([("data", base64.b64encode(js(mix).encode()).decode())]))

# ---- Adjust: POST /session, form; mac_md5/mac_sha1 are digests of the MAC; callback_params
# and partner_params hold JSON objects as strings.
c = "adjust_session.http"
mac = plant(c, "mac", "00:1A:2B:3C:4D:5E", "form:mac_md5 = md5(lowercase, no separators), mac_sha1 = sha1(as written)")
imei2 = luhn("86475503123456")
cb = {"user_phone": plant(c, "phone", "+8613912345678", "form:callback_params>json.user_phone"),
      "device_imei": plant(c, "imei", imei2, "form:callback_params>json.device_imei"),
      "order": "o-2211"}
pp = {"wifi_mac": plant(c, "mac", "3C:5A:B4:01:02:03", "form:partner_params>json.wifi_mac"),
      "client_ip": plant(c, "ip", "203.0.113.201", "form:partner_params>json.client_ip"),
      "campaign": "winter"}
pairs = [
    ("app_token", "4w565xzmb54d"), ("environment", "production"), ("event_buffering_enabled", "0"),
    ("gps_adid", plant(c, "gaid", "df6c5653-080f-4c2c-9d0e-3c2b8f1a7e64", "form:gps_adid")),
    ("android_id", plant(c, "android_id", "5e8f16062ea3cd2c", "form:android_id")),
    ("android_uuid", plant(c, "device_id", "0c8b7f2e-4a1d-4e6b-9f3c-2d5a8e7b1c09", "form:android_uuid")),
    ("mac_md5", hashlib.md5(mac.replace(":", "").lower().encode()).hexdigest()),
    ("mac_sha1", hashlib.sha1(mac.encode()).hexdigest()),
    ("imei", plant(c, "imei", luhn("35693803564380"), "form:imei")),
    ("oaid", plant(c, "oaid", "a6e2c4f1-7b3d-4e59-8c2a-1f0e9d8c7b6a", "form:oaid")),
    ("idfa", plant(c, "idfa", "6D92078A-8246-4BA4-AE5B-76104861E7DC", "form:idfa")),
    ("device_type", "phone"), ("device_name", "SM-A546B"), ("os_name", "android"),
    ("os_version", "14"), ("country", "CN"), ("language", "zh"), ("tracking_enabled", "1"),
    ("created_at", "2026-11-22T18:42:37.627Z+0800"), ("sent_at", "2026-11-22T18:42:37.901Z+0800"),
    ("callback_params", js(cb)), ("partner_params", js(pp)),
]
write(c, "POST", "/session", "app.adjust.com",
      [("Content-Type", "application/x-www-form-urlencoded"), ("Client-SDK", "android4.38.0")],
      form(pairs))


# ---- A Chinese-SDK-style device block, plain JSON and gzip'd.
def cn_block(c, v, gz):
    dev = {
        "imei": plant(c, "imei", v["imei"], "$.device.imei"),
        "imsi": plant(c, "imsi", v["imsi"], "$.device.imsi"),
        "mac": plant(c, "mac", v["mac"], "$.device.mac"),
        "oaid": plant(c, "oaid", v["oaid"], "$.device.oaid"),
        "iccid": plant(c, "iccid", v["iccid"], "$.device.iccid"),
        "bssid": plant(c, "bssid", v["bssid"], "$.device.bssid"),
        "android_id": plant(c, "android_id", v["android_id"], "$.device.android_id"),
        "serial": plant(c, "serial", v["serial"], "$.device.serial"),
        "phone": plant(c, "phone", v["phone"], "$.device.phone"),
        "brand": "Xiaomi", "model": "23049RAD8C", "os": "Android", "os_version": "13",
        "resolution": "1220*2712", "carrier": "中国移动", "network": "wifi",
        "wifi_ssid": "TP-LINK_5G",
    }
    doc = {
        "header": {"appkey": "5f8a3c2e1d0b9a8f7e6d5c4b", "sdk_version": "9.6.3", "channel": "xiaomi",
                   "app_version": "7.12.0", "ts": 1795373437901},
        "device": dev,
        "lbs": {"lat": float(plant(c, "gps", v["lat"], "$.lbs.lat")),
                "lng": float(plant(c, "gps", v["lng"], "$.lbs.lng")), "accuracy": 35.0},
        "client_ip": plant(c, "ip", v["ip"], "$.client_ip"),
        "events": [{"id": "launch", "ts": 1795373437001, "du": 0},
                   {"id": "page_view", "ts": 1795373439412, "du": 2411, "page": "home"}],
    }
    body = js(doc).encode()
    hdrs = [("Content-Type", "application/json;charset=UTF-8"),
            ("X-Device-Id", plant(c, "device_id", v["hdr"], "header:X-Device-Id")),
            ("User-Agent", "okhttp/4.12.0")]
    if gz:
        body = gzip.compress(body, 9, mtime=0)
        hdrs.insert(1, ("Content-Encoding", "gzip"))
    udid = plant(c, "device_id", v["udid"], "query:udid")
    write(c, "POST", "/api/v3/collect?udid=%s&sdk=android" % udid, "log.example.cn", hdrs, body)


cn_block("cn_device_block.http", {
    "imei": luhn("86123405012345"), "imsi": "460011234567890", "mac": "5C:CF:7F:8A:3B:21",
    "oaid": "7c4f9e2a1b3d5e6f", "iccid": luhn("8986011234567890123"), "bssid": "3c:46:d8:1a:2b:3c",
    "android_id": "8f3e2d1c0b9a8776", "serial": "R58N12ABCDE", "phone": "13812345678",
    "lat": "31.230416", "lng": "121.473701", "ip": "203.0.113.118",
    "hdr": "cn-dev-77a3f9c2e1", "udid": "e7d5c3a1-0f2b-4c6d-8e9f-1a2b3c4d5e6f"}, False)
cn_block("cn_device_block_gzip.http", {
    "imei": luhn("86901204567890"), "imsi": "460029876543210", "mac": "D4-61-9D-2E-7F-10",
    "oaid": "0f7a3c5e-91b2-4d68-a4e7-3b9c2d1e8f60", "iccid": luhn("8986031987654321098"),
    "bssid": "6c:59:40:aa:bb:cc", "android_id": "2b7d9e1f3a5c7e90", "serial": "9A271FFAZ003WH",
    "phone": "15987654321", "lat": "22.543096", "lng": "114.057865", "ip": "198.51.100.203",
    "hdr": "cn-dev-4e81b06d2c", "udid": "9c1e5a7b-3d2f-4b8a-a6c4-0e9d8f7a6b5c"}, True)

# ---- NDJSON: one Segment-style call per line (a batch export / RudderStack-style pipe).
c = "segment_events.ndjson.http"
aid = plant(c, "android_id", "c0ffee1234abcd99", "$.context.device.id (each line)")
gaid = plant(c, "gaid", "6f1d2c3b-4a59-4867-9e8d-7c6b5a4f3e2d", "$.context.device.advertisingId")
anon = plant(c, "device_id", "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", "$.anonymousId (each line)")
ip = plant(c, "ip", "203.0.113.9", "$.context.ip")
lat = plant(c, "gps", "51.507351", "$.context.location.latitude")
lng = plant(c, "gps", "-0.127758", "$.context.location.longitude")
phone = plant(c, "phone", "+14155550123", "$.traits.phone (identify)")
lines = [
    {"type": "track", "event": "Login", "anonymousId": anon, "messageId": "m-1",
     "timestamp": "2026-11-22T18:44:00Z",
     "context": {"device": {"id": aid, "advertisingId": gaid, "type": "android"}, "ip": ip,
                 "location": {"latitude": float(lat), "longitude": float(lng)}}},
    {"type": "identify", "anonymousId": anon, "messageId": "m-2", "timestamp": "2026-11-22T18:44:01Z",
     "traits": {"phone": phone, "plan": "free"}, "context": {"device": {"id": aid}, "ip": ip}},
    {"type": "track", "event": "Logout", "anonymousId": anon, "messageId": "m-3",
     "timestamp": "2026-11-22T18:49:00Z", "context": {"device": {"id": aid}}},
]
write(c, "POST", "/v1/import", "events.example.com", [("Content-Type", "application/x-ndjson")],
      "\n".join(js(l) for l in lines) + "\n")

# ---- Sensors Analytics: form data_list=<base64(gzip(JSON array))>&gzip=1&crc=…; GPS as
# integers scaled by 10^6, the Android ID as distinct_id/anonymous_id/$device_id.
c = "sensors_data_list.http"
said = plant(c, "android_id", "9e4c1a7b3d5f2e80",
             "form:data_list>base64>gzip>$[*].distinct_id, anonymous_id, properties.$device_id, identities")
s_imei = plant(c, "imei", luhn("86756104765432"), "form:data_list>base64>gzip>$[0].properties.imei")
s_mac = plant(c, "mac", "F0:B4:29:6A:1C:3E", "form:data_list>base64>gzip>$[0].properties.mac_address")
s_lat = plant(c, "gps", "30572815", "form:data_list>base64>gzip>$[*].properties.$latitude (×10^6)")
s_lng = plant(c, "gps", "104066801", "form:data_list>base64>gzip>$[*].properties.$longitude (×10^6)")
s_oaid = plant(c, "oaid", "b7e3a1c9-5d2f-4e86-9a0b-3c4d5e6f7a8b", "form:data_list>base64>gzip>$[0].properties.$oaid")
sev = []
for i, (ev, t) in enumerate((("$AppStart", 1795373437001), ("$AppViewScreen", 1795373438120))):
    props = {"$device_id": said, "$os": "Android", "$os_version": "12", "$model": "M2102J2SC",
             "$manufacturer": "Xiaomi", "$carrier": "中国移动", "$wifi": True, "$network_type": "WIFI",
             "$app_version": "3.4.0", "$lib": "Android", "$lib_version": "6.8.0",
             "$latitude": int(s_lat), "$longitude": int(s_lng), "$is_first_day": False}
    if i == 0:
        props.update({"imei": s_imei, "mac_address": s_mac, "$oaid": s_oaid, "$resume_from_background": False})
    sev.append({"_track_id": -1983451231 + i, "time": t, "type": "track", "event": ev,
                "distinct_id": said, "anonymous_id": said,
                "identities": {"$identity_android_id": said},
                "lib": {"$lib": "Android", "$lib_version": "6.8.0", "$lib_method": "autoTrack"},
                "properties": props, "_flush_time": 1795373440000})
blob = base64.b64encode(gzip.compress(js(sev).encode(), 9, mtime=0)).decode()
write(c, "POST", "/sa?project=production", "sa.example.cn",
      [("Content-Type", "application/x-www-form-urlencoded")],
      form([("crc", "-1297832413"), ("gzip", "1"), ("data_list", blob)]))

# ---- A device registration with identifiers in the URL path (in-house push/ingest APIs
# address the device by IMEI, MAC or advertising id): /v2/devices/<imei>/push/<mac>.
c = "device_path.http"
p_imei = plant(c, "imei", luhn("35209900176148"), "path segment 3")
p_mac = plant(c, "mac", "A0:C5:89:3E:4F:17", "path segment 5, percent-encoded")
p_gaid = plant(c, "gaid", "5a1d3c7e-2b4f-4e6a-9c8d-7f0e1a2b3c4d", "path segment 7")
p_tok = plant(c, "push_token", "f3c8e21a9b7d4c05e6a1f2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3",
              "$.push_token")
write(c, "PUT", "/v2/devices/%s/push/%s/ad/%s?platform=android" %
      (p_imei, urllib.parse.quote(p_mac, safe=""), p_gaid),
      "push.example.com", [("Content-Type", "application/json")],
      js({"push_token": p_tok, "platform": "android", "enabled": True}))

with open(os.path.join(HERE, "manifest.tsv"), "w") as f:
    f.write("# Planted identifiers, written by make_corpus.py: capture, class, value, where.\n"
            "# tests/integration/leak_test.c asserts that none reaches the upstream in any form.\n")
    for row in manifest:
        f.write("\t".join(row) + "\n")
print("%d captures, %d planted values" % (len({r[0] for r in manifest}), len(manifest)))
