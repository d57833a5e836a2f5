/* The leak corpus end to end: every capture in tests/corpus/ (SDK-shaped requests with
 * planted identifiers, listed in tests/corpus/manifest.tsv) goes through the real anonproxy
 * to the recording upstream, and no planted value may reach the upstream in any form:
 * verbatim or case-changed, a MAC or UUID with other separators, percent-encoded, inside
 * base64 (either alphabet, any alignment), inside gzip/zlib (at any depth, also inside
 * base64), after JSON unescaping, or as an unkeyed MD5/SHA-1/SHA-256 digest (hex or raw).
 *
 * The checker is tested too: it must find every planted value in the captures themselves,
 * every one that a proxy without rules forwards, and exactly the Mixpanel ones when the
 * ruleset lacks the codec that opens Mixpanel's base64 form field. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "harness.h"

#define CORPUS     "tests/corpus"
#define DEFAULT    "conf/anonproxy.json"
#define MAX_DEPTH  6     /* layers of decoding below the request as received */
#define MAX_LAYERS 20000 /* per scan: a bound, not a figure we expect to reach */
#define MIN_NEEDLE 8     /* shorter forms would match by chance */
#define MAX_INFL   (16 << 20)
#define BLOOM_BITS (1u << 20)

/* ---- the corpus ---- */

struct needle {
	const unsigned char *p;
	size_t n;
	bool icase; /* compared in ASCII lower case */
	const char *form;
};

/* One planted identifier: a line of manifest.tsv, and every form it is searched in. */
struct plant {
	const char *capture, *cls, *value, *where;
	struct needle *nd;
	size_t nnd, cap;
};

struct capture {
	const char *name;
	const char *raw; /* the request exactly as sent */
	size_t len;
};

static struct plant *plants;
static size_t nplants;
static struct capture *caps;
static size_t ncaps;

/* A leak: plant <plant> found in what capture <cap> sent upstream. */
struct leak {
	size_t plant, cap;
	const char *form, *layer;
};

/* ---- needles ---- */

static void add_needle(struct plant *pl, const void *p, size_t n, bool icase, const char *form)
{
	struct needle *nd;
	unsigned char *c;

	if (n < MIN_NEEDLE)
		return;
	for (size_t i = 0; i < pl->nnd; i++)
		if (pl->nd[i].n == n && pl->nd[i].icase == icase && !memcmp(pl->nd[i].p, p, n))
			return;
	if (pl->nnd == pl->cap) {
		struct needle *m = ht_alloc((pl->cap * 2 + 16) * sizeof(*m));
		if (pl->nnd)
			memcpy(m, pl->nd, pl->nnd * sizeof(*m));
		pl->nd = m;
		pl->cap = pl->cap * 2 + 16;
	}
	c = ht_alloc(n + 1);
	memcpy(c, p, n);
	if (icase)
		for (size_t i = 0; i < n; i++)
			c[i] = (unsigned char)tolower(c[i]);
	nd = &pl->nd[pl->nnd++];
	*nd = (struct needle){c, n, icase, form};
}

static char *str_case(const char *s, int (*f)(int))
{
	size_t n = strlen(s);
	char *o = ht_alloc(n + 1);

	for (size_t i = 0; i < n; i++)
		o[i] = (char)f((unsigned char)s[i]);
	return o;
}

/* Percent-encodes <s>: every byte when <all>, else all but the unreserved ones. */
static char *pct(const char *s, bool all)
{
	char *o = ht_alloc(strlen(s) * 3 + 1), *w = o;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (!all && (isalnum(*p) || strchr("-_.~", *p)))
			*w++ = (char)*p;
		else
			w += sprintf(w, "%%%02X", *p);
	}
	*w = 0;
	return o;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of <p, n>, n a multiple of 3 (no padding); <url>: the URL alphabet. */
static char *b64_groups(const unsigned char *p, size_t n, bool url)
{
	char *o = ht_alloc(n / 3 * 4 + 1), *w = o;

	for (size_t i = 0; i + 3 <= n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
		for (int k = 3; k >= 0; k--) {
			char c = B64[(v >> (6 * k)) & 63];
			*w++ = url && c == '+' ? '-' : url && c == '/' ? '_' : c;
		}
	}
	*w = 0;
	return o;
}

/* The 12 hex digits of a MAC written with ':' or '-' (one kind) or '.' (Cisco) or none. */
static bool mac_digits(const char *s, char out[13])
{
	size_t n = 0;
	char sep = 0;

	for (const char *p = s; *p; p++) {
		if (isxdigit((unsigned char)*p)) {
			if (n == 12)
				return false;
			out[n++] = (char)tolower((unsigned char)*p);
		} else if (strchr(":-.", *p) && (!sep || sep == *p))
			sep = *p;
		else
			return false;
	}
	out[n] = 0;
	return n == 12 && (sep || strlen(s) == 12);
}

