/* jansson → struct ap_conf. Every key is checked against the list of keys its object may
 * hold (a typo is an error, not a silent default) and every error names its key path.
 * Limits are a table of {name, offset, min, max, default}, as nginx does directives. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"
#include "detect.h"

struct cctx {
	char *err;
	const char *file;
	const char *dir;
	char path[256];
	size_t plen;
};

static int fail(struct cctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends <s> to the NUL-terminated <dst> of <cap> bytes, cutting what does not fit. */
static void cat(char *dst, size_t cap, const char *s)
{
	size_t d = strlen(dst), n = strlen(s);

	if (d + 1 >= cap)
		return;
	if (n > cap - 1 - d)
		n = cap - 1 - d;
	memcpy(dst + d, s, n);
	dst[d + n] = 0;
}

static int fail(struct cctx *x, const char *fmt, ...)
{
	char msg[AP_CONF_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	x->err[0] = 0;
	if (x->file) {
		cat(x->err, AP_CONF_ERR_MAX, x->file);
		cat(x->err, AP_CONF_ERR_MAX, ": ");
	}
	if (x->plen) {
		cat(x->err, AP_CONF_ERR_MAX, x->path);
		cat(x->err, AP_CONF_ERR_MAX, ": ");
	}
	cat(x->err, AP_CONF_ERR_MAX, msg);
	return AP_ERR;
}

static size_t push(struct cctx *x, const char *key)
{
	size_t old = x->plen;

	if (x->plen)
		cat(x->path, sizeof(x->path), ".");
	cat(x->path, sizeof(x->path), key);
	x->plen = strlen(x->path);
	return old;
}

static size_t push_idx(struct cctx *x, size_t i)
{
	size_t old = x->plen;
	char b[24];

	snprintf(b, sizeof(b), "[%zu]", i);
	cat(x->path, sizeof(x->path), b);
	x->plen = strlen(x->path);
	return old;
}

static void pop(struct cctx *x, size_t old)
{
	x->plen = old;
	x->path[old] = 0;
}

/* Refuses any key of <o> not in <allowed> (NULL-terminated). */
static int only_keys(struct cctx *x, json_t *o, const char *const *allowed)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v)
	{
		const char *const *a;
		for (a = allowed; *a && strcmp(*a, k) != 0; a++)
			;
		if (!*a) {
			size_t o2 = push(x, k);
			fail(x, "unknown key");
			pop(x, o2);
			return AP_ERR;
		}
	}
	return AP_OK;
}

static int need_object(struct cctx *x, json_t *v)
{
	return json_is_object(v) ? AP_OK : fail(x, "must be an object");
}

static int get_string(struct cctx *x, json_t *o, const char *key, bool required, const char **out)
{
	json_t *v = json_object_get(o, key);
	size_t old;

	*out = NULL;
	if (!v)
		return required ? (old = push(x, key), fail(x, "required"), pop(x, old), AP_ERR)
		                : AP_OK;
	if (!json_is_string(v) || json_string_length(v) == 0) {
		old = push(x, key);
		fail(x, "must be a non-empty string");
		pop(x, old);
		return AP_ERR;
	}
	*out = json_string_value(v);
	return AP_OK;
}

static int get_bool(struct cctx *x, json_t *o, const char *key, bool *out)
{
	json_t *v = json_object_get(o, key);
	size_t old;

	if (!v)
		return AP_OK;
	if (!json_is_boolean(v)) {
		old = push(x, key);
		fail(x, "must be true or false");
		pop(x, old);
		return AP_ERR;
	}
	*out = json_is_true(v);
	return AP_OK;
}

static int get_uint(struct cctx *x, json_t *o, const char *key, size_t lo, size_t hi, size_t *out)
{
	json_t *v = json_object_get(o, key);
	size_t old;

	if (!v)
		return AP_OK;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
	    (unsigned long long)json_integer_value(v) > hi) {
		old = push(x, key);
		fail(x, "must be an integer from %zu to %zu", lo, hi);
		pop(x, old);
		return AP_ERR;
	}
	*out = (size_t)json_integer_value(v);
	return AP_OK;
}

static char *dupstr(const char *s)
{
	char *d = s ? strdup(s) : NULL;
	if (s && !d) {
		fprintf(stderr, "anonproxy: out of memory loading the configuration\n");
		exit(1);
	}
	return d;
}

static char *resolve(struct cctx *x, const char *file)
{
	char *p;

	if (file[0] == '/' || !x->dir || !x->dir[0])
		return dupstr(file);
	if (asprintf(&p, "%s%s%s", x->dir, x->dir[strlen(x->dir) - 1] == '/' ? "" : "/", file) <
	    0) {
		fprintf(stderr, "anonproxy: out of memory loading the configuration\n");
		exit(1);
	}
	return p;
}

/* ---- limits ---- */

static const struct limit_def {
	const char *name;
	size_t off, min, max, dflt;
} limit_defs[] = {
        {"header_bytes", offsetof(struct ap_limits, header_bytes), 1024, 1 << 20, 16384},
        {"headers", offsetof(struct ap_limits, headers), 8, 256, 100}, /* AP_HTTP_HEADERS_MAX */
        {"uri_bytes", offsetof(struct ap_limits, uri_bytes), 64, 1 << 20, 8192},
        {"body_bytes", offsetof(struct ap_limits, body_bytes), 0, 1u << 30, 1 << 20},
        {"decoded_bytes", offsetof(struct ap_limits, decoded_bytes), 1024, 1u << 30, 8 << 20},
        {"json_depth", offsetof(struct ap_limits, json_depth), 2, AP_DEPTH_LIMIT, AP_DEPTH_DEFAULT},
        {"client_header_timeout_ms", offsetof(struct ap_limits, client_header_timeout_ms), 1,
         3600000, 10000},
        {"client_body_timeout_ms", offsetof(struct ap_limits, client_body_timeout_ms), 1, 3600000,
         30000},
        {"client_idle_timeout_ms", offsetof(struct ap_limits, client_idle_timeout_ms), 1, 3600000,
         60000},
        {"upstream_connect_timeout_ms", offsetof(struct ap_limits, upstream_connect_timeout_ms), 1,
         3600000, 3000},
        {"upstream_response_timeout_ms", offsetof(struct ap_limits, upstream_response_timeout_ms),
         1, 3600000, 30000},
};

static int parse_limits(struct cctx *x, json_t *o, struct ap_limits *l)
{
	size_t old;

	for (size_t i = 0; i < AP_ARRAY_LEN(limit_defs); i++)
		*(size_t *)((char *)l + limit_defs[i].off) = limit_defs[i].dflt;
	if (!o)
		return AP_OK;
	old = push(x, "limits");
	if (need_object(x, o) != AP_OK)
		return AP_ERR;
	{
		const char *k;
		json_t *v;
		json_object_foreach(o, k, v)
		{
			const struct limit_def *d = NULL;
			for (size_t i = 0; i < AP_ARRAY_LEN(limit_defs); i++)
				if (strcmp(limit_defs[i].name, k) == 0)
					d = &limit_defs[i];
			if (!d) {
				push(x, k);
				return fail(x, "unknown key");
			}
			if (get_uint(x, o, k, d->min, d->max, (size_t *)((char *)l + d->off)) !=
			    AP_OK)
				return AP_ERR;
		}
	}
	pop(x, old);
	return AP_OK;
}

/* ---- keys ---- */

static int parse_keys(struct cctx *x, json_t *o, struct ap_keyring *kr)
{
	static const char *const allowed[] = {"active", "files", NULL};
	const char *active, *id;
	json_t *files, *v;
	size_t old = push(x, "keys");

	if (!o)
		return fail(x, "required: the keys pseudonyms are made with");
	if (need_object(x, o) != AP_OK || only_keys(x, o, allowed) != AP_OK ||
	    get_string(x, o, "active", true, &active) != AP_OK)
		return AP_ERR;
	files = json_object_get(o, "files");
	{
		size_t o2 = push(x, "files");
		if (!files)
			return fail(x, "required");
		if (!json_is_object(files) || json_object_size(files) == 0)
			return fail(x, "must map key ids to key files");
		if (json_object_size(files) > AP_KEYS_MAX)
			return fail(x, "at most %d keys", AP_KEYS_MAX);
		kr->active = -1;
		json_object_foreach(files, id, v)
		{
			char kerr[AP_CONF_ERR_MAX], *file;
			size_t o3 = push(x, id);
			int rc;

			if (!json_is_string(v))
				return fail(x, "must be a file name");
			file = resolve(x, json_string_value(v));
			rc = ap_key_load(&kr->keys[kr->nkeys], id, file, kerr, sizeof(kerr));
			free(file);
			if (rc != AP_OK)
				return fail(x, "%s", kerr);
			if (strcmp(id, active) == 0)
				kr->active = kr->nkeys;
			kr->nkeys++;
			pop(x, o3);
		}
		pop(x, o2);
	}
	if (kr->active < 0) {
		push(x, "active");
		return fail(x, "\"%s\" is not one of the key ids in keys.files", active);
	}
	pop(x, old);
	return AP_OK;
}

/* ---- actions ---- */

