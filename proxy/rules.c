/* Lookups in a compiled ruleset — key names, header names, JSON path steps — and the
 * small builders conf.c uses to fill one. The lookups are on the scrubbers' hot path: a
 * length bitmap rejects most keys before any hashing. */
#include <stdlib.h>
#include <string.h>

#include "rules.h"

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* FNV-1a over the ASCII-lower-cased bytes; never 0 so 0 marks an empty slot. */
static inline uint32_t key_hash(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ lower((unsigned char)k[i])) * 16777619u;
	return h ? h : 1;
}

static inline bool eq_fold(const char *lc, const char *k, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lc[i] != (char)lower((unsigned char)k[i]))
			return false;
	return true;
}

const struct ap_field *ap_rules_key_slow(const struct ap_ruleset *rs, const char *k, size_t n)
{
	uint32_t h, i;

	h = key_hash(k, n);
	for (i = h & rs->key_mask;; i = (i + 1) & rs->key_mask) {
		const struct ap_key_slot *s = &rs->keys[i];
		if (s->hash == 0)
			return NULL;
		if (s->hash == h && s->len == n && eq_fold(s->name, k, n))
			return &rs->fields[s->field];
	}
}

const struct ap_field *ap_rules_header(const struct ap_ruleset *rs, const char *name, size_t n)
{
	for (unsigned i = 0; i < rs->nheaders; i++) {
		const struct ap_header_rule *h = &rs->headers[i];
		if (h->len == n && eq_fold(h->name, name, n))
			return &rs->fields[h->field];
	}
	return NULL;
}

uint64_t ap_paths_step(const struct ap_path *paths, uint64_t mask, unsigned depth, const char *k,
                       size_t n, uint32_t idx, uint64_t *ended)
{
	uint64_t out = 0, m = mask;

	*ended = 0;
	while (m) {
		unsigned r = (unsigned)__builtin_ctzll(m);
		const struct ap_path *p = &paths[r];
		const struct ap_path_seg *s;
		bool ok;

		m &= m - 1;
		if (depth >= p->nseg)
			continue;
		s = &p->seg[depth];
		switch (s->kind) {
		case AP_SEG_KEY:
			ok = k && s->len == n && eq_fold(s->name, k, n);
			break;
		case AP_SEG_ANY_KEY:
			ok = k != NULL;
			break;
		case AP_SEG_ANY_IDX:
			ok = k == NULL;
			break;
		default:
			ok = k == NULL && s->idx == idx;
			break;
		}
		if (!ok)
			continue;
		out |= 1ull << r;
		if (depth + 1 == p->nseg)
			*ended |= 1ull << r;
	}
	return out;
}

uint64_t ap_rules_path_step(const struct ap_ruleset *rs, uint64_t mask, unsigned depth,
                            const char *k, size_t n, uint32_t idx, const struct ap_field **field)
{
	uint64_t ended, out = ap_paths_step(rs->paths, mask, depth, k, n, idx, &ended);

	*field = ended ? &rs->fields[rs->paths[__builtin_ctzll(ended)].field] : NULL;
	return out;
}

int ap_rules_keys_init(struct ap_ruleset *rs, size_t nkeys)
{
	size_t size = 16;

	while (size < nkeys * 2)
		size *= 2;
	rs->keys = calloc(size, sizeof(*rs->keys));
	if (!rs->keys)
		return AP_ERR;
	rs->key_mask = (uint32_t)(size - 1);
	return AP_OK;
}

int ap_rules_add_key(struct ap_ruleset *rs, const char *name, uint16_t field, const char **why)
{
	size_t n = strlen(name);
	uint32_t h, i;

	if (n == 0 || n >= AP_KEY_NAME_MAX) {
		*why = n ? "key name longer than 63 bytes" : "empty key name";
		return AP_ERR;
	}
	h = key_hash(name, n);
	for (i = h & rs->key_mask; rs->keys[i].hash; i = (i + 1) & rs->key_mask) {
		if (rs->keys[i].hash == h && rs->keys[i].len == n &&
		    eq_fold(rs->keys[i].name, name, n)) {
			*why = "key listed twice in this ruleset";
			return AP_ERR;
		}
	}
	rs->keys[i].hash = h;
	rs->keys[i].len = (uint8_t)n;
	rs->keys[i].field = field;
	for (size_t j = 0; j < n; j++)
		rs->keys[i].name[j] = (char)lower((unsigned char)name[j]);
	rs->key_lens |= 1ull << n;
	{
		unsigned b = ap_rules_key_bloom(name, n);
		rs->key_bloom[b >> 6] |= 1ull << (b & 63);
	}
	return AP_OK;
}