static bool uuid_shape(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
		if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-'
		                                              : !isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static void add_digests(struct plant *pl, const char *t)
{
	static const struct {
		const char *name, *hex, *raw;
	} md[] = {{"md5", "md5 hex", "md5 raw"},
	          {"sha1", "sha1 hex", "sha1 raw"},
	          {"sha256", "sha256 hex", "sha256 raw"}};

	for (size_t i = 0; i < sizeof(md) / sizeof(md[0]); i++) {
		unsigned char d[EVP_MAX_MD_SIZE];
		unsigned dn = 0;
		char hex[2 * EVP_MAX_MD_SIZE + 1];
		cr_assert(EVP_Digest(t, strlen(t), d, &dn, EVP_get_digestbyname(md[i].name), NULL));
		for (unsigned k = 0; k < dn; k++)
			sprintf(hex + 2 * k, "%02x", d[k]);
		add_needle(pl, hex, 2 * dn, true, md[i].hex);
		add_needle(pl, d, dn, false, md[i].raw);
	}
}

/* Every form of <pl->value> the checker looks for. */
static void make_needles(struct plant *pl)
{
	const char *text[8];
	size_t nt = 0;
	char mac[13];

	text[nt++] = pl->value;
	if (mac_digits(pl->value, mac)) {
		text[nt++] = ht_fmt("%.2s:%.2s:%.2s:%.2s:%.2s:%.2s", mac, mac + 2, mac + 4, mac + 6,
		                    mac + 8, mac + 10);
		text[nt++] = ht_fmt("%.2s-%.2s-%.2s-%.2s-%.2s-%.2s", mac, mac + 2, mac + 4, mac + 6,
		                    mac + 8, mac + 10);
		text[nt++] = ht_fmt("%.4s.%.4s.%.4s", mac, mac + 4, mac + 8);
		text[nt++] = ht_fmt("%s", mac);
	}
	if (uuid_shape(pl->value))
		text[nt++] = ht_fmt("%.8s%.4s%.4s%.4s%.12s", pl->value, pl->value + 9,
		                    pl->value + 14, pl->value + 19, pl->value + 24);
	for (size_t i = 0; i < nt; i++) {
		/* Case-insensitive, so case-changed forms and either hex case of %XX are in. */
		add_needle(pl, text[i], strlen(text[i]), true, i ? "other separators" : "verbatim");
		add_needle(pl, pct(text[i], false), strlen(pct(text[i], false)), true,
		           "percent-encoded");
		add_needle(pl, pct(text[i], true), strlen(pct(text[i], true)), true,
		           "percent-encoded (every byte)");
		const char *cases[3] = {text[i], str_case(text[i], tolower),
		                        str_case(text[i], toupper)};
		for (int c = 0; c < 3; c++) {
			size_t n = strlen(cases[c]);
			add_digests(pl, cases[c]);
			/* Base64 is case-sensitive: each case of the value, each alignment. The
			 * groups made of value bytes only are the same wherever the value sits in
			 * the encoded stream: start at byte j, take whole groups of three. */
			for (size_t j = 0; j < 3 && j < n; j++) {
				size_t k = (n - j) / 3 * 3;
				const unsigned char *p = (const unsigned char *)cases[c] + j;
				char *s = b64_groups(p, k, false), *u = b64_groups(p, k, true);
				add_needle(pl, s, strlen(s), false, "base64");
				add_needle(pl, u, strlen(u), false, "base64url");
			}
		}
	}
}

/* ---- the corpus files ---- */

static void load_corpus(void)
{
	size_t n;
	char *text = ht_read(CORPUS "/manifest.tsv", &n), *save = NULL;
	DIR *d;
	struct dirent *e;

	cr_assert_not_null(text,
	                   "cannot read " CORPUS "/manifest.tsv (run from the top directory)");
	plants = ht_alloc(512 * sizeof(*plants));
	nplants = 0;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4] = {0}, *s2 = NULL;
		int k = 0;
		if (line[0] == '#' || !line[0])
			continue;
		for (char *t = strtok_r(line, "\t", &s2); t && k < 4; t = strtok_r(NULL, "\t", &s2))
			f[k++] = t;
		cr_assert_eq(k, 4, "manifest.tsv: 4 tab-separated fields wanted: %s", line);
		cr_assert_lt(nplants, 512);
		plants[nplants] = (struct plant){f[0], f[1], f[2], f[3], NULL, 0, 0};
		make_needles(&plants[nplants]);
		nplants++;
	}
	caps = ht_alloc(64 * sizeof(*caps));
	ncaps = 0;
	d = opendir(CORPUS);
	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 6 || strcmp(e->d_name + l - 5, ".http"))
			continue;
		cr_assert_lt(ncaps, 64);
		caps[ncaps].name = ht_fmt("%s", e->d_name);
		caps[ncaps].raw = ht_read(ht_fmt(CORPUS "/%s", e->d_name), &caps[ncaps].len);
		cr_assert_not_null(caps[ncaps].raw);
		ncaps++;
	}
	closedir(d);
	/* Sorted, so that request N at the upstream is capture N-1 in every run. */
	for (size_t i = 1; i < ncaps; i++)
		for (size_t j = i; j > 0 && strcmp(caps[j - 1].name, caps[j].name) > 0; j--) {
			struct capture t = caps[j];
			caps[j] = caps[j - 1];
			caps[j - 1] = t;
		}
	cr_assert_geq(ncaps, 8, "the corpus has at least eight captures");
	for (size_t i = 0; i < nplants; i++) {
		bool found = false;
		for (size_t c = 0; c < ncaps; c++)
			found |= !strcmp(caps[c].name, plants[i].capture);
		cr_assert(found, "manifest.tsv names %s, which is not in " CORPUS,
		          plants[i].capture);
	}
	for (size_t c = 0; c < ncaps; c++) {
		size_t k = 0;
		for (size_t i = 0; i < nplants; i++)
			k += !strcmp(caps[c].name, plants[i].capture);
		cr_assert_gt(k, 0, "%s has no planted value in manifest.tsv", caps[c].name);
	}
}