static int parse_action(struct cctx *x, json_t *o, enum ap_class cls, struct ap_action *a)
{
	const char *name, *fmt = NULL;
	size_t v;
	int act;

	memset(a, 0, sizeof(*a));
	a->cls = (uint8_t)cls;
	if (json_is_string(o)) {
		name = json_string_value(o);
		o = NULL;
	} else if (get_string(x, o, "action", true, &name) != AP_OK)
		return AP_ERR;
	if ((act = ap_act_parse(name)) < 0) {
		if (o)
			push(x, "action");
		return fail(x,
		            "unknown action \"%.32s\" (drop, hash, mask, truncate_ip, round, keep)",
		            name);
	}
	a->act = (uint8_t)act;
	switch (act) {
	case AP_ACT_HASH:
		a->length = 0;
		break;
	case AP_ACT_MASK:
		a->length = 4;
		break;
	case AP_ACT_TRUNCATE_IP:
		a->v4bits = 24;
		a->v6bits = 48;
		break;
	case AP_ACT_ROUND:
		a->decimals = 2;
		break;
	}
	if (!o)
		return AP_OK;

	/* Parameters belong to one action each: a "decimals" on a hash is a mistake. */
	static const struct {
		const char *key;
		int act;
	} params[] = {{"format", AP_ACT_HASH},
	              {"length", AP_ACT_HASH},
	              {"key_id", AP_ACT_HASH},
	              {"keep", AP_ACT_MASK},
	              {"decimals", AP_ACT_ROUND},
	              {"ipv4_prefix", AP_ACT_TRUNCATE_IP},
	              {"ipv6_prefix", AP_ACT_TRUNCATE_IP}};
	for (size_t i = 0; i < AP_ARRAY_LEN(params); i++)
		if (json_object_get(o, params[i].key) && params[i].act != act) {
			push(x, params[i].key);
			return fail(x, "applies to action \"%s\" only", ap_act_name(params[i].act));
		}
	if (get_string(x, o, "format", false, &fmt) != AP_OK)
		return AP_ERR;
	if (fmt) {
		if (strcmp(fmt, "hex") == 0)
			a->fmt = AP_HASH_HEX;
		else if (strcmp(fmt, "base64url") == 0)
			a->fmt = AP_HASH_B64URL;
		else if (strcmp(fmt, "preserve") == 0)
			a->fmt = AP_HASH_PRESERVE;
		else {
			push(x, "format");
			return fail(x, "unknown format \"%.32s\" (hex, base64url, preserve)", fmt);
		}
	}
	v = 0;
	if (get_uint(x, o, "length", 4, a->fmt == AP_HASH_B64URL ? 43 : 64, &v) != AP_OK)
		return AP_ERR;
	if (v && a->fmt == AP_HASH_PRESERVE) {
		push(x, "length");
		return fail(x, "a preserve-format hash has the length of its input");
	}
	if (act == AP_ACT_HASH) /* mask keeps its default of 4 unless "keep" says otherwise */
		a->length = (uint8_t)v;
	{
		bool kid = false;
		if (get_bool(x, o, "key_id", &kid) != AP_OK)
			return AP_ERR;
		if (kid && a->fmt == AP_HASH_PRESERVE) {
			push(x, "key_id");
			return fail(x, "a preserve-format hash cannot carry a key id prefix");
		}
		a->key_id = kid;
	}
	v = a->length;
	if (act == AP_ACT_MASK && get_uint(x, o, "keep", 0, 64, &v) != AP_OK)
		return AP_ERR;
	if (act == AP_ACT_MASK)
		a->length = (uint8_t)v;
	v = a->decimals;
	if (get_uint(x, o, "decimals", 0, 10, &v) != AP_OK)
		return AP_ERR;
	a->decimals = (uint8_t)v;
	v = a->v4bits;
	if (get_uint(x, o, "ipv4_prefix", 0, 32, &v) != AP_OK)
		return AP_ERR;
	a->v4bits = (uint8_t)v;
	v = a->v6bits;
	if (get_uint(x, o, "ipv6_prefix", 0, 128, &v) != AP_OK)
		return AP_ERR;
	a->v6bits = (uint8_t)v;
	return AP_OK;
}

static bool has_action_keys(json_t *o)
{
	static const char *const k[] = {"action",   "format",      "length",      "key_id", "keep",
	                                "decimals", "ipv4_prefix", "ipv6_prefix", NULL};
	for (const char *const *p = k; *p; p++)
		if (json_object_get(o, *p))
			return true;
	return false;
}

/* ---- rulesets ---- */

/* Appends <f> to rs->fields, growing it; *idx is its index. Pointers into rs->fields do not
 * survive this call: entries are parsed into a copy of their own and appended whole. */
static int add_field(struct cctx *x, struct ap_ruleset *rs, const struct ap_field *f, uint16_t *idx)
{
	if (rs->nfields == rs->fields_cap) {
		size_t cap = rs->fields_cap ? (size_t)rs->fields_cap * 2 : 16;
		struct ap_field *nf;
		if (cap >= AP_FIELD_NONE)
			cap = AP_FIELD_NONE - 1;
		if (rs->nfields >= cap)
			return fail(x, "too many fields");
		if (!(nf = realloc(rs->fields, cap * sizeof(*nf))))
			return fail(x, "out of memory");
		rs->fields = nf;
		rs->fields_cap = (uint16_t)cap;
	}
	*idx = rs->nfields;
	rs->fields[rs->nfields++] = *f;
	return AP_OK;
}

/* Reserves <n> contiguous protobuf schema nodes; *first is the first one's index. */
static int add_pb_nodes(struct cctx *x, struct ap_ruleset *rs, size_t n, uint16_t *first)
{
	if ((size_t)rs->npb + n > (size_t)rs->pb_cap) {
		size_t cap = rs->pb_cap ? rs->pb_cap : 16;
		struct ap_pb_node *np;
		while (cap < (size_t)rs->npb + n)
			cap *= 2;
		if (cap > UINT16_MAX)
			return fail(x, "protobuf schemas too large");
		if (!(np = realloc(rs->pb, cap * sizeof(*np))))
			return fail(x, "out of memory");
		rs->pb = np;
		rs->pb_cap = (uint16_t)cap;
	}
	*first = rs->npb;
	memset(rs->pb + rs->npb, 0, n * sizeof(*rs->pb));
	rs->npb = (uint16_t)(rs->npb + n);
	return AP_OK;
}

static int parse_field(struct cctx *x, json_t *o, struct ap_ruleset *rs, struct ap_field *f);

/* One protobuf schema entry, as read. */
struct pbent {
	uint32_t num[AP_PATH_SEGS_MAX];
	uint8_t depth;
	uint8_t type;
	uint16_t field;
	size_t index; /* in the "fields" list, for messages */
};

static int pbent_cmp(const void *a, const void *b)
{
	const struct pbent *x = a, *y = b;

	for (unsigned i = 0; i < x->depth && i < y->depth; i++)
		if (x->num[i] != y->num[i])
			return x->num[i] < y->num[i] ? -1 : 1;
	return (int)x->depth - (int)y->depth;
}

static int pb_path(struct cctx *x, const char *text, struct pbent *e)
{
	const char *p = text;

	e->depth = 0;
	for (;;) {
		char *end;
		unsigned long v;
		if (*p < '0' || *p > '9')
			break;
		v = strtoul(p, &end, 10);
		if (v == 0 || v > AP_PB_NUM_MAX)
			return fail(x, "a protobuf field number is from 1 to 536870911");
		if (e->depth == AP_PATH_SEGS_MAX)
			return fail(x, "a protobuf path has at most %d steps", AP_PATH_SEGS_MAX);
		e->num[e->depth++] = (uint32_t)v;
		p = end;
		if (*p == 0)
			return AP_OK;
		if (*p++ != '.')
			break;
	}
	return fail(x, "a protobuf path is field numbers joined by '.', e.g. \"1.19\"");
}

/* The schema nodes below <node> for entries e[lo, hi), which share their first <d>
 * numbers and are sorted: one child per distinct number at depth d, contiguous. */
static int pb_build(struct cctx *x, struct ap_ruleset *rs, const struct pbent *e, size_t lo,
                    size_t hi, unsigned d, uint16_t node)
{
	size_t nchild = 0, k = 0;
	uint16_t first;

	for (size_t i = lo; i < hi; i++)
		nchild += i == lo || e[i].num[d] != e[i - 1].num[d];
	if (add_pb_nodes(x, rs, nchild, &first) != AP_OK)
		return AP_ERR;
	rs->pb[node].child = first;
	rs->pb[node].nchild = (uint16_t)nchild;
	for (size_t i = lo; i < hi;) {
		size_t j = i, below = i;
		uint16_t c = (uint16_t)(first + k++);

		while (j < hi && e[j].num[d] == e[i].num[d])
			j++;
		rs->pb[c].num = e[i].num[d];
		rs->pb[c].type = AP_PB_MESSAGE;
		rs->pb[c].field = AP_FIELD_NONE;
		if (e[i].depth == d + 1) {
			rs->pb[c].type = e[i].type;
			rs->pb[c].field = e[i].field;
			below = i + 1;
			if (below < j && e[below].depth == d + 1)
				return fail(x, "fields[%zu]: path listed twice", e[below].index);
		}
		if (below < j) {
			if (rs->pb[c].type != AP_PB_MESSAGE || rs->pb[c].field != AP_FIELD_NONE)
				return fail(
				        x,
				        "fields[%zu]: a path that other paths go through is a "
				        "message opened for them: no type other than \"message\", "
				        "no action, no codec",
				        e[i].index);
			if (pb_build(x, rs, e, below, j, d + 1, c) != AP_OK)
				return AP_ERR;
		}
		i = j;
	}
	return AP_OK;
}

/* The "fields" of a protobuf codec: [{"path": "1.19", "type": …, class/action or codec}]. */
static int parse_protobuf(struct cctx *x, json_t *list, struct ap_ruleset *rs, uint16_t *root)
{
	static const char *const keys[] = {
	        "path",   "type", "class",    "codec",       "action",      "format", "length",
	        "key_id", "keep", "decimals", "ipv4_prefix", "ipv6_prefix", NULL};
	static const char *const types[] = {
	        [AP_PB_MESSAGE] = "message", [AP_PB_STRING] = "string",
	        [AP_PB_BYTES] = "bytes",     [AP_PB_VARINT] = "varint",
	        [AP_PB_FIXED64] = "fixed64", [AP_PB_FIXED32] = "fixed32"};
	size_t old = push(x, "fields"), n = json_array_size(list), i;
	struct pbent *e;
	json_t *v;
	int rc = AP_ERR;

	if (!json_is_array(list) || n == 0 || n > 256)
		return fail(x, "must be a list of 1 to 256 {\"path\": …} entries");
	if (!(e = calloc(n, sizeof(*e))))
		return fail(x, "out of memory");
	json_array_foreach(list, i, v)
	{
		size_t o2 = push_idx(x, i);
		const char *path, *tname = NULL;
		bool has_rule = json_object_get(v, "class") || json_object_get(v, "codec") ||
		                has_action_keys(v);
		int t = 0;

		e[i].index = i;
		e[i].field = AP_FIELD_NONE;
		if (need_object(x, v) != AP_OK || only_keys(x, v, keys) != AP_OK ||
		    get_string(x, v, "path", true, &path) != AP_OK ||
		    get_string(x, v, "type", false, &tname) != AP_OK)
			goto out;
		{
			size_t o3 = push(x, "path");
			if (pb_path(x, path, &e[i]) != AP_OK)
				goto out;
			pop(x, o3);
		}
		for (int k = 1; tname && k < (int)AP_ARRAY_LEN(types); k++)
			if (strcmp(tname, types[k]) == 0)
				t = k;
		if (tname && !t) {
			push(x, "type");
			fail(x,
			     "unknown type \"%.32s\" (message, string, bytes, varint, fixed64, "
			     "fixed32)",
			     tname);
			goto out;
		}
		if (!t)
			t = has_rule ? AP_PB_STRING : AP_PB_MESSAGE;
		e[i].type = (uint8_t)t;
		if (!has_rule) {
			if (t == AP_PB_BYTES || t == AP_PB_VARINT || t == AP_PB_FIXED64 ||
			    t == AP_PB_FIXED32) {
				fail(x,
				     "a %s field needs a class and action (only strings go to the "
				     "detectors)",
				     types[t]);
				goto out;
			}
		} else {
			struct ap_field f;
			if (parse_field(x, v, rs, &f) != AP_OK)
				goto out;
			if (f.ncodec && t != AP_PB_STRING && t != AP_PB_BYTES) {
				fail(x, "a codec opens a string or bytes field only");
				goto out;
			}
			if (!f.ncodec && t != AP_PB_STRING && t != AP_PB_BYTES &&
			    f.act.act != AP_ACT_DROP && f.act.act != AP_ACT_KEEP &&
			    (t != AP_PB_VARINT || f.act.act != AP_ACT_HASH)) {
				fail(x, "a %s field can be dropped or kept%s, not %s", types[t],
				     t == AP_PB_VARINT ? " or hashed" : "", ap_act_name(f.act.act));
				goto out;
			}
			if (t == AP_PB_VARINT && f.act.act == AP_ACT_HASH) {
				/* a number stays a number: its digits are replaced */
				f.act.fmt = AP_HASH_PRESERVE;
				f.act.length = 0;
				f.act.key_id = 0;
			}
			if (add_field(x, rs, &f, &e[i].field) != AP_OK)
				goto out;
		}
		pop(x, o2);
	}
	qsort(e, n, sizeof(*e), pbent_cmp);
	if (add_pb_nodes(x, rs, 1, root) != AP_OK)
		goto out;
	rs->pb[*root].type = AP_PB_MESSAGE;
	rs->pb[*root].field = AP_FIELD_NONE;
	if (pb_build(x, rs, e, 0, n, 0, *root) != AP_OK)
		goto out;
	pop(x, old);
	rc = AP_OK;
out:
	free(e);
	return rc;
}