static int seg_name(struct ap_path_seg *s, const char *p, size_t n, const char **why)
{
	if (n == 0 || n >= AP_KEY_NAME_MAX) {
		*why = n ? "path segment longer than 63 bytes" : "empty path segment";
		return AP_ERR;
	}
	s->kind = AP_SEG_KEY;
	s->len = (uint8_t)n;
	for (size_t i = 0; i < n; i++)
		s->name[i] = (char)lower((unsigned char)p[i]);
	return AP_OK;
}

int ap_rules_path_compile(struct ap_path *path, const char *text, const char **why)
{
	const char *p = text;

	memset(path, 0, sizeof(*path));
	if (*p++ != '$') {
		*why = "a path starts with '$'";
		return AP_ERR;
	}
	while (*p) {
		struct ap_path_seg *s;

		if (path->nseg == AP_PATH_SEGS_MAX) {
			*why = "path has more than 16 segments";
			return AP_ERR;
		}
		s = &path->seg[path->nseg];
		if (*p == '.') {
			size_t n = strcspn(++p, ".[");
			if (n == 1 && *p == '*')
				s->kind = AP_SEG_ANY_KEY;
			else if (seg_name(s, p, n, why) != AP_OK)
				return AP_ERR;
			p += n;
		} else if (p[0] == '[' && p[1] == '*' && p[2] == ']') {
			s->kind = AP_SEG_ANY_IDX;
			p += 3;
		} else if (p[0] == '[' && p[1] == '\'') {
			const char *e = strchr(p + 2, '\'');
			if (!e || e[1] != ']') {
				*why = "unterminated ['name'] segment";
				return AP_ERR;
			}
			if (seg_name(s, p + 2, (size_t)(e - p - 2), why) != AP_OK)
				return AP_ERR;
			p = e + 2;
		} else if (p[0] == '[' && p[1] >= '0' && p[1] <= '9') {
			char *e;
			unsigned long v = strtoul(p + 1, &e, 10);
			if (*e != ']' || v > UINT32_MAX) {
				*why = "bad [index] segment";
				return AP_ERR;
			}
			s->kind = AP_SEG_IDX;
			s->idx = (uint32_t)v;
			p = e + 1;
		} else {
			*why = "expected .name, .*, [*], [n] or ['name']";
			return AP_ERR;
		}
		path->nseg++;
	}
	if (path->nseg == 0) {
		*why = "a path must name at least one step below '$'";
		return AP_ERR;
	}
	return AP_OK;
}

bool ap_rules_media_match(const struct ap_media *m, struct ap_span mt)
{
	if (m->any_subtype && m->len == 0)
		return true; /* any media type, or none */
	if (m->any_subtype)
		return mt.n > m->len && eq_fold(m->name, mt.p, m->len);
	return mt.n == m->len && eq_fold(m->name, mt.p, mt.n);
}

int ap_rules_media_compile(struct ap_media *m, const char *text, const char **why)
{
	size_t n = strlen(text);
	const char *slash = strchr(text, '/');

	memset(m, 0, sizeof(*m));
	if (n == 0 || n >= AP_MEDIA_MAX || !slash || slash == text || !slash[1] ||
	    strchr(slash + 1, '/') || strpbrk(text, " \t;,")) {
		*why = "a media type is \"type/subtype\" or \"type/*\", at most 63 bytes, "
		       "without parameters";
		return AP_ERR;
	}
	if (strcmp(text, "*/*") == 0) {
		m->any_subtype = true;
		return AP_OK;
	}
	if (strcmp(slash + 1, "*") == 0 && !memchr(text, '*', (size_t)(slash - text))) {
		m->any_subtype = true;
		n = (size_t)(slash - text + 1); /* "ut/" */
	} else if (strchr(text, '*')) {
		*why = "'*' stands for a whole subtype (\"type/*\") or anything (\"*/*\")";
		return AP_ERR;
	}
	for (size_t i = 0; i < n; i++)
		m->name[i] = (char)lower((unsigned char)text[i]);
	m->len = (uint8_t)n;
	return AP_OK;
}