/* ---- the checker ---- */

struct scan {
	const struct plant *pl; /* the values looked for */
	size_t npl;
	bool *hit; /* [npl] */
	const char **form, **layer;
	size_t layers;
	unsigned char *bloom_exact, *bloom_lower;
};

static uint32_t h8(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	v *= 0x9E3779B97F4A7C15ull;
	return (uint32_t)(v >> 40) & (BLOOM_BITS - 1);
}

static const unsigned char *find(const unsigned char *h, size_t hn, const unsigned char *n,
                                 size_t nn)
{
	return nn <= hn ? memmem(h, hn, n, nn) : NULL;
}

static void scan_layer(struct scan *s, const unsigned char *p, size_t n, const char *layer,
                       int depth);

/* Searches <p, n> for every needle not found yet; <p, n> is one decoded layer. */
static void search(struct scan *s, const unsigned char *p, size_t n, const char *layer)
{
	unsigned char *low = ht_alloc(n + 1);

	if (n < MIN_NEEDLE)
		return;
	for (size_t i = 0; i < n; i++)
		low[i] = (unsigned char)tolower(p[i]);
	/* A Bloom filter of the 8-byte windows, so each needle costs one probe unless its
	 * first eight bytes occur somewhere. */
	memset(s->bloom_exact, 0, BLOOM_BITS / 8);
	memset(s->bloom_lower, 0, BLOOM_BITS / 8);
	for (size_t i = 0; i + 8 <= n; i++) {
		uint32_t a = h8(p + i), b = h8(low + i);
		s->bloom_exact[a >> 3] |= (unsigned char)(1u << (a & 7));
		s->bloom_lower[b >> 3] |= (unsigned char)(1u << (b & 7));
	}
	for (size_t k = 0; k < s->npl; k++) {
		if (s->hit[k])
			continue;
		for (size_t j = 0; j < s->pl[k].nnd; j++) {
			const struct needle *nd = &s->pl[k].nd[j];
			unsigned char *bl = nd->icase ? s->bloom_lower : s->bloom_exact;
			uint32_t h = h8(nd->p);
			if (!(bl[h >> 3] & (1u << (h & 7))))
				continue;
			if (find(nd->icase ? low : p, n, nd->p, nd->n)) {
				s->hit[k] = true;
				s->form[k] = nd->form;
				s->layer[k] = layer;
				break;
			}
		}
	}
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* Percent-decoding ('+' as a space); NULL if nothing would change. */
static unsigned char *pct_decode(const unsigned char *p, size_t n, size_t *on)
{
	unsigned char *o;
	size_t w = 0;

	if (!memchr(p, '%', n) && !memchr(p, '+', n))
		return NULL;
	o = ht_alloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
			o[w++] = (unsigned char)(hexval(p[i + 1]) << 4 | hexval(p[i + 2]));
			i += 2;
		} else
			o[w++] = p[i] == '+' ? ' ' : p[i];
	}
	*on = w;
	return o;
}

/* JSON string escapes undone (\uXXXX as UTF-8); NULL if there is no backslash. */
static unsigned char *json_unescape(const unsigned char *p, size_t n, size_t *on)
{
	unsigned char *o;
	size_t w = 0;

	if (!memchr(p, '\\', n))
		return NULL;
	o = ht_alloc(n * 3 + 1);
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\\' || i + 1 >= n) {
			o[w++] = p[i];
			continue;
		}
		switch (p[++i]) {
		case 'b':
			o[w++] = '\b';
			break;
		case 'f':
			o[w++] = '\f';
			break;
		case 'n':
			o[w++] = '\n';
			break;
		case 'r':
			o[w++] = '\r';
			break;
		case 't':
			o[w++] = '\t';
			break;
		case 'u':
			if (i + 4 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0 &&
			    hexval(p[i + 3]) >= 0 && hexval(p[i + 4]) >= 0) {
				unsigned cp =
				        (unsigned)(hexval(p[i + 1]) << 12 | hexval(p[i + 2]) << 8 |
				                   hexval(p[i + 3]) << 4 | hexval(p[i + 4]));
				i += 4;
				if (cp < 0x80)
					o[w++] = (unsigned char)cp;
				else if (cp < 0x800) {
					o[w++] = (unsigned char)(0xC0 | cp >> 6);
					o[w++] = (unsigned char)(0x80 | (cp & 63));
				} else {
					o[w++] = (unsigned char)(0xE0 | cp >> 12);
					o[w++] = (unsigned char)(0x80 | ((cp >> 6) & 63));
					o[w++] = (unsigned char)(0x80 | (cp & 63));
				}
			} else
				o[w++] = 'u';
			break;
		default:
			o[w++] = p[i]; /* \" \\ \/ and anything else: the character itself */
		}
	}
	*on = w;
	return o;
}