static const char *const codec_names[] = {
        [AP_CODEC_BASE64] = "base64",         [AP_CODEC_GZIP] = "gzip",
        [AP_CODEC_DEFLATE] = "deflate",       [AP_CODEC_JSON] = "json",
        [AP_CODEC_NDJSON] = "ndjson",         [AP_CODEC_FORM] = "form",
        [AP_CODEC_URLENCODED] = "urlencoded", [AP_CODEC_PAIRS] = "pairs",
        [AP_CODEC_PROTOBUF] = "protobuf"};

/* One codec step: a name, or {"name": …, its parameters}. */
static int parse_codec_step(struct cctx *x, json_t *v, bool last, struct ap_ruleset *rs,
                            struct ap_field *f)
{
	static const char *const step_keys[] = {"name",   "optional", "separator",
	                                        "assign", "fields",   NULL};
	const char *s = json_string_value(v);
	json_t *o = json_is_object(v) ? v : NULL;
	bool optional = false;
	int c = 0;

	if (o &&
	    (only_keys(x, o, step_keys) != AP_OK || get_string(x, o, "name", true, &s) != AP_OK ||
	     get_bool(x, o, "optional", &optional) != AP_OK))
		return AP_ERR;
	for (int k = 1; s && k < (int)AP_ARRAY_LEN(codec_names); k++)
		if (strcmp(s, codec_names[k]) == 0)
			c = k;
	if (!c)
		return fail(x,
		            "unknown codec \"%.32s\" (base64, gzip, deflate, urlencoded, json, "
		            "ndjson, form, pairs, protobuf)",
		            s ? s : "");
	if (ap_codec_terminal((unsigned)c) != last)
		return fail(x, last ? "the last codec must be json, ndjson, form, pairs or protobuf"
		                    : "json, ndjson, form, pairs and protobuf can only come last");
	f->codec[f->ncodec] = (uint8_t)c;
	if (optional) {
		if (c != AP_CODEC_BASE64 && c != AP_CODEC_GZIP) {
			push(x, "optional");
			return fail(x, "only base64 and gzip steps can be optional");
		}
		f->optional |= (uint8_t)(1u << f->ncodec);
	}
	f->ncodec++;
	if (o && c != AP_CODEC_PAIRS &&
	    (json_object_get(o, "separator") || json_object_get(o, "assign"))) {
		push(x, json_object_get(o, "separator") ? "separator" : "assign");
		return fail(x, "applies to the pairs codec only");
	}
	if (o && c != AP_CODEC_PROTOBUF && json_object_get(o, "fields")) {
		push(x, "fields");
		return fail(x, "applies to the protobuf codec only");
	}
	if (c == AP_CODEC_PAIRS) {
		const char *sep = "##", *eq = "=";
		if (o && (get_string(x, o, "separator", false, &sep) != AP_OK ||
		          get_string(x, o, "assign", false, &eq) != AP_OK))
			return AP_ERR;
		sep = sep ? sep : "##";
		eq = eq ? eq : "=";
		if (strlen(sep) > AP_PAIR_SEP_MAX || strlen(eq) > AP_PAIR_EQ_MAX ||
		    strstr(sep, eq) || strstr(eq, sep))
			return fail(x,
			            "a pairs separator is 1-%d bytes, an assignment 1-%d, and "
			            "neither holds the other",
			            AP_PAIR_SEP_MAX, AP_PAIR_EQ_MAX);
		f->sep_len = (uint8_t)strlen(sep);
		f->eq_len = (uint8_t)strlen(eq);
		memcpy(f->sep, sep, f->sep_len);
		memcpy(f->eq, eq, f->eq_len);
	}
	if (c == AP_CODEC_PROTOBUF) {
		if (!o || !json_object_get(o, "fields"))
			return fail(
			        x,
			        "protobuf needs its schema: {\"name\": \"protobuf\", \"fields\": "
			        "[{\"path\": \"1.19\", …}]}");
		if (parse_protobuf(x, json_object_get(o, "fields"), rs, &f->pb_root) != AP_OK)
			return AP_ERR;
	}
	return AP_OK;
}