static bool ad_class(unsigned c)
{
	return c == AP_CLASS_ADID || c == AP_CLASS_IDFA || c == AP_CLASS_GAID || c == AP_CLASS_OAID;
}

static bool location_class(unsigned c)
{
	return c == AP_CLASS_GPS || c == AP_CLASS_BSSID || c == AP_CLASS_CELL_ID;
}

/* The action of class <c> under variant <v> of <rs>, from <a> (what rs does). */
static struct ap_action variant_act(const struct ap_ruleset *rs, unsigned v, struct ap_action a)
{
	unsigned c = a.cls;

	if (a.act == AP_ACT_NONE || a.act == AP_ACT_DROP)
		return a;
	if ((v & 4) && rs->strict && rs->strict != rs && a.act != AP_ACT_KEEP)
		a = rs->strict->class_act[c];
	if (((v & 1) && ad_class(c)) || ((v & 2) && location_class(c))) {
		a = (struct ap_action){.act = AP_ACT_DROP, .cls = (uint8_t)c};
	}
	return a;
}

int ap_ruleset_variants(struct ap_ruleset *rs)
{
	if (!rs->user || rs->variant[0])
		return AP_OK;
	rs->variant[0] = rs;
	for (unsigned v = 1; v < 8; v++) {
		struct ap_ruleset *x = malloc(sizeof(*x));
		if (!x)
			return AP_ERR;
		memcpy(x, rs, sizeof(*x));
		x->base = rs;
		x->fields = malloc((rs->nfields + 1) * sizeof(*x->fields));
		if (!x->fields) {
			free(x);
			return AP_ERR;
		}
		if (rs->nfields) /* a ruleset may have no fields: fields is NULL */
			memcpy(x->fields, rs->fields, rs->nfields * sizeof(*x->fields));
		for (unsigned i = 0; i < rs->nfields; i++)
			if (!x->fields[i].ncodec)
				x->fields[i].act = variant_act(rs, v, x->fields[i].act);
		for (unsigned c = 1; c < AP_CLASS_MAX; c++) {
			x->class_act[c] = variant_act(rs, v, rs->class_act[c]);
			x->class_num[c] = variant_act(rs, v, rs->class_num[c]);
			if ((v & 4) && x->class_num[c].act == AP_ACT_HASH)
				x->class_num[c].fmt =
				        AP_HASH_PRESERVE; /* a number stays a number */
		}
		rs->variant[v] = x;
	}
	for (unsigned v = 1; v < 8; v++)
		memcpy(rs->variant[v]->variant, rs->variant, sizeof(rs->variant));
	return AP_OK;
}

const struct ap_ruleset *ap_ruleset_for(const struct ap_ruleset *rs, unsigned scopes)
{
	unsigned v = (scopes >> 1 & 1) | (scopes >> 3 & 1) << 1 | (scopes >> 4 & 1) << 2;

	return rs->variant[0] ? rs->variant[v] : rs;
}

void ap_ruleset_free(struct ap_ruleset *rs)
{
	if (!rs)
		return;
	if (rs->base) { /* a variant: only its fields are its own */
		free(rs->fields);
		memset(rs, 0, sizeof(*rs));
		return;
	}
	for (unsigned v = 1; v < 8; v++)
		if (rs->variant[v]) {
			ap_ruleset_free(rs->variant[v]);
			free(rs->variant[v]);
		}
	free(rs->name);
	free(rs->fields);
	free(rs->keys);
	free(rs->paths);
	free(rs->headers);
	free(rs->user);
	free(rs->pb);
	free(rs->signers);
	free(rs->opaque);
	free(rs->bodies);
	memset(rs, 0, sizeof(*rs));
}