/* Inflates from <p, n> (<wbits> as for inflateInit2). Whatever comes out before an error
 * counts: a truncated stream still carries what it carries. NULL if nothing came out, or
 * (with <need_end>) if the stream did not end cleanly. */
static unsigned char *inflate_any(const unsigned char *p, size_t n, int wbits, bool need_end,
                                  size_t *on)
{
	z_stream z = {0};
	size_t cap = 4096, got = 0;
	unsigned char *o = malloc(cap), *res = NULL;
	int rc = Z_OK;

	cr_assert_not_null(o);
	if (inflateInit2(&z, wbits) != Z_OK) {
		free(o);
		return NULL;
	}
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	while (rc == Z_OK && got < MAX_INFL) {
		if (got == cap) {
			unsigned char *m = realloc(o, cap * 2);
			cr_assert_not_null(m);
			o = m;
			cap *= 2;
		}
		z.next_out = o + got;
		z.avail_out = (uInt)(cap - got);
		rc = inflate(&z, Z_NO_FLUSH);
		got = cap - z.avail_out;
		if (rc == Z_BUF_ERROR && z.avail_in == 0)
			break;
		if (rc == Z_BUF_ERROR)
			rc = Z_OK;
	}
	inflateEnd(&z);
	if (got > 0 && (!need_end || rc == Z_STREAM_END)) {
		res = ht_alloc(got + 1);
		memcpy(res, o, got);
		*on = got;
	}
	free(o);
	return res;
}

static int b64val(int c)
{
	const char *a = strchr(B64, c);

	if (c && a)
		return (int)(a - B64);
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decodes base64 text <p, n> (either alphabet, no padding), trailing partial group too. */
static unsigned char *b64_decode(const unsigned char *p, size_t n, size_t *on)
{
	unsigned char *o = ht_alloc(n / 4 * 3 + 3);
	size_t w = 0;
	unsigned v = 0;
	int bits = 0;

	for (size_t i = 0; i < n; i++) {
		v = v << 6 | (unsigned)b64val(p[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			o[w++] = (unsigned char)(v >> bits);
		}
	}
	*on = w;
	return o;
}

/* Mostly text: at least 90 % bytes that are printable or UTF-8, and long enough to judge. */
static bool is_text(const unsigned char *p, size_t n)
{
	size_t text = 0;

	for (size_t i = 0; i < n; i++)
		text += p[i] >= 0x20 || p[i] == '\t' || p[i] == '\n' || p[i] == '\r';
	return n >= 8 && text * 10 >= n * 9;
}

/* Worth decoding further: compressed, or mostly text. */
static bool interesting(const unsigned char *p, size_t n)
{
	if (n >= 2 &&
	    ((p[0] == 0x1f && p[1] == 0x8b) || (p[0] == 0x78 && (p[0] << 8 | p[1]) % 31 == 0)))
		return true;
	return is_text(p, n);
}

/* Searches <p, n>, then every layer that decodes from it. */
static void scan_layer(struct scan *s, const unsigned char *p, size_t n, const char *layer,
                       int depth)
{
	size_t dn;
	unsigned char *d;

	if (++s->layers > MAX_LAYERS)
		return;
	search(s, p, n, layer);
	if (depth >= MAX_DEPTH)
		return;
	/* Text escapes are undone in text only: in compressed bytes they would be noise. */
	if (is_text(p, n) && (d = pct_decode(p, n, &dn)))
		scan_layer(s, d, dn, ht_fmt("%s>pct", layer), depth + 1);
	if (is_text(p, n) && (d = json_unescape(p, n, &dn)))
		scan_layer(s, d, dn, ht_fmt("%s>json-unescape", layer), depth + 1);
	/* gzip members and zlib streams wherever they start; raw deflate at the start only
	 * (it has no magic) and only if it ends cleanly. */
	for (size_t i = 0; i + 2 < n; i++) {
		bool gz = p[i] == 0x1f && p[i + 1] == 0x8b && p[i + 2] == 8;
		bool zl = p[i] == 0x78 && (p[i] << 8 | p[i + 1]) % 31 == 0 && !(p[i + 1] & 0x20);
		if ((gz || zl) && (d = inflate_any(p + i, n - i, gz ? 16 + 15 : 15, false, &dn)))
			scan_layer(s, d, dn, ht_fmt("%s>%s@%zu", layer, gz ? "gzip" : "zlib", i),
			           depth + 1);
	}
	if ((d = inflate_any(p, n, -15, true, &dn)))
		scan_layer(s, d, dn, ht_fmt("%s>deflate", layer), depth + 1);
	/* Base64 runs (either alphabet; '=' ends a run), decoded from each of the four
	 * starting points, since the run may begin before the encoded text does. */
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && b64val(p[j]) >= 0)
			j++;
		if (j - i >= 16) {
			for (size_t sft = 0; sft < 4; sft++) {
				d = b64_decode(p + i + sft, j - i - sft, &dn);
				const char *l = ht_fmt("%s>base64@%zu+%zu", layer, i, sft);
				if (interesting(d, dn))
					scan_layer(s, d, dn, l, depth + 1);
				else
					search(s, d, dn, l);
			}
		}
		i = j + 1;
	}
}