static int parse_codec(struct cctx *x, json_t *arr, struct ap_ruleset *rs, struct ap_field *f)
{
	size_t old = push(x, "codec"), i;
	json_t *v;

	if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > AP_CODEC_MAX)
		return fail(
		        x,
		        "must be a list of 1 to %d codecs, e.g. [\"base64\", \"gzip\", \"json\"]",
		        AP_CODEC_MAX);
	json_array_foreach(arr, i, v)
	{
		size_t o2 = push_idx(x, i);
		if (parse_codec_step(x, v, i + 1 == json_array_size(arr), rs, f) != AP_OK)
			return AP_ERR;
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

/* A field entry or a header entry: class + action, or a codec chain. *f is the caller's
 * own copy: a protobuf codec appends its leaves to rs->fields. */
static int parse_field(struct cctx *x, json_t *o, struct ap_ruleset *rs, struct ap_field *f)
{
	const char *cname;
	json_t *codec = json_object_get(o, "codec");
	int cls = AP_CLASS_OTHER;

	memset(f, 0, sizeof(*f));
	f->pb_root = AP_FIELD_NONE;
	if (get_string(x, o, "class", false, &cname) != AP_OK)
		return AP_ERR;
	if (codec) {
		if (cname || has_action_keys(o))
			return fail(x,
			            "an entry has either a codec or a class and action, not both");
		return parse_codec(x, codec, rs, f);
	}
	if (!cname) {
		push(x, "class");
		return fail(x, "required (or a codec)");
	}
	if ((cls = ap_class_parse(cname)) < 0) {
		push(x, "class");
		return fail(x, "unknown identifier class \"%.32s\"", cname);
	}
	if (has_action_keys(o))
		return parse_action(x, o, (enum ap_class)cls, &f->act);
	if (rs->class_act[cls].act == AP_ACT_NONE) {
		return fail(x, "no action: give one here or in classes.%s", cname);
	}
	f->act = rs->class_act[cls];
	return AP_OK;
}

static int parse_detect(struct cctx *x, json_t *detect, struct ap_ruleset *rs)
{
	size_t old = push(x, "detect"), i;
	json_t *v;

	if (!json_is_array(detect))
		return fail(x, "must be a list of detectors");
	json_array_foreach(detect, i, v)
	{
		unsigned bit = json_is_string(v) ? ap_detect_parse(json_string_value(v)) : 0;
		if (!bit) {
			push_idx(x, i);
			return fail(x, "unknown detector (imei, imsi, iccid, mac, uuid, "
			               "ip, phone, email)");
		}
		rs->detect |= bit;
	}
	pop(x, old);
	return AP_OK;
}

static int parse_classes(struct cctx *x, json_t *classes, struct ap_ruleset *rs)
{
	size_t old = push(x, "classes");
	const char *cn;
	json_t *v;

	if (need_object(x, classes) != AP_OK)
		return AP_ERR;
	json_object_foreach(classes, cn, v)
	{
		int c = ap_class_parse(cn);
		size_t o2 = push(x, cn);
		if (c < 0)
			return fail(x, "unknown identifier class");
		if (!json_is_string(v) && !json_is_object(v))
			return fail(x, "must be an action name or an action object");
		if (json_is_object(v)) {
			static const char *const ak[] = {"action",      "format",      "length",
			                                 "key_id",      "keep",        "decimals",
			                                 "ipv4_prefix", "ipv6_prefix", NULL};
			if (only_keys(x, v, ak) != AP_OK)
				return AP_ERR;
		}
		if (parse_action(x, v, (enum ap_class)c, &rs->class_act[c]) != AP_OK)
			return AP_ERR;
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

/* Key and path counts of a "fields" list, for sizing (its entries are checked later). */
static void count_fields(json_t *fields, size_t *nkeys, size_t *npaths)
{
	size_t i;
	json_t *v;

	json_array_foreach(fields, i, v)
	{
		json_t *k = json_object_get(v, "keys"), *p = json_object_get(v, "paths");
		*nkeys += json_is_array(k) ? json_array_size(k) : 0;
		*npaths += json_is_array(p) ? json_array_size(p) : 0;
	}
}

/* The entries of a "fields" list into rs: their keys into the key table (sized already),
 * their paths appended to rs->paths (room made already). */
static int parse_field_list(struct cctx *x, json_t *fields, struct ap_ruleset *rs)
{
	static const char *const field_keys[] = {
	        "class",  "keys", "paths",    "codec",       "action",      "format", "length",
	        "key_id", "keep", "decimals", "ipv4_prefix", "ipv6_prefix", NULL};
	size_t old = push(x, "fields"), i;
	json_t *v;

	json_array_foreach(fields, i, v)
	{
		size_t o2 = push_idx(x, i), j;
		json_t *keys, *paths, *s;
		struct ap_field f;
		uint16_t idx;

		if (need_object(x, v) != AP_OK || only_keys(x, v, field_keys) != AP_OK ||
		    parse_field(x, v, rs, &f) != AP_OK)
			return AP_ERR;
		keys = json_object_get(v, "keys");
		paths = json_object_get(v, "paths");
		if (!keys && !paths)
			return fail(x, "needs \"keys\" or \"paths\"");
		if ((keys && !json_is_array(keys)) || (paths && !json_is_array(paths)))
			return fail(x, "\"keys\" and \"paths\" are lists");
		if (add_field(x, rs, &f, &idx) != AP_OK)
			return AP_ERR;
		json_array_foreach(keys, j, s)
		{
			const char *why;
			size_t o3 = push(x, "keys");
			push_idx(x, j);
			if (!json_is_string(s))
				return fail(x, "must be a string");
			if (ap_rules_add_key(rs, json_string_value(s), idx, &why) != AP_OK)
				return fail(x, "%s", why);
			pop(x, o3);
		}
		json_array_foreach(paths, j, s)
		{
			const char *why;
			struct ap_path *pp = &rs->paths[rs->npaths];
			size_t o3 = push(x, "paths");
			push_idx(x, j);
			if (!json_is_string(s))
				return fail(x, "must be a string");
			if (ap_rules_path_compile(pp, json_string_value(s), &why) != AP_OK)
				return fail(x, "%s", why);
			pp->field = idx;
			rs->npaths++;
			pop(x, o3);
		}
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

/* The entries of a "headers" list appended to rs->headers (room made already). */
static int parse_header_list(struct cctx *x, json_t *headers, struct ap_ruleset *rs)
{
	static const char *const header_keys[] = {
	        "name",   "class", "codec",    "action",      "format",      "length",
	        "key_id", "keep",  "decimals", "ipv4_prefix", "ipv6_prefix", NULL};
	size_t old = push(x, "headers"), i;
	json_t *v;

	json_array_foreach(headers, i, v)
	{
		size_t o2 = push_idx(x, i), n;
		const char *hname;
		struct ap_header_rule *h = &rs->headers[rs->nheaders];
		struct ap_field f;

		if (need_object(x, v) != AP_OK || only_keys(x, v, header_keys) != AP_OK ||
		    get_string(x, v, "name", true, &hname) != AP_OK ||
		    parse_field(x, v, rs, &f) != AP_OK)
			return AP_ERR;
		n = strlen(hname);
		if (n >= AP_KEY_NAME_MAX)
			return fail(x, "header name longer than 63 bytes");
		if (ap_rules_header(rs, hname, n))
			return fail(x, "header listed twice");
		memset(h, 0, sizeof(*h));
		for (size_t k = 0; k < n; k++) {
			char c = hname[k];
			h->name[k] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
		}
		h->len = (uint8_t)n;
		if (add_field(x, rs, &f, &h->field) != AP_OK)
			return AP_ERR;
		rs->nheaders++;
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

/* A detected class with no action of its own is hashed with the defaults: finding an
 * identifier and letting it through is never the default. Fields were resolved already,
 * so this only reaches the detectors (and a profile's fields, see compile_profile). */
static void finish_classes(struct ap_ruleset *rs)
{
	for (int c = 1; c < AP_CLASS_MAX; c++) {
		if (rs->class_act[c].act == AP_ACT_NONE) {
			rs->class_act[c].act = AP_ACT_HASH;
			rs->class_act[c].cls = (uint8_t)c;
		}
		/* A detected number keeps its type: a value's type is part of the document's
		 * contract (and a codec entry reads a string as an encoded document). */
		rs->class_num[c] = rs->class_act[c];
		if (rs->class_num[c].act == AP_ACT_HASH) {
			rs->class_num[c].fmt = AP_HASH_PRESERVE;
			rs->class_num[c].length = 0;
			rs->class_num[c].key_id = 0;
		}
	}
}

/* "user": {"paths": [...], "headers": [...], "query": [...], "form": [...]} and
 * "events": [...]: where a ruleset finds the user an opt-out is looked up for, and the
 * objects that are one event each. */
static int parse_names(struct cctx *x, json_t *o, const char *key, char (*out)[AP_KEY_NAME_MAX],
                       uint8_t *n)
{
	json_t *a = json_object_get(o, key), *v;
	size_t i, old;

	if (!a)
		return AP_OK;
	old = push(x, key);
	if (!json_is_array(a) || json_array_size(a) > AP_USER_NAMES_MAX)
		return fail(x, "must be a list of at most %d names", AP_USER_NAMES_MAX);
	json_array_foreach(a, i, v)
	{
		const char *s = json_string_value(v);
		push_idx(x, i);
		if (!s || !*s || strlen(s) >= AP_KEY_NAME_MAX)
			return fail(x, "must be a name of 1 to %d bytes", AP_KEY_NAME_MAX - 1);
		for (size_t k = 0; s[k]; k++) /* names compare case-insensitively */
			out[*n][k] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] | 0x20 : s[k]);
		out[*n][strlen(s)] = 0;
		(*n)++;
		pop(x, old);
		push(x, key);
	}
	pop(x, old);
	return AP_OK;
}

static int parse_path_list(struct cctx *x, json_t *a, const char *key, struct ap_path *out,
                           uint8_t *n, size_t max, bool *root)
{
	json_t *v;
	size_t i, old = push(x, key);

	if (!json_is_array(a) || json_array_size(a) > max)
		return fail(x, "must be a list of at most %zu paths", max);
	json_array_foreach(a, i, v)
	{
		const char *s = json_string_value(v), *why;
		size_t o2 = push_idx(x, i);
		if (!s)
			return fail(x, "must be a path such as \"$.user_id\"");
		if (root && strcmp(s, "$") == 0) {
			*root = true;
		} else {
			if (ap_rules_path_compile(&out[*n], s, &why) != AP_OK)
				return fail(x, "%s", why);
			(*n)++;
		}
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

static int parse_user(struct cctx *x, json_t *user, json_t *events, struct ap_ruleset *rs)
{
	static const char *const allowed[] = {"paths", "headers", "query", "form", NULL};
	struct ap_user_rules *u;

	if (!user) {
		if (events) {
			push(x, "events");
			return fail(x, "events without \"user\": where is the user of an event?");
		}
		return AP_OK;
	}
	if (!(u = rs->user = calloc(1, sizeof(*u))))
		return fail(x, "out of memory");
	{
		size_t old = push(x, "user");
		json_t *paths = json_object_get(user, "paths");
		if (need_object(x, user) != AP_OK || only_keys(x, user, allowed) != AP_OK)
			return AP_ERR;
		if (paths && parse_path_list(x, paths, "paths", u->paths, &u->npaths,
		                             AP_USER_PATHS_MAX, NULL) != AP_OK)
			return AP_ERR;
		if (parse_names(x, user, "headers", u->headers, &u->nheaders) != AP_OK ||
		    parse_names(x, user, "query", u->query, &u->nquery) != AP_OK ||
		    parse_names(x, user, "form", u->form, &u->nform) != AP_OK)
			return AP_ERR;
		if (!u->npaths && !u->nheaders && !u->nquery && !u->nform)
			return fail(
			        x, "names no place to find the user (paths, headers, query, form)");
		pop(x, old);
	}
	if (events) {
		if (parse_path_list(x, events, "events", u->events, &u->nevents, AP_EVENT_PATHS_MAX,
		                    &u->root_event) != AP_OK)
			return AP_ERR;
	} else {
		/* A batch is an array of events at the root or under "batch", "events" or
		 * "data"; otherwise the document is one event. */
		static const char *const dflt[] = {"$[*]", "$.batch[*]", "$.events[*]",
		                                   "$.data[*]"};
		const char *why;
		for (size_t i = 0; i < AP_ARRAY_LEN(dflt); i++)
			ap_rules_path_compile(&u->events[u->nevents++], dflt[i], &why);
		u->root_event = true;
	}
	return AP_OK;
}

static int parse_ruleset(struct cctx *x, const char *name, json_t *o, struct ap_ruleset *rs)
{
	static const char *const allowed[] = {"detect", "classes", "fields",         "headers",
	                                      "query",  "path",    "detect_in_text", "strict",
	                                      "user",   "events",  "scan_keys",      NULL};
	json_t *detect = json_object_get(o, "detect"), *classes = json_object_get(o, "classes");
	json_t *fields = json_object_get(o, "fields"), *headers = json_object_get(o, "headers");
	size_t nkeys = 0, npaths = 0, nh;
	bool query = true, path = true, text = false, scan_keys = true;

	rs->name = dupstr(name);
	if (need_object(x, o) != AP_OK || only_keys(x, o, allowed) != AP_OK)
		return AP_ERR;
	if (get_bool(x, o, "query", &query) != AP_OK || get_bool(x, o, "path", &path) != AP_OK ||
	    get_bool(x, o, "detect_in_text", &text) != AP_OK ||
	    get_bool(x, o, "scan_keys", &scan_keys))
		return AP_ERR;
	rs->query = query;
	rs->path = path;
	rs->detect_text = text;
	rs->scrub_keys = scan_keys;
	if (parse_user(x, json_object_get(o, "user"), json_object_get(o, "events"), rs) != AP_OK)
		return AP_ERR;
	if (detect && parse_detect(x, detect, rs) != AP_OK)
		return AP_ERR;
	if (classes && parse_classes(x, classes, rs) != AP_OK)
		return AP_ERR;
	nh = headers ? json_array_size(headers) : 0;
	if (fields && !json_is_array(fields)) {
		push(x, "fields");
		return fail(x, "must be a list");
	}
	if (headers && !json_is_array(headers)) {
		push(x, "headers");
		return fail(x, "must be a list");
	}
	if (nh > AP_HEADERS_MAX) {
		push(x, "headers");
		return fail(x, "at most %d headers", AP_HEADERS_MAX);
	}
	rs->headers = calloc(nh + 1, sizeof(*rs->headers));
	if (!rs->headers)
		return fail(x, "out of memory");
	count_fields(fields, &nkeys, &npaths);
	if (npaths > AP_PATHS_MAX) {
		push(x, "fields");
		return fail(x, "at most %d paths in one ruleset", AP_PATHS_MAX);
	}
	rs->paths = calloc(npaths + 1, sizeof(*rs->paths));
	if (!rs->paths || ap_rules_keys_init(rs, nkeys) != AP_OK)
		return fail(x, "out of memory");
	if (parse_field_list(x, fields, rs) != AP_OK || parse_header_list(x, headers, rs) != AP_OK)
		return AP_ERR;
	finish_classes(rs);
	return AP_OK;
}

static const char *json_why(char *text);

/* ---- profiles ----
 *
 * A profile says where an SDK puts identifiers and how its payload is wrapped: field
 * entries (the "fields" grammar, codec chains included), headers, body formats, re-signers
 * and opaque-payload rules. It says nothing about what is done to a class of identifier:
 * that stays the ruleset's. A route that names a profile gets, at load time, a ruleset of
 * its own: the route's ruleset with the profile's entries added in front (a key, path or
 * header both name is the profile's), compiled like any other. */

struct profile_def {
	char *name;
	json_t *obj; /* borrowed from the configuration's tree or an included file's */
	char *where; /* the key path errors inside it are reported under */
	const struct ap_ruleset *ruleset; /* its "ruleset": the default base, or NULL */
};

struct combo {
	const struct ap_ruleset *base;
	size_t profile;
	bool pass;
	struct ap_ruleset *rs;
};

struct profiles {
	struct profile_def *def;
	size_t n, cap;
	json_t **files; /* included files' trees, released after loading */
	size_t nfiles;
	struct combo *combos;
	size_t ncombos;
};

/* Sets the error path to <text> and returns the old one in saved[256]. */
static void path_set(struct cctx *x, const char *text, char *saved)
{
	memcpy(saved, x->path, sizeof(x->path));
	x->path[0] = 0;
	cat(x->path, sizeof(x->path), text);
	x->plen = strlen(x->path);
}

static void path_restore(struct cctx *x, const char *saved)
{
	memcpy(x->path, saved, sizeof(x->path));
	x->plen = strlen(x->path);
}

/* A string or a list of 1..max strings at <key> of <o>, each 1..AP_KEY_NAME_MAX-1 bytes,
 * into out[max][AP_KEY_NAME_MAX]. */
static int get_names(struct cctx *x, json_t *o, const char *key, bool required, size_t max,
                     char (*out)[AP_KEY_NAME_MAX], uint8_t *n)
{
	json_t *v = json_object_get(o, key), *s;
	size_t old = push(x, key), i;

	*n = 0;
	if (!v) {
		if (required)
			return fail(x, "required");
		pop(x, old);
		return AP_OK;
	}
	if (json_is_string(v)) {
		v = json_pack("[O]", v);
	} else
		json_incref(v);
	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > max) {
		json_decref(v);
		return fail(x, "must be a string or a list of 1 to %zu strings", max);
	}
	json_array_foreach(v, i, s)
	{
		const char *t = json_string_value(s);
		if (!t || !t[0] || strlen(t) >= AP_KEY_NAME_MAX) {
			json_decref(v);
			push_idx(x, i);
			return fail(x, "must be a string of 1 to %d bytes", AP_KEY_NAME_MAX - 1);
		}
		strcpy(out[(*n)++], t);
	}
	json_decref(v);
	pop(x, old);
	return AP_OK;
}

static int get_media(struct cctx *x, json_t *o, const char *key, bool required, size_t max,
                     struct ap_media *out, uint8_t *n)
{
	char names[AP_OPAQUE_VALS][AP_KEY_NAME_MAX];

	if (get_names(x, o, key, required, max < AP_OPAQUE_VALS ? max : AP_OPAQUE_VALS, names, n) !=
	    AP_OK)
		return AP_ERR;
	for (unsigned i = 0; i < *n; i++) {
		const char *why;
		if (ap_rules_media_compile(&out[i], names[i], &why) != AP_OK) {
			push(x, key);
			push_idx(x, i);
			return fail(x, "%s", why);
		}
	}
	return AP_OK;
}

static int parse_bodies(struct cctx *x, json_t *list, struct ap_ruleset *rs)
{
	static const char *const keys[] = {"content_type", "codec", NULL};
	size_t old = push(x, "bodies"), i;
	json_t *v;

	if (!json_is_array(list))
		return fail(x, "must be a list of {\"content_type\": …, \"codec\": […]}");
	rs->bodies = calloc(AP_BODIES_MAX, sizeof(*rs->bodies));
	if (!rs->bodies)
		return fail(x, "out of memory");
	json_array_foreach(list, i, v)
	{
		size_t o2 = push_idx(x, i);
		struct ap_media media[AP_OPAQUE_VALS];
		struct ap_field f;
		uint16_t idx;
		uint8_t nm;

		if (need_object(x, v) != AP_OK || only_keys(x, v, keys) != AP_OK ||
		    get_media(x, v, "content_type", true, AP_OPAQUE_VALS, media, &nm) != AP_OK)
			return AP_ERR;
		if (!json_object_get(v, "codec")) {
			push(x, "codec");
			return fail(x, "required");
		}
		if (parse_field(x, v, rs, &f) != AP_OK || add_field(x, rs, &f, &idx) != AP_OK)
			return AP_ERR;
		for (unsigned m = 0; m < nm; m++) {
			if (rs->nbodies == AP_BODIES_MAX)
				return fail(x, "at most %d content types in \"bodies\"",
				            AP_BODIES_MAX);
			rs->bodies[rs->nbodies].media = media[m];
			rs->bodies[rs->nbodies++].field = idx;
		}
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

static int parse_signers(struct cctx *x, json_t *list, struct ap_ruleset *rs)
{
	static const char *const keys[] = {"field", "algorithm", "over", NULL};
	size_t old = push(x, "signers"), i;
	json_t *v;

	if (!json_is_array(list) || json_array_size(list) > AP_SIGNERS_MAX)
		return fail(x, "must be a list of at most %d signers", AP_SIGNERS_MAX);
	rs->signers = calloc(AP_SIGNERS_MAX, sizeof(*rs->signers));
	if (!rs->signers)
		return fail(x, "out of memory");
	json_array_foreach(list, i, v)
	{
		size_t o2 = push_idx(x, i);
		struct ap_signer *s = &rs->signers[rs->nsigners];
		char field[1][AP_KEY_NAME_MAX];
		const char *algo;
		uint8_t n;

		if (need_object(x, v) != AP_OK || only_keys(x, v, keys) != AP_OK ||
		    get_string(x, v, "algorithm", true, &algo) != AP_OK)
			return AP_ERR;
		if (strcmp(algo, "java_hashcode") == 0)
			s->algo = AP_SIGN_JAVA_HASHCODE;
		else if (strcmp(algo, "md5_hex") == 0)
			s->algo = AP_SIGN_MD5_HEX;
		else {
			push(x, "algorithm");
			return fail(x, "unknown algorithm \"%.32s\" (java_hashcode, md5_hex)",
			            algo);
		}
		if (get_names(x, v, "field", true, 1, field, &n) != AP_OK ||
		    get_names(x, v, "over", true, AP_SIGN_OVER_MAX, s->over, &s->nover) != AP_OK)
			return AP_ERR;
		if (json_is_array(json_object_get(v, "field"))) {
			push(x, "field");
			return fail(x, "must be one field name");
		}
		strcpy(s->field, field[0]);
		s->field_len = (uint8_t)strlen(s->field);
		for (unsigned k = 0; k < s->nover; k++) {
			s->over_len[k] = (uint8_t)strlen(s->over[k]);
			if (strcmp(s->over[k], s->field) == 0) {
				push(x, "over");
				return fail(x, "a signature cannot cover itself");
			}
		}
		rs->nsigners++;
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

static int parse_opaque_rules(struct cctx *x, json_t *list, struct ap_ruleset *rs)
{
	static const char *const keys[] = {"name", "content_type", "header", "field", NULL};
	static const char *const cond_keys[] = {"name", "values", NULL};
	size_t old = push(x, "opaque"), i;
	json_t *v;

	if (!json_is_array(list) || json_array_size(list) > AP_OPAQUE_MAX)
		return fail(x, "must be a list of at most %d rules", AP_OPAQUE_MAX);
	rs->opaque = calloc(AP_OPAQUE_MAX, sizeof(*rs->opaque));
	if (!rs->opaque)
		return fail(x, "out of memory");
	json_array_foreach(list, i, v)
	{
		size_t o2 = push_idx(x, i);
		struct ap_opaque_rule *o = &rs->opaque[rs->nopaque];
		char name[1][AP_KEY_NAME_MAX];
		uint8_t n;
		json_t *h = json_object_get(v, "header"), *f = json_object_get(v, "field");

		if (need_object(x, v) != AP_OK || only_keys(x, v, keys) != AP_OK ||
		    get_names(x, v, "name", true, 1, name, &n) != AP_OK ||
		    get_media(x, v, "content_type", false, AP_OPAQUE_VALS, o->media, &o->nmedia) !=
		            AP_OK)
			return AP_ERR;
		strcpy(o->name, name[0]);
		for (const char *c = o->name; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.')) {
				push(x, "name");
				return fail(x, "a rule name is made of [A-Za-z0-9_.-]");
			}
		if (h) {
			size_t o3 = push(x, "header");
			char hn[1][AP_KEY_NAME_MAX];
			if (need_object(x, h) != AP_OK || only_keys(x, h, cond_keys) != AP_OK ||
			    get_names(x, h, "name", true, 1, hn, &n) != AP_OK ||
			    get_names(x, h, "values", false, AP_OPAQUE_VALS, o->hvals,
			              &o->nhvals) != AP_OK)
				return AP_ERR;
			o->header_len = (uint8_t)strlen(hn[0]);
			for (unsigned k = 0; k < o->header_len; k++)
				o->header[k] = (char)((hn[0][k] >= 'A' && hn[0][k] <= 'Z')
				                              ? hn[0][k] | 0x20
				                              : hn[0][k]);
			pop(x, o3);
		}
		if (f) {
			size_t o3 = push(x, "field");
			char fn[1][AP_KEY_NAME_MAX];
			if (need_object(x, f) != AP_OK || only_keys(x, f, cond_keys) != AP_OK ||
			    get_names(x, f, "name", true, 1, fn, &n) != AP_OK ||
			    get_names(x, f, "values", false, AP_OPAQUE_VALS, o->fvals,
			              &o->nfvals) != AP_OK)
				return AP_ERR;
			strcpy(o->fname, fn[0]);
			o->fname_len = (uint8_t)strlen(fn[0]);
			pop(x, o3);
		}
		if (!o->nmedia && !h && !f)
			return fail(x,
			            "needs a condition: \"content_type\", \"header\" or \"field\"");
		rs->nopaque++;
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

/* Compiles profile <p> on top of ruleset <base> (see the section comment) into a new
 * ruleset, *out, which the caller owns (also on failure). */
static int compile_profile(struct cctx *x, const struct ap_ruleset *base,
                           const struct profile_def *p, bool pass, struct ap_ruleset **out)
{
	static const char *const allowed[] = {"description", "ruleset", "detect",
	                                      "fields",      "headers", "bodies",
	                                      "signers",     "opaque",  NULL};
	json_t *o = p->obj, *fields = json_object_get(o, "fields");
	json_t *headers = json_object_get(o, "headers"), *v;
	size_t nkeys = 0, npaths = 0, base_keys = 0, nh;
	struct ap_ruleset *rs = calloc(1, sizeof(*rs));
	const char *desc;

	*out = rs;
	if (!rs)
		return fail(x, "out of memory");
	if (need_object(x, o) != AP_OK || only_keys(x, o, allowed) != AP_OK ||
	    get_string(x, o, "description", false, &desc) != AP_OK)
		return AP_ERR;
	if (asprintf(&rs->name, "%s+%s", base->name ? base->name : "", p->name) < 0) {
		rs->name = NULL;
		return fail(x, "out of memory");
	}
	rs->query = base->query;
	rs->path = base->path;
	rs->detect_text = base->detect_text;
	rs->scrub_keys = base->scrub_keys;
	rs->detect = base->detect;
	rs->strict = NULL;
	if (base->user) {
		if (!(rs->user = malloc(sizeof(*rs->user))))
			return fail(x, "out of memory");
		memcpy(rs->user, base->user, sizeof(*rs->user));
	}
	memcpy(rs->class_act, base->class_act, sizeof(rs->class_act));
	memcpy(rs->class_num, base->class_num, sizeof(rs->class_num));
	if ((v = json_object_get(o, "detect")) && parse_detect(x, v, rs) != AP_OK)
		return AP_ERR;
	if (base->nfields) {
		if (!(rs->fields = malloc(base->nfields * sizeof(*rs->fields))))
			return fail(x, "out of memory");
		memcpy(rs->fields, base->fields, base->nfields * sizeof(*rs->fields));
		rs->nfields = rs->fields_cap = base->nfields;
	}
	if (base->npb) {
		if (!(rs->pb = malloc(base->npb * sizeof(*rs->pb))))
			return fail(x, "out of memory");
		memcpy(rs->pb, base->pb, base->npb * sizeof(*rs->pb));
		rs->npb = rs->pb_cap = base->npb;
	}
	if ((fields && !json_is_array(fields)) || (headers && !json_is_array(headers))) {
		push(x, fields && !json_is_array(fields) ? "fields" : "headers");
		return fail(x, "must be a list");
	}
	count_fields(fields, &nkeys, &npaths);
	for (uint32_t i = 0; base->keys && i <= base->key_mask; i++)
		base_keys += base->keys[i].hash != 0;
	if (npaths + base->npaths > AP_PATHS_MAX) {
		push(x, "fields");
		return fail(x, "at most %d paths, the profile's and its ruleset's together",
		            AP_PATHS_MAX);
	}
	nh = headers ? json_array_size(headers) : 0;
	if (nh + base->nheaders > AP_HEADERS_MAX) {
		push(x, "headers");
		return fail(x, "at most %d headers, the profile's and its ruleset's together",
		            AP_HEADERS_MAX);
	}
	rs->paths = calloc(npaths + base->npaths + 1, sizeof(*rs->paths));
	rs->headers = calloc(nh + base->nheaders + 1, sizeof(*rs->headers));
	if (!rs->paths || !rs->headers || ap_rules_keys_init(rs, nkeys + base_keys) != AP_OK)
		return fail(x, "out of memory");
	/* The profile's entries first: a key it names is its own, and its paths are tried
	 * before the ruleset's. */
	if (parse_field_list(x, fields, rs) != AP_OK)
		return AP_ERR;
	for (uint32_t i = 0; base->keys && i <= base->key_mask; i++) {
		const struct ap_key_slot *k = &base->keys[i];
		char name[AP_KEY_NAME_MAX];
		const char *why;
		if (!k->hash || ap_rules_key_slow(rs, k->name, k->len))
			continue;
		memcpy(name, k->name, k->len);
		name[k->len] = 0;
		if (ap_rules_add_key(rs, name, k->field, &why) != AP_OK)
			return fail(x, "%s", why);
	}
	if (base->npaths)
		memcpy(rs->paths + rs->npaths, base->paths, base->npaths * sizeof(*rs->paths));
	rs->npaths = (uint8_t)(rs->npaths + base->npaths);
	if (parse_header_list(x, headers, rs) != AP_OK)
		return AP_ERR;
	for (unsigned i = 0; i < base->nheaders; i++)
		if (!ap_rules_header(rs, base->headers[i].name, base->headers[i].len))
			rs->headers[rs->nheaders++] = base->headers[i];
	if ((v = json_object_get(o, "bodies")) && parse_bodies(x, v, rs) != AP_OK)
		return AP_ERR;
	if ((v = json_object_get(o, "signers")) && parse_signers(x, v, rs) != AP_OK)
		return AP_ERR;
	if ((v = json_object_get(o, "opaque")) && parse_opaque_rules(x, v, rs) != AP_OK)
		return AP_ERR;
	rs->opaque_pass = pass;
	return AP_OK;
}

static const struct profile_def *find_profile(const struct profiles *pr, const char *name,
                                              size_t *idx)
{
	for (size_t i = 0; i < pr->n; i++)
		if (strcmp(pr->def[i].name, name) == 0) {
			*idx = i;
			return &pr->def[i];
		}
	return NULL;
}

/* Registers profile <name> (its object <o>), checked on its own: it is compiled once on
 * top of an empty ruleset, so that a mistake is reported under the profile's own path
 * whether or not a route uses it. */
static int define_profile(struct cctx *x, struct ap_conf *c, struct profiles *pr, const char *name,
                          json_t *o)
{
	struct profile_def *d;
	struct ap_ruleset empty, *rs = NULL;
	const char *base;
	size_t dummy;
	int rc;

	if (find_profile(pr, name, &dummy))
		return fail(x, "profile \"%.64s\" is defined twice", name);
	if (!name[0] || strlen(name) >= AP_KEY_NAME_MAX || strchr(name, '+'))
		return fail(x, "a profile name is 1-63 bytes, without '+'");
	if (pr->n == pr->cap) {
		size_t cap = pr->cap ? pr->cap * 2 : 16;
		struct profile_def *nd = realloc(pr->def, cap * sizeof(*nd));
		if (!nd)
			return fail(x, "out of memory");
		pr->def = nd;
		pr->cap = cap;
	}
	d = &pr->def[pr->n];
	memset(d, 0, sizeof(*d));
	if (need_object(x, o) != AP_OK || get_string(x, o, "ruleset", false, &base) != AP_OK)
		return AP_ERR;
	if (base && !(d->ruleset = ap_conf_ruleset(c, base))) {
		push(x, "ruleset");
		return fail(x, "no ruleset named \"%.64s\"", base);
	}
	memset(&empty, 0, sizeof(empty));
	empty.name = (char *)"";
	empty.query = empty.scrub_keys = true;
	finish_classes(&empty);
	d->name = dupstr(name);
	d->obj = o;
	d->where = dupstr(x->path);
	rc = compile_profile(x, &empty, d, false, &rs);
	ap_ruleset_free(rs);
	free(rs);
	if (rc != AP_OK) {
		free(d->name);
		free(d->where);
		return AP_ERR;
	}
	pr->n++;
	return AP_OK;
}

static int include_file(struct cctx *x, struct ap_conf *c, struct profiles *pr, size_t i,
                        const char *file)
{
	char *path = resolve(x, file), where[256];
	json_error_t je;
	json_t *root, *v;
	const char *name;

	errno = 0;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	free(path);
	if (!root && je.line < 1)
		return fail(x, "%.128s: unable to open (%s)", file,
		            errno ? strerror(errno) : "not a readable file");
	if (!root)
		return fail(x, "%.128s: line %d column %d: %s", file, je.line, je.column,
		            json_why(je.text));
	pr->files[pr->nfiles++] = root;
	if (!json_is_object(root))
		return fail(x, "%.128s: must map profile names to profiles", file);
	json_object_foreach(root, name, v)
	{
		char saved[256];
		int rc;
		snprintf(where, sizeof(where), "include_profiles[%zu] (%.128s): %.64s", i, file,
		         name);
		path_set(x, where, saved);
		rc = define_profile(x, c, pr, name, v);
		if (rc != AP_OK)
			return AP_ERR;
		path_restore(x, saved);
	}
	return AP_OK;
}

static int parse_profiles(struct cctx *x, json_t *root, struct ap_conf *c, struct profiles *pr)
{
	json_t *inl = json_object_get(root, "profiles");
	json_t *incl = json_object_get(root, "include_profiles"), *v;
	const char *name;
	size_t i;

	if (inl && !json_is_object(inl)) {
		push(x, "profiles");
		return fail(x, "must map profile names to profiles");
	}
	if (incl && (!json_is_array(incl) || json_array_size(incl) > 64)) {
		push(x, "include_profiles");
		return fail(x, "must be a list of at most 64 file names");
	}
	pr->files = calloc(json_array_size(incl) + 1, sizeof(*pr->files));
	if (!pr->files)
		return fail(x, "out of memory");
	json_object_foreach(inl, name, v)
	{
		size_t old = push(x, "profiles");
		push(x, name);
		if (define_profile(x, c, pr, name, v) != AP_OK)
			return AP_ERR;
		pop(x, old);
	}
	json_array_foreach(incl, i, v)
	{
		size_t old = push(x, "include_profiles");
		push_idx(x, i);
		if (!json_is_string(v) || !json_string_length(v))
			return fail(x, "must be a file name");
		if (include_file(x, c, pr, i, json_string_value(v)) != AP_OK)
			return AP_ERR;
		pop(x, old);
	}
	return AP_OK;
}

/* The ruleset for a route naming profile <pi> on <base>: compiled once per (base,
 * profile, policy), its strict variant too. */
static int profile_ruleset(struct cctx *x, struct ap_conf *c, struct profiles *pr, size_t pi,
                           const struct ap_ruleset *base, bool pass, const struct ap_ruleset **out)
{
	struct ap_ruleset *rs = NULL, **extra;
	struct combo *cb;
	char saved[256];
	int rc;

	for (size_t i = 0; i < pr->ncombos; i++)
		if (pr->combos[i].base == base && pr->combos[i].profile == pi &&
		    pr->combos[i].pass == pass) {
			*out = pr->combos[i].rs;
			return AP_OK;
		}
	path_set(x, pr->def[pi].where, saved);
	rc = compile_profile(x, base, &pr->def[pi], pass, &rs);
	path_restore(x, saved);
	extra = realloc(c->extra, (c->nextra + 1) * sizeof(*extra));
	cb = realloc(pr->combos, (pr->ncombos + 1) * sizeof(*cb));
	if (extra)
		c->extra = extra;
	if (cb)
		pr->combos = cb;
	if (!extra || !cb) {
		ap_ruleset_free(rs);
		free(rs);
		return fail(x, "out of memory");
	}
	c->extra[c->nextra++] = rs; /* owned by the configuration from here, even on failure */
	if (rc != AP_OK)
		return fail(x, "profile \"%.64s\" on ruleset \"%.64s\" does not combine",
		            pr->def[pi].name, base->name);
	pr->combos[pr->ncombos++] = (struct combo){base, pi, pass, rs};
	*out = rs;
	if (base->strict && base->strict != base &&
	    profile_ruleset(x, c, pr, pi, base->strict, pass, &rs->strict) != AP_OK)
		return AP_ERR;
	return AP_OK;
}

static void profiles_free(struct profiles *pr)
{
	for (size_t i = 0; i < pr->n; i++) {
		free(pr->def[i].name);
		free(pr->def[i].where);
	}
	free(pr->def);
	for (size_t i = 0; i < pr->nfiles; i++)
		json_decref(pr->files[i]);
	free(pr->files);
	free(pr->combos);
	memset(pr, 0, sizeof(*pr));
}

/* ---- upstreams and routes ---- */

/* A host name as a route or an upstream URL names it: letters, digits, '.', '-', '_', or
 * an IPv6 address in brackets. No port, path, user or wildcard: a route host with one of
 * those would never match, and an upstream URL with one would connect somewhere else. */
static bool host_ok(const char *h, size_t n)
{
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		if (n == 2)
			return false;
		for (size_t i = 1; i + 1 < n; i++)
			if (!strchr("0123456789abcdefABCDEF:.", h[i]))
				return false;
		return true;
	}
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
	}
	return n > 0;
}

static int parse_upstream(struct cctx *x, const char *name, json_t *o, struct ap_upstream_conf *u)
{
	static const char *const allowed[] = {"url",    "sink", "log_bodies", "ca_file",
	                                      "verify", "pool", NULL};
	const char *url, *ca;
	bool sink = false;

	u->name = dupstr(name);
	u->verify = true;
	u->pool = 32;
	if (need_object(x, o) != AP_OK || only_keys(x, o, allowed) != AP_OK ||
	    get_bool(x, o, "sink", &sink) != AP_OK || get_bool(x, o, "log_bodies", &u->sink_log) ||
	    get_string(x, o, "url", !sink, &url) != AP_OK ||
	    get_string(x, o, "ca_file", false, &ca) != AP_OK ||
	    get_bool(x, o, "verify", &u->verify) != AP_OK ||
	    get_uint(x, o, "pool", 0, 4096, &u->pool) != AP_OK)
		return AP_ERR;
	u->sink = sink;
	if (sink) {
		static const char *const url_only[] = {"url", "ca_file", "verify", "pool"};
		for (size_t i = 0; i < AP_ARRAY_LEN(url_only); i++)
			if (json_object_get(o, url_only[i])) {
				push(x, url_only[i]);
				return fail(x, "a sink has no url%s",
				            i ? ", so no TLS or connection settings" : "");
			}
		return AP_OK;
	}
	if (json_object_get(o, "log_bodies")) {
		push(x, "log_bodies");
		return fail(x, "applies to a sink only (\"sink\": true)");
	}
	if (ca)
		u->ca_file = resolve(x, ca);
	{
		const char *rest, *hs, *he, *colon;
		size_t old = push(x, "url");
		if (strncmp(url, "http://", 7) == 0)
			rest = url + 7;
		else if (strncmp(url, "https://", 8) == 0) {
			rest = url + 8;
			u->tls = true;
		} else
			return fail(x, "must start with http:// or https://");
		hs = rest;
		if (*hs == '[') {
			he = strchr(hs, ']');
			if (!he)
				return fail(x, "unterminated [IPv6] host");
			colon = he[1] == ':' ? he + 1 : NULL;
			if (he[1] && he[1] != ':' && he[1] != '/')
				return fail(x, "bad host");
			if (!host_ok(hs, (size_t)(he - hs + 1)))
				return fail(x, "bad host");
			u->host = strndup(hs + 1, (size_t)(he - hs - 1));
		} else {
			he = hs + strcspn(hs, ":/");
			colon = *he == ':' ? he : NULL;
			if (he > hs && !host_ok(hs, (size_t)(he - hs)))
				return fail(x,
				            "bad host (no user, query or fragment in an upstream "
				            "URL)");
			u->host = strndup(hs, (size_t)(he - hs));
		}
		if (!u->host || !u->host[0])
			return fail(x, "no host");
		if (colon) {
			size_t n = strspn(colon + 1, "0123456789");
			long port = strtol(colon + 1, NULL, 10);
			if (n == 0 || n > 5 || port < 1 || port > 65535 ||
			    (colon[1 + n] && colon[1 + n] != '/'))
				return fail(x, "bad port");
			u->port = strndup(colon + 1, n);
		} else
			u->port = dupstr(u->tls ? "443" : "80");
		if (strchr(rest, '/') && strcmp(strchr(rest, '/'), "/") != 0)
			return fail(x,
			            "an upstream URL has no path: routes keep the request's path");
		pop(x, old);
	}
	return AP_OK;
}

unsigned ap_scope_parse(const char *name)
{
	static const char *const names[] = {"analytics", "personalization", "push",
	                                    "location",  "minor",           "all"};
	for (unsigned i = 0; i < AP_ARRAY_LEN(names); i++)
		if (strcmp(name, names[i]) == 0)
			return 1u << i;
	return 0;
}

static int parse_route(struct cctx *x, json_t *o, struct ap_conf *c, struct profiles *pr,
                       struct ap_route *r)
{
	static const char *const allowed[] = {"host",  "path",    "upstream",        "ruleset",
	                                      "scope", "profile", "unknown_content", "opaque",
	                                      NULL};
	const char *host, *path, *up, *rs, *unk, *prof, *opq;
	const struct profile_def *pd = NULL;
	size_t pi = 0;
	json_t *scope = json_object_get(o, "scope");

	if (need_object(x, o) != AP_OK || only_keys(x, o, allowed) != AP_OK ||
	    get_string(x, o, "host", false, &host) != AP_OK ||
	    get_string(x, o, "path", false, &path) != AP_OK ||
	    get_string(x, o, "upstream", true, &up) != AP_OK ||
	    get_string(x, o, "profile", false, &prof) != AP_OK ||
	    get_string(x, o, "opaque", false, &opq) != AP_OK ||
	    get_string(x, o, "unknown_content", false, &unk) != AP_OK)
		return AP_ERR;
	if (prof && !(pd = find_profile(pr, prof, &pi))) {
		push(x, "profile");
		return fail(x, "no profile named \"%.64s\"", prof);
	}
	if (get_string(x, o, "ruleset", !pd || !pd->ruleset, &rs) != AP_OK)
		return AP_ERR;
	if (opq && !pd) {
		push(x, "opaque");
		return fail(x, "applies to a route with a profile (its opaque-payload rules)");
	}
	if (opq && strcmp(opq, "pass") != 0 && strcmp(opq, "refuse") != 0) {
		push(x, "opaque");
		return fail(x, "must be pass or refuse");
	}
	if (path && path[0] != '/') {
		push(x, "path");
		return fail(x, "a path prefix starts with '/'");
	}
	if (host && strcmp(host, "*") != 0 && !host_ok(host, strlen(host))) {
		push(x, "host");
		return fail(x, "a host name without port, path or wildcard (\"api.example.com\", "
		               "\"[::1]\"), or \"*\" for any");
	}
	r->host = host && strcmp(host, "*") != 0 ? dupstr(host) : NULL;
	r->path = dupstr(path ? path : "/");
	r->path_len = strlen(r->path);
	for (size_t i = 0; i < c->nupstreams; i++)
		if (strcmp(c->upstreams[i].name, up) == 0)
			r->upstream = &c->upstreams[i];
	if (!r->upstream) {
		push(x, "upstream");
		return fail(x, "no upstream named \"%.64s\"", up);
	}
	if (rs && !(r->ruleset = ap_conf_ruleset(c, rs))) {
		push(x, "ruleset");
		return fail(x, "no ruleset named \"%.64s\"", rs);
	}
	if (pd) {
		size_t old = push(x, "profile");
		if (profile_ruleset(x, c, pr, pi, rs ? r->ruleset : pd->ruleset,
		                    opq && strcmp(opq, "pass") == 0, &r->ruleset) != AP_OK)
			return AP_ERR;
		r->profile = dupstr(pd->name);
		pop(x, old);
	}
	r->unknown = AP_UNKNOWN_REJECT;
	if (unk) {
		if (strcmp(unk, "reject") == 0)
			r->unknown = AP_UNKNOWN_REJECT;
		else if (strcmp(unk, "pass") == 0)
			r->unknown = AP_UNKNOWN_PASS;
		else if (strcmp(unk, "scan") == 0)
			r->unknown = AP_UNKNOWN_SCAN;
		else {
			push(x, "unknown_content");
			return fail(x, "must be reject, pass or scan");
		}
	}
	if (scope) {
		size_t old = push(x, "scope"), i;
		json_t *s;
		if (json_is_string(scope))
			scope = json_pack("[O]", scope);
		else
			json_incref(scope);
		if (!json_is_array(scope)) {
			json_decref(scope);
			return fail(x, "must be a scope name or a list of them");
		}
		json_array_foreach(scope, i, s)
		{
			unsigned bit = json_is_string(s) ? ap_scope_parse(json_string_value(s)) : 0;
			if (!bit) {
				json_decref(scope);
				return fail(x, "unknown scope (analytics, personalization, push, "
				               "location, minor, all)");
			}
			r->scope |= bit;
		}
		json_decref(scope);
		pop(x, old);
	}
	return AP_OK;
}

/* A listen list ("address:port" or a list of them) at key <key> into *list, *n; absent:
 * <dflt> (NULL: none). */
static int parse_listen(struct cctx *x, json_t *v, const char *key, const char *dflt, char ***list,
                        size_t *n)
{
	size_t old = push(x, key), i;
	json_t *s;

	if (!v) {
		if (dflt) {
			*list = calloc(1, sizeof(char *));
			(*list)[0] = dupstr(dflt);
			*n = 1;
		}
		pop(x, old);
		return AP_OK;
	}
	if (json_is_string(v)) {
		*list = calloc(1, sizeof(char *));
		(*list)[0] = dupstr(json_string_value(v));
		*n = 1;
	} else if (json_is_array(v) && json_array_size(v) > 0) {
		*list = calloc(json_array_size(v), sizeof(char *));
		json_array_foreach(v, i, s)
		{
			if (!json_is_string(s)) {
				push_idx(x, i);
				return fail(x, "must be \"address:port\"");
			}
			(*list)[(*n)++] = dupstr(json_string_value(s));
		}
	} else
		return fail(x, "must be \"address:port\" or a list of them");
	for (i = 0; i < *n; i++) {
		const char *p = strrchr((*list)[i], ':');
		const char *a = (*list)[i];
		/* An IPv6 address is bracketed: in "::1" the last ':' is no port separator. */
		bool v6 = a[0] == '[';
		if (!p || p == a || !p[1] || strspn(p + 1, "0123456789") != strlen(p + 1) ||
		    strlen(p + 1) > 5 || atoi(p + 1) < 1 || atoi(p + 1) > 65535 ||
		    (v6 ? p[-1] != ']' || p == a + 2 : memchr(a, ':', (size_t)(p - a)) != NULL))
			return fail(x, "\"%.64s\" is not address:port (IPv6 as [addr]:port)",
			            (*list)[i]);
	}
	pop(x, old);
	return AP_OK;
}

static int parse_routes(struct cctx *x, json_t *routes, struct ap_conf *c, struct profiles *pr)
{
	size_t old = push(x, "routes"), i;
	json_t *v;

	if (!routes || !json_is_array(routes) || json_array_size(routes) == 0)
		return fail(x, "required: at least one route");
	c->routes = calloc(json_array_size(routes), sizeof(*c->routes));
	if (!c->routes)
		return fail(x, "out of memory");
	json_array_foreach(routes, i, v)
	{
		size_t o2 = push_idx(x, i);
		if (parse_route(x, v, c, pr, &c->routes[c->nroutes++]) != AP_OK)
			return AP_ERR;
		pop(x, o2);
	}
	pop(x, old);
	return AP_OK;
}

static int parse_root(struct cctx *x, json_t *root, struct ap_conf *c)
{
	static const char *const allowed[] = {
	        "listen",    "workers",    "admin",  "keys",     "limits",
	        "upstreams", "rulesets",   "routes", "profiles", "include_profiles",
	        "tls",       "access_log", "optout", NULL};
	struct profiles pr = {0};
	int rc;
	json_t *rulesets, *upstreams, *v, *admin;
	const char *name, *alog;

	if (!json_is_object(root))
		return fail(x, "the configuration must be a JSON object");
	if (only_keys(x, root, allowed) != AP_OK ||
	    parse_listen(x, json_object_get(root, "listen"), "listen", "127.0.0.1:8080", &c->listen,
	                 &c->nlisten) ||
	    get_uint(x, root, "workers", 0, 64, &c->workers) != AP_OK || /* AP_WORKERS_MAX */
	    parse_limits(x, json_object_get(root, "limits"), &c->limits) != AP_OK ||
	    parse_keys(x, json_object_get(root, "keys"), &c->keys) != AP_OK ||
	    get_string(x, root, "access_log", false, &alog) != AP_OK)
		return AP_ERR;
	/* "off" turns it off; a file name is resolved like every other file name. */
	c->access_log = alog && strcmp(alog, "off") != 0 ? resolve(x, alog) : dupstr(alog);

	if ((v = json_object_get(root, "tls"))) {
		static const char *const tk[] = {"listen", "cert", "key", NULL};
		const char *cert, *key;
		size_t old = push(x, "tls");
		if (need_object(x, v) != AP_OK || only_keys(x, v, tk) != AP_OK ||
		    get_string(x, v, "cert", true, &cert) != AP_OK ||
		    get_string(x, v, "key", true, &key) != AP_OK)
			return AP_ERR;
		if (!json_object_get(v, "listen")) {
			push(x, "listen");
			return fail(x, "required: where the TLS listener binds");
		}
		if (parse_listen(x, json_object_get(v, "listen"), "listen", NULL, &c->tls_listen,
		                 &c->ntls_listen) != AP_OK)
			return AP_ERR;
		c->tls_cert = resolve(x, cert);
		c->tls_key = resolve(x, key);
		{
			/* A private key others can read is refused, like the HMAC keys. */
			struct stat st;
			push(x, "key");
			if (stat(c->tls_key, &st) != 0)
				return fail(x, "%s: %s", c->tls_key, strerror(errno));
			if (!S_ISREG(st.st_mode) || (st.st_mode & 007))
				return fail(
				        x,
				        "%s: must be a regular file others cannot read (chmod 600)",
				        c->tls_key);
		}
		pop(x, old);
	}

	if ((v = json_object_get(root, "optout"))) {
		static const char *const ok[] = {"shm", "dir", "capacity", NULL};
		const char *shm, *dir;
		size_t old = push(x, "optout");
		if (need_object(x, v) != AP_OK || only_keys(x, v, ok) != AP_OK ||
		    get_string(x, v, "shm", false, &shm) != AP_OK ||
		    get_string(x, v, "dir", true, &dir) != AP_OK ||
		    get_uint(x, v, "capacity", 0, 150000000, &c->optout_capacity) != AP_OK)
			return AP_ERR;
		if (shm && (shm[0] != '/' || strchr(shm + 1, '/') || strlen(shm) > 100)) {
			push(x, "shm");
			return fail(x, "a shared-memory name is \"/name\" (at most 100 bytes) with "
			               "no other '/'");
		}
		c->optout_shm = dupstr(shm ? shm : "/anonproxy-optout");
		c->optout_dir = resolve(x, dir);
		pop(x, old);
	}

	if ((admin = json_object_get(root, "admin"))) {
		static const char *const ak[] = {"listen", "token_file", NULL};
		const char *l, *t;
		size_t old = push(x, "admin");
		if (need_object(x, admin) != AP_OK || only_keys(x, admin, ak) != AP_OK ||
		    get_string(x, admin, "listen", true, &l) != AP_OK ||
		    get_string(x, admin, "token_file", true, &t) != AP_OK)
			return AP_ERR;
		c->admin_listen = dupstr(l);
		c->admin_token_file = resolve(x, t);
		pop(x, old);
	}

	upstreams = json_object_get(root, "upstreams");
	{
		size_t old = push(x, "upstreams"), n = upstreams ? json_object_size(upstreams) : 0;
		if (upstreams && !json_is_object(upstreams))
			return fail(x, "must map names to upstreams");
		c->upstreams = calloc(n + 1, sizeof(*c->upstreams));
		json_object_foreach(upstreams, name, v)
		{
			size_t o2 = push(x, name);
			if (parse_upstream(x, name, v, &c->upstreams[c->nupstreams++]) != AP_OK)
				return AP_ERR;
			pop(x, o2);
		}
		/* The built-in sink is there unless the file defines its own. */
		if (!json_object_get(upstreams, "sink")) {
			c->upstreams[c->nupstreams].name = dupstr("sink");
			c->upstreams[c->nupstreams].sink = true;
			c->nupstreams++;
		}
		pop(x, old);
	}

	rulesets = json_object_get(root, "rulesets");
	{
		size_t old = push(x, "rulesets");
		if (!rulesets || !json_is_object(rulesets) || json_object_size(rulesets) == 0)
			return fail(x, "required: at least one named ruleset");
		c->rulesets = calloc(json_object_size(rulesets), sizeof(*c->rulesets));
		json_object_foreach(rulesets, name, v)
		{
			size_t o2 = push(x, name);
			if (parse_ruleset(x, name, v, &c->rulesets[c->nrulesets++]) != AP_OK)
				return AP_ERR;
			pop(x, o2);
		}
		/* Strict variants refer to other rulesets by name: resolved once all exist. */
		json_object_foreach(rulesets, name, v)
		{
			const char *strict;
			struct ap_ruleset *rs = (struct ap_ruleset *)ap_conf_ruleset(c, name);
			size_t o2 = push(x, name);
			if (get_string(x, v, "strict", false, &strict) != AP_OK)
				return AP_ERR;
			if (strict && !(rs->strict = ap_conf_ruleset(c, strict))) {
				push(x, "strict");
				return fail(x, "no ruleset named \"%.64s\"", strict);
			}
			pop(x, o2);
		}
		pop(x, old);
	}

	rc = parse_profiles(x, root, c, &pr);
	if (rc == AP_OK)
		rc = parse_routes(x, json_object_get(root, "routes"), c, &pr);
	profiles_free(&pr);
	/* Rulesets with user rules get their per-user variants, now that strict variants and
	 * profile combinations are known. */
	for (size_t k = 0; rc == AP_OK && k < c->nrulesets; k++)
		if (ap_ruleset_variants(&c->rulesets[k]) != AP_OK)
			rc = fail(x, "out of memory");
	for (size_t k = 0; rc == AP_OK && k < c->nextra; k++)
		if (ap_ruleset_variants(c->extra[k]) != AP_OK)
			rc = fail(x, "out of memory");
	return rc;
}

/* jansson's message without the input it quotes ("near 'xyz'", "byte 0x8e", "'\\uD800'"):
 * when the file given is not the configuration but, say, a key file, that input is the
 * secret. The line and column say where to look. */
static const char *json_why(char *text)
{
	static const char *const quoting[] = {" near '", " 0x", " '\\u"};

	for (size_t i = 0; i < AP_ARRAY_LEN(quoting); i++) {
		char *q = strstr(text, quoting[i]);
		if (q)
			*q = 0;
	}
	if (strncmp(text, "unable to decode byte", 21) == 0)
		return "not UTF-8 text";
	return text;
}

struct ap_conf *ap_conf_parse(const char *text, size_t n, const char *dir, char *err)
{
	struct cctx x = {.err = err, .dir = dir};
	struct ap_conf *c = calloc(1, sizeof(*c));
	json_error_t je;
	json_t *root;

	err[0] = 0;
	if (!c) {
		snprintf(err, AP_CONF_ERR_MAX, "out of memory");
		return NULL;
	}
	root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		snprintf(err, AP_CONF_ERR_MAX, "line %d column %d: %s", je.line, je.column,
		         json_why(je.text));
		free(c);
		return NULL;
	}
	c->dir = dupstr(dir);
	if (parse_root(&x, root, c) != AP_OK) {
		json_decref(root);
		ap_conf_free(c);
		return NULL;
	}
	json_decref(root);
	return c;
}

struct ap_conf *ap_conf_load(const char *path, char *err)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL, *dir, *slash, e2[AP_CONF_ERR_MAX];
	size_t len = 0;
	struct ap_conf *c;

	if (!f) {
		snprintf(err, AP_CONF_ERR_MAX, "%s: %s", path, strerror(errno));
		return NULL;
	}
	{
		char buf[65536];
		size_t r;
		while ((r = fread(buf, 1, sizeof(buf), f)) > 0) {
			char *nt = realloc(text, len + r);
			if (!nt || len + r > (16u << 20)) {
				free(nt ? nt : text);
				fclose(f);
				snprintf(err, AP_CONF_ERR_MAX, "%s: too large or out of memory",
				         path);
				return NULL;
			}
			text = nt;
			memcpy(text + len, buf, r);
			len += r;
		}
	}
	fclose(f);
	dir = dupstr(path);
	slash = strrchr(dir, '/');
	if (slash)
		slash[slash == dir] = 0; /* "/anonproxy.json" lives in "/", not in "" */
	else
		strcpy(dir, ".");
	c = ap_conf_parse(text ? text : "", len, dir, e2);
	free(text);
	free(dir);
	if (!c) {
		err[0] = 0;
		cat(err, AP_CONF_ERR_MAX, path);
		cat(err, AP_CONF_ERR_MAX, ": ");
		cat(err, AP_CONF_ERR_MAX, e2);
		return NULL;
	}
	c->path = dupstr(path);
	return c;
}

void ap_conf_free(struct ap_conf *c)
{
	if (!c)
		return;
	ap_keyring_wipe(&c->keys);
	for (size_t i = 0; i < c->nrulesets; i++)
		ap_ruleset_free(&c->rulesets[i]);
	free(c->rulesets);
	for (size_t i = 0; i < c->nupstreams; i++) {
		free(c->upstreams[i].name);
		free(c->upstreams[i].host);
		free(c->upstreams[i].port);
		free(c->upstreams[i].ca_file);
	}
	free(c->upstreams);
	for (size_t i = 0; i < c->nroutes; i++) {
		free(c->routes[i].host);
		free(c->routes[i].path);
		free(c->routes[i].profile);
	}
	for (size_t i = 0; i < c->nextra; i++) {
		ap_ruleset_free(c->extra[i]);
		free(c->extra[i]);
	}
	free(c->extra);
	free(c->routes);
	for (size_t i = 0; i < c->nlisten; i++)
		free(c->listen[i]);
	free(c->listen);
	for (size_t i = 0; i < c->ntls_listen; i++)
		free(c->tls_listen[i]);
	free(c->tls_listen);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->optout_shm);
	free(c->optout_dir);
	free(c->admin_listen);
	free(c->admin_token_file);
	free(c->access_log);
	free(c->path);
	free(c->dir);
	free(c);
}

const struct ap_ruleset *ap_conf_ruleset(const struct ap_conf *c, const char *name)
{
	for (size_t i = 0; i < c->nrulesets; i++)
		if (c->rulesets[i].name && strcmp(c->rulesets[i].name, name) == 0)
			return &c->rulesets[i];
	return NULL;
}

static bool host_eq(const char *pat, struct ap_span host)
{
	const char *colon = host.n && host.p[0] != '[' ? memchr(host.p, ':', host.n) : NULL;
	size_t n = colon ? (size_t)(colon - host.p) : host.n;

	if (host.n && host.p[0] == '[') {
		const char *rb = memchr(host.p, ']', host.n);
		n = rb ? (size_t)(rb - host.p + 1) : host.n;
	}
	if (strlen(pat) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char a = pat[i], b = host.p[i];
		if (a >= 'A' && a <= 'Z')
			a |= 0x20;
		if (b >= 'A' && b <= 'Z')
			b |= 0x20;
		if (a != b)
			return false;
	}
	return true;
}

const struct ap_route *ap_conf_route(const struct ap_conf *c, struct ap_span host,
                                     struct ap_span path)
{
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct ap_route *r = &c->routes[i];
		if (r->host && !host_eq(r->host, host))
			continue;
		if (path.n >= r->path_len && memcmp(path.p, r->path, r->path_len) == 0)
			return r;
	}
	return NULL;
}