/* Every plant found in <p, n>, the bytes capture <cap> made reach the upstream; appended to
 * <out>. <only_capture>: look only for that capture's own plants. */
static size_t check(const void *p, size_t n, size_t cap, bool only_capture, struct leak *out,
                    size_t nout)
{
	struct scan s = {0};

	s.pl = plants;
	s.npl = nplants;
	s.hit = ht_alloc(nplants * sizeof(bool));
	s.form = ht_alloc(nplants * sizeof(char *));
	s.layer = ht_alloc(nplants * sizeof(char *));
	s.bloom_exact = ht_alloc(BLOOM_BITS / 8);
	s.bloom_lower = ht_alloc(BLOOM_BITS / 8);
	if (only_capture)
		for (size_t k = 0; k < nplants; k++)
			s.hit[k] = strcmp(plants[k].capture, caps[cap].name) != 0; /* skip others */
	scan_layer(&s, p, n, "request", 0);
	cr_assert_leq(s.layers, MAX_LAYERS, "%s: too many layers to search them all",
	              caps[cap].name);
	for (size_t k = 0; k < nplants; k++) {
		if (only_capture && strcmp(plants[k].capture, caps[cap].name))
			continue;
		if (s.hit[k]) {
			cr_assert_lt(nout, 4096);
			out[nout++] = (struct leak){k, cap, s.form[k], s.layer[k]};
		}
	}
	return nout;
}

static const char *leak_str(const struct leak *l)
{
	const struct plant *pl = &plants[l->plant];

	return ht_fmt("%s %s %s (%s) reached the upstream from %s: %s, in %s", pl->capture, pl->cls,
	              pl->value, pl->where, caps[l->cap].name, l->form, l->layer);
}

/* ---- configurations ---- */

static json_t *load_json(const char *path)
{
	json_error_t err;
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &err);

	cr_assert_not_null(j, "%s:%d: %s", path, err.line, err.text);
	return j;
}

static const char *write_key(void)
{
	unsigned char key[32];

	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)(i * 29 + 3);
	cr_assert(ht_write(ht_path("leak.key"), key, sizeof(key), 0600));
	return "leak.key";
}

/* Points <root> at the test's listener, key and recorder: every route goes to the recorder,
 * no admin listener, no access log file (the log goes to stderr, which the test reads). */
static void plumb(json_t *root, int port, int up_port)
{
	json_t *ups = json_object_get(root, "upstreams"), *routes = json_object_get(root, "routes");
	size_t i;
	json_t *r;

	json_object_set_new(root, "listen", json_string(ht_fmt("127.0.0.1:%d", port)));
	json_object_set_new(root, "workers", json_integer(1));
	json_object_del(root, "admin");
	json_object_del(root, "access_log");
	json_object_del(root, "tls");
	json_object_set_new(
	        root, "keys",
	        json_pack("{s:s, s:{s:s}}", "active", "leak", "files", "leak", write_key()));
	if (!ups) {
		ups = json_object();
		json_object_set_new(root, "upstreams", ups);
	}
	json_object_set_new(ups, "leak_rec",
	                    json_pack("{s:s}", "url", ht_fmt("http://127.0.0.1:%d", up_port)));
	cr_assert(json_is_array(routes));
	json_array_foreach(routes, i, r)
	        json_object_set_new(r, "upstream", json_string("leak_rec"));
}

/* The shipped default configuration, its files (key files, includes) reachable from the
 * test's directory under the same relative names. */
static json_t *default_conf(void)
{
	char abs[PATH_MAX];
	DIR *d;
	struct dirent *e;

	cr_assert_not_null(realpath("conf", abs));
	d = opendir(abs);
	cr_assert_not_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && strcmp(e->d_name, "anonproxy.json"))
			cr_assert_eq(symlink(ht_fmt("%s/%s", abs, e->d_name), ht_path(e->d_name)),
			             0);
	closedir(d);
	return load_json(DEFAULT);
}

/* tests/corpus/conf_additions.json: fields appended to a ruleset of the default, each with
 * its reason. <skip>: the name of one addition to leave out (the weak-ruleset test). */
static void add_fields(json_t *root, const char *skip)
{
	json_t *add = load_json(CORPUS "/conf_additions.json"), *e;
	const char *rs = json_string_value(json_object_get(add, "ruleset"));
	json_t *fields =
	        json_object_get(json_object_get(json_object_get(root, "rulesets"), rs), "fields");
	size_t i;

	cr_assert_not_null(fields, "conf_additions.json: no ruleset \"%s\" with fields", rs);
	json_array_foreach(json_object_get(add, "fields"), i, e)
	{
		const char *name = json_string_value(json_object_get(e, "name"));
		cr_assert(name && json_is_string(json_object_get(e, "why")) &&
		                  json_is_object(json_object_get(e, "field")),
		          "conf_additions.json: fields[%zu] needs name, why and field", i);
		if (skip && !strcmp(name, skip))
			continue;
		json_array_append(fields, json_object_get(e, "field"));
	}
	json_decref(add);
}

/* ---- a run: the corpus through one proxy ---- */

struct run {
	const char **req; /* [ncaps]: what the upstream received, capture by capture */
	size_t *len;
	const char *proxy_err;
};

static struct run *send_corpus(json_t *conf, const char *name)
{
	struct ht_recorder up;
	int port = ht_free_port();
	const char *path = ht_path(ht_fmt("%s.json", name));
	struct run *run = ht_alloc(sizeof(*run));
	pid_t px;

	load_corpus();
	cr_assert(ht_recorder_start(&up, ht_fmt("up-%s", name), NULL, NULL));
	plumb(conf, port, up.port);
	cr_assert_eq(json_dump_file(conf, path, JSON_INDENT(2)), 0);
	json_decref(conf);
	px = ht_start((const char *[]){ht_bin("anonproxy"), "-c", path, NULL},
	              ht_fmt("proxy-%s", name));
	cr_assert(ht_wait_port(port, px, 10000), "proxy (%s) did not start: %s", path, ht_err(px));
	run->req = ht_alloc(ncaps * sizeof(char *));
	run->len = ht_alloc(ncaps * sizeof(size_t));
	for (size_t c = 0; c < ncaps; c++) {
		struct ht_result *r = ht_exchange(port, caps[c].raw, caps[c].len, 1, 10000);
		cr_assert_not_null(r);
		cr_assert_eq(r->nresp, 1, "%s: no answer (%s)", caps[c].name, r->why ? r->why : "");
		cr_assert_eq(r->resp[0].status, 200, "%s: %d %s (the proxy refused it?)",
		             caps[c].name, r->resp[0].status, r->resp[0].body);
		cr_assert_eq(ht_rec_wait(&up, c + 1, 5000), c + 1);
		run->req[c] = ht_rec_raw(&up, (int)c + 1, &run->len[c]);
		cr_assert_not_null(run->req[c]);
	}
	cr_assert_eq(ht_stop(px, 10000), 0, "proxy exit: %s", ht_err(px));
	run->proxy_err = ht_err(px);
	ht_recorder_stop(&up);
	return run;
}

/* Every plant found in what the upstream received (each capture's request is searched for
 * the plants of every capture). */
static size_t leaks_of(const struct run *run, struct leak *out)
{
	size_t n = 0;

	for (size_t c = 0; c < ncaps; c++)
		n = check(run->req[c], run->len[c], c, false, out, n);
	return n;
}

static char *leak_list(const struct leak *l, size_t n)
{
	char *s = ht_fmt("%zu:", n);

	for (size_t i = 0; i < n; i++)
		s = ht_fmt("%s\n  %s", s, leak_str(&l[i]));
	return s;
}

static bool leaked(const struct leak *l, size_t n, size_t plant)
{
	for (size_t i = 0; i < n; i++)
		if (l[i].plant == plant)
			return true;
	return false;
}

TestSuite(leak, .init = ht_setup, .fini = ht_teardown, .timeout = 240);

/* The checker finds every planted value in the capture that carries it, through whatever
 * encodes it there (base64 of gzip, a form field's JSON, a digest of a MAC): a value it
 * cannot see in the capture is a value it could not see leaking either. */
Test(leak, checker_sees_every_planted_value_in_the_captures)
{
	struct leak *l = ht_alloc(4096 * sizeof(*l));
	size_t n = 0, forms = 0;

	load_corpus();
	for (size_t c = 0; c < ncaps; c++)
		n = check(caps[c].raw, caps[c].len, c, true, l, n);
	for (size_t k = 0; k < nplants; k++)
		cr_expect(leaked(l, n, k), "the checker cannot see %s %s %s (%s) in its capture",
		          plants[k].capture, plants[k].cls, plants[k].value, plants[k].where);
	for (size_t k = 0; k < nplants; k++)
		forms += plants[k].nnd;
	cr_log_info("leak corpus: %zu captures, %zu planted values, %zu search forms", ncaps,
	            nplants, forms);
}

/* The default configuration with the corpus additions: nothing planted reaches the
 * upstream, nor the proxy's own log. */
Test(leak, corpus_configuration_lets_nothing_through)
{
	json_t *conf = default_conf();
	struct leak *l = ht_alloc(4096 * sizeof(*l));
	struct run *run;
	size_t n;

	add_fields(conf, NULL);
	run = send_corpus(conf, "corpus");
	n = leaks_of(run, l);
	cr_expect_eq(n, 0, "planted identifiers reached the upstream: %s", leak_list(l, n));
	n = check(run->proxy_err, strlen(run->proxy_err), 0, false, l, 0);
	cr_expect_eq(n, 0, "planted identifiers in the proxy's log: %s", leak_list(l, n));
}

/* The shipped configuration as it is: what it lets through must be exactly the gaps
 * listed in tests/corpus/default_gaps.tsv — a new leak fails, and so does a gap that has
 * been closed (delete its line). */
Test(leak, default_configuration_leaks_only_the_known_gaps)
{
	struct leak *l = ht_alloc(4096 * sizeof(*l));
	struct run *run = send_corpus(default_conf(), "default");
	size_t n = leaks_of(run, l), ngap = 0, nleaked = 0;
	char *text = ht_read(CORPUS "/default_gaps.tsv", NULL), *save = NULL;
	bool *gap = ht_alloc(nplants * sizeof(bool));
	const char *bad = "";

	cr_assert_not_null(text);
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char cap[256], val[256];
		bool found = false;
		if (line[0] == '#' || sscanf(line, "%255[^\t]\t%255[^\t]", cap, val) != 2)
			continue;
		for (size_t k = 0; k < nplants; k++)
			if (!strcmp(plants[k].capture, cap) && !strcmp(plants[k].value, val)) {
				gap[k] = found = true;
				ngap++;
			}
		cr_assert(found, "default_gaps.tsv: %s %s is not in manifest.tsv", cap, val);
	}
	for (size_t i = 0; i < n; i++)
		if (!gap[l[i].plant])
			bad = ht_fmt("%s\n  new leak: %s", bad, leak_str(&l[i]));
	for (size_t k = 0; k < nplants; k++)
		if (gap[k] && !leaked(l, n, k))
			bad = ht_fmt("%s\n  closed, delete from default_gaps.tsv: %s\t%s", bad,
			             plants[k].capture, plants[k].value);
	cr_expect_str_empty(bad, "conf/anonproxy.json against tests/corpus/default_gaps.tsv:%s",
	                    bad);
	for (size_t k = 0; k < nplants; k++)
		nleaked += leaked(l, n, k);
	cr_log_info("default configuration: %zu of %zu planted values leak (%zu known gaps)",
	            nleaked, nplants, ngap);
}

/* The checker must be able to fail. One rule short of the corpus configuration — the codec
 * that opens Mixpanel's data=<base64(JSON)> — and exactly the Mixpanel values leak, seen
 * through base64 and percent-encoding. Routes are reduced to one, so that no SDK-specific
 * route can make up for the missing rule. */
Test(leak, weak_ruleset_leak_is_detected)
{
	json_t *conf = default_conf(), *routes = json_array();
	struct leak *l = ht_alloc(4096 * sizeof(*l));
	size_t n;
	struct run *run;

	add_fields(conf, "mixpanel-data");
	json_array_append_new(routes, json_pack("{s:s, s:s, s:s}", "path", "/", "upstream", "sink",
	                                        "ruleset", "analytics"));
	json_object_set_new(conf, "routes", routes);
	run = send_corpus(conf, "weak");
	n = leaks_of(run, l);
	for (size_t k = 0; k < nplants; k++) {
		bool want = !strcmp(plants[k].capture, "mixpanel_track.http") &&
		            strncmp(plants[k].where, "header:", 7);
		cr_expect_eq(leaked(l, n, k), want, "%s %s %s: %s", plants[k].capture,
		             plants[k].cls, plants[k].value,
		             want ? "leaked, but the checker did not see it" : "leaked");
	}
	cr_log_info("weak ruleset: the checker reports %s", leak_list(l, n));
}

/* A proxy with no rules at all forwards every planted value (the client's address in
 * X-Forwarded-For excepted: the proxy always rewrites it), and the checker sees each one
 * in what the upstream received — gzip'd body, base64 of gzip, digests and all. */
Test(leak, no_rules_every_planted_value_is_detected)
{
	json_t *conf = json_pack("{s:{s:{s:b}}, s:[{s:s, s:s, s:s}]}", "rulesets", "off", "query",
	                         0, "routes", "path", "/", "upstream", "sink", "ruleset", "off");
	struct leak *l = ht_alloc(4096 * sizeof(*l));
	size_t n;
	struct run *run = send_corpus(conf, "off");

	n = leaks_of(run, l);
	for (size_t k = 0; k < nplants; k++) {
		bool want = strcmp(plants[k].where, "header:X-Forwarded-For") != 0;
		cr_expect_eq(leaked(l, n, k), want, "%s %s %s (%s): %s", plants[k].capture,
		             plants[k].cls, plants[k].value, plants[k].where,
		             want ? "forwarded as it came, but the checker did not see it"
		                  : "leaked from a header the proxy always rewrites");
	}
}

/* ---- the checker on its own ---- */

static unsigned char *zip(const char *s, int wbits, size_t *n)
{
	z_stream z = {0};
	size_t cap = strlen(s) + 128;
	unsigned char *o = ht_alloc(cap);

	cr_assert_eq(deflateInit2(&z, 9, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)s;
	z.avail_in = (uInt)strlen(s);
	z.next_out = o;
	z.avail_out = (uInt)cap;
	cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	*n = z.total_out;
	deflateEnd(&z);
	return o;
}

/* Standard base64 with padding of <p, n>; <url>: the URL alphabet. */
static char *b64(const void *p, size_t n, bool url)
{
	char *o = ht_alloc(n / 3 * 4 + 8);

	EVP_EncodeBlock((unsigned char *)o, p, (int)n);
	for (char *c = o; url && *c; c++)
		*c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
	return o;
}

static char *hexdigest(const char *md, const char *s)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned dn = 0;
	char *o = ht_alloc(2 * EVP_MAX_MD_SIZE + 1);

	cr_assert(EVP_Digest(s, strlen(s), d, &dn, EVP_get_digestbyname(md), NULL));
	for (unsigned k = 0; k < dn; k++)
		sprintf(o + 2 * k, "%02X", d[k]);
	return o;
}

/* One haystack of the form test. */
struct sample {
	const char *what;
	const void *p;
	size_t n;
};

static struct sample text_sample(const char *what, const char *s)
{
	return (struct sample){what, s, strlen(s)};
}

/* Each form the checker promises, built here independently of the checker's own encoders,
 * is found; near misses are not. */
Test(leak, checker_finds_each_form_and_no_near_miss)
{
	const char *mac = "A4:5E:60:C2:17:9B", *json = ht_fmt("{\"wifi\":{\"mac\":\"%s\"}}", mac);
	size_t zn, gn;
	unsigned char *zl = zip(json, 15, &zn), *gz = zip(json, 16 + 15, &gn);
	unsigned char *after = ht_alloc(gn + 8);
	struct sample yes[32];
	size_t ny = 0;
	/* Near misses. A base64 needle covers whole 3-byte groups of the value, so up to two
	 * bytes at either end are outside it (base64 of all but the last two characters counts
	 * as a leak): the near miss in base64 differs in the middle. */
	const char *no[] = {
	        "mac=A4:5E:60:C2:17:9C",
	        "a45e60c2179",
	        "A4:5E:60:C2:17",
	        "pseudonym 36:F5:4A:E0:D3:70",
	        b64("A4:5E:60:D2:17:9B", 17, false),
	        hexdigest("md5", "A4:5E:60:C2:17:9C"),
	};
	struct leak l[8];

	plants = ht_alloc(sizeof(*plants));
	plants[0] = (struct plant){"synthetic", "mac", mac, "-", NULL, 0, 0};
	make_needles(&plants[0]);
	nplants = 1;
	caps = ht_alloc(sizeof(*caps));
	caps[0] = (struct capture){"synthetic", "", 0};
	ncaps = 1;
	memcpy(after, "prefix:", 7);
	memcpy(after + 7, gz, gn);
	yes[ny++] = text_sample("verbatim", ht_fmt("mac=%s&x=1", mac));
	yes[ny++] = text_sample("lower case", "{\"m\":\"a4:5e:60:c2:17:9b\"}");
	yes[ny++] = text_sample("'-' separators", "A4-5E-60-C2-17-9B");
	yes[ny++] = text_sample("no separator", "x=a45e60c2179b;");
	yes[ny++] = text_sample("Cisco dots", "a45e.60c2.179b");
	yes[ny++] = text_sample("percent-encoded, lower hex", "m=A4%3a5E%3a60%3aC2%3a17%3a9B");
	yes[ny++] = text_sample("percent-encoded, upper hex", "m=a4%3A5e%3A60%3Ac2%3A17%3A9b");
	yes[ny++] = text_sample("every byte percent-encoded",
	                        "%41%34%3A%35%45%3A%36%30%3A%43%32%3A%31%37%3A%39%42");
	yes[ny++] = text_sample("JSON \\u escapes",
	                        "{\"mac\":\"A4\\u003a5E\\u003A60\\u003aC2\\u003a17\\u003a9B\"}");
	yes[ny++] = text_sample("base64 at offset 0", ht_fmt("d=%s", b64(mac, strlen(mac), false)));
	yes[ny++] = text_sample("base64 at offset 1",
	                        ht_fmt("d=%s", b64(ht_fmt("x%s", mac), strlen(mac) + 1, false)));
	yes[ny++] = text_sample("base64 at offset 2",
	                        ht_fmt("d=%s", b64(ht_fmt("xy%s", mac), strlen(mac) + 2, false)));
	yes[ny++] = text_sample("base64url of JSON",
	                        ht_fmt("{\"d\":\"%s\"}", b64(json, strlen(json), true)));
	yes[ny++] = text_sample("base64 of lower case", b64("a4:5e:60:c2:17:9b", 17, false));
	yes[ny++] = text_sample("md5 of the lower-case MAC", hexdigest("md5", "a4:5e:60:c2:17:9b"));
	yes[ny++] = text_sample("sha1 of the bare digits", hexdigest("sha1", "a45e60c2179b"));
	yes[ny++] = text_sample("sha256 as written", ht_fmt("h=%s", hexdigest("sha256", mac)));
	yes[ny++] = (struct sample){"zlib stream", zl, zn};
	yes[ny++] = (struct sample){"gzip member after text", after, gn + 7};
	yes[ny++] = text_sample("form field of percent-encoded base64(gzip)",
	                        ht_fmt("gzip=1&data_list=%s", pct(b64(gz, gn, false), false)));
	for (size_t i = 0; i < ny; i++)
		cr_expect_eq(check(yes[i].p, yes[i].n, 0, false, l, 0), 1, "not found: %s",
		             yes[i].what);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_eq(check(no[i], strlen(no[i]), 0, false, l, 0), 0, "false alarm: %s",
		             no[i]);
}
