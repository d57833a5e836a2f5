/* The opt-out table (optout.h, docs/optout.md): the shared-memory segment and its lock-free
 * probe, the journal and snapshot that make it durable, and recovery from a writer that
 * died anywhere. It hashes user ids and forgets them: nothing here stores, journals or
 * prints an id. It knows nothing of requests or configuration files. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "conf.h"
#include "optout.h"

/* ---- the segment ----
 *
 * Layout: a 4096-byte header, then 2^k slots of 32 bytes. Everything in it is a number or
 * an index; a process maps it wherever it likes. The header's first 24 bytes (magic,
 * layout version, header size, slot size, retired flag) keep their offsets in every future
 * layout, so a binary can recognise a table it cannot read, refuse it, and — as a writer —
 * mark it retired once it has published a replacement.
 *
 * A slot is four 64-bit words: ctl = version << 2 | state (empty, live, tombstone), the key
 * (hi, lo), and val = time << 8 | scopes. The torn-write protocol, for readers that never
 * lock and a writer that may be killed at any instruction:
 *
 *  - The value of an entry is one aligned 64-bit word, so it is replaced by one store: a
 *    reader loads the old word or the new one, and a writer killed before or after that
 *    store leaves the old or the new value. This is why a slot needs no second copy of the
 *    value and no selector: the scopes and the time never live in different words.
 *  - The key is two words and is only written while the slot is not live (empty, or a
 *    tombstone being reused). The writer stores key and value first and publishes the
 *    slot last, with a release store of ctl (state live, version + 1). A writer killed
 *    before that store leaves the slot as it was (empty or tombstone): the words it wrote
 *    are garbage nobody reads, and the replay of the journal rewrites them.
 *  - A removal is one release store of ctl (tombstone, version + 1).
 *  - A reader loads ctl with acquire, the key and value, then (after an acquire fence)
 *    ctl again. A slot reused for another key between the two loads has a higher version
 *    (it passed through a tombstone), so the reader sees ctl change and reads the slot
 *    again; a version of 62 bits never wraps. Before reusing a tombstone the writer issues
 *    a release fence, so the tombstone store is visible before any word of the new key.
 *  - Entries never move (linear probing with tombstones, no backward shift), so a key a
 *    reader is looking for stays in its slot for its whole life. Tombstones are cleared
 *    only by building a new segment (ap_optout_compact, a rebuild), which replaces the
 *    name atomically; readers move to it in ap_optout_refresh.
 *
 * The counts (live, tombstones) and the generation live in the header; a writer killed
 * between a slot store and a count store leaves them off by one, which the next writer
 * notices (applying != gen) and repairs by counting the slots. */

enum { ST_EMPTY = 0, ST_LIVE = 1, ST_TOMB = 2 };

#define SEG_VERSION     1u
#define SEG_HDR_SIZE    4096u
#define TIME_MAX        ((INT64_C(1) << 56) - 1)
/* Tombstones are compacted away before live + tombstones would pass 3/4 of the slots. */
#define USED_MAX(slots) ((slots) / 4 * 3)

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the segment needs lock-free 64-bit atomics");

struct seg_hdr {
	/* fixed for every layout version (see above) */
	_Atomic uint64_t magic; /* stored last when the segment is built, with release */
	uint32_t version;
	uint32_t hdr_size;
	uint32_t slot_size;
	_Atomic uint32_t retired; /* 1 once a newer segment took the name */
	/* immutable after creation */
	uint64_t slots;
	uint64_t capacity;
	uint64_t seed;
	uint64_t created;
	uint64_t reserved0;
	/* the writer's, on their own cache line so readers' lines stay clean */
	_Atomic uint64_t gen;      /* seq of the last journal record applied */
	_Atomic uint64_t applying; /* seq of the last record of the frame being applied */
	_Atomic uint64_t live;
	_Atomic uint64_t tomb;
};

_Static_assert(offsetof(struct seg_hdr, retired) == 20, "the fixed prefix moved");
_Static_assert(offsetof(struct seg_hdr, gen) == 64, "writer state off its cache line");
_Static_assert(sizeof(struct seg_hdr) <= SEG_HDR_SIZE, "header too large");

struct slot {
	_Atomic uint64_t ctl;
	_Atomic uint64_t hi, lo;
	_Atomic uint64_t val;
};

_Static_assert(sizeof(struct slot) == 32, "a slot is 32 bytes");

/* One mapping of a segment. */
struct seg {
	struct seg_hdr *h;
	struct slot *s;
	uint64_t mask;
	size_t bytes;
	dev_t dev;
	ino_t ino;
};

/* ---- the files ----
 *
 * <dir>/optout.journal: a 64-byte header {magic, version, record size, seed, base seq,
 * capacity, created, crc32 of the header}, then 40-byte records {crc32 of bytes 4..39,
 * type (1 set, 2 remove), scopes, flags (1 = last record of its frame, 2 = first), 0, seq, key hi,
 * key lo, time}. Records are dense: record i has seq base + 1 + i. One frame = one write()
 * and one fsync; the table is changed only after the fsync returned.
 *
 * <dir>/optout.snap: a 64-byte header {magic, version, entry size, seed, seq, count,
 * capacity, created, crc32 of the entries, crc32 of the header}, then count entries of 24
 * bytes {key hi, key lo, val}. It holds the table as of record <seq>.
 *
 * Both are in the host's byte order (the magic tells a foreign one). */

/* The longest table name accepted (a temporary ".new" name is derived from it). */
#define SHM_NAME_MAX 100
#define TMP_NAME_MAX (SHM_NAME_MAX + 8)

#define REC_SIZE  40u
#define JHDR_SIZE 64u
#define SHDR_SIZE 64u
#define ENT_SIZE  24u
#define REC_SET   1u
#define REC_DEL   2u
#define F_END     1u
#define F_BEGIN   2u

struct jrec {
	uint32_t crc;
	uint8_t type, scopes, flags, zero;
	uint64_t seq;
	uint64_t hi, lo;
	int64_t time;
};

struct jhdr {
	uint64_t magic;
	uint32_t version, rec_size;
	uint64_t seed, base, capacity, created, reserved;
	uint32_t zero, crc;
};

struct shdr {
	uint64_t magic;
	uint32_t version, ent_size;
	uint64_t seed, seq, count, capacity, created;
	uint32_t ent_crc, crc;
};

struct sent {
	uint64_t hi, lo, val;
};

_Static_assert(sizeof(struct jrec) == REC_SIZE, "journal record size");
_Static_assert(sizeof(struct jhdr) == JHDR_SIZE, "journal header size");
_Static_assert(sizeof(struct shdr) == SHDR_SIZE, "snapshot header size");
_Static_assert(sizeof(struct sent) == ENT_SIZE, "snapshot entry size");

/* Owned by whoever opened it; one thread at a time. */
struct ap_optout {
	struct seg g; /* first: all a lookup reads */
	uint64_t seed;
	bool writer, ephemeral;
	char shm[SHM_NAME_MAX + 1];
	/* writers only */
	char *dir;
	int lockfd, jfd;
	uint64_t jbase;    /* the journal's base seq: its first record is base + 1 */
	uint64_t jend;     /* seq of its last record */
	uint64_t jcap;     /* capacity recorded in its header */
	uint64_t snap_seq; /* the snapshot's seq (0: none) */
	bool have_snap;
	struct jrec *stage; /* AP_OPTOUT_BATCH records */
	size_t nstage;
	struct ap_optout_key *fresh; /* commit's scratch: AP_OPTOUT_BATCH keys, on first use */
	char notice[512];
};

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err, AP_OPTOUT_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return AP_ERR;
}

static void note(struct ap_optout *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct ap_optout *t, const char *fmt, ...)
{
	size_t n = strlen(t->notice);
	va_list ap;

	if (n && n + 2 < sizeof(t->notice)) {
		memcpy(t->notice + n, "; ", 3);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(t->notice + n, sizeof(t->notice) - n, fmt, ap);
	va_end(ap);
}

static uint64_t magic8(const char *s)
{
	uint64_t m;

	memcpy(&m, s, 8);
	return m;
}

#define SEG_MAGIC  magic8("APOPTOUT")
#define JRNL_MAGIC magic8("APOJRNL1")
#define SNAP_MAGIC magic8("APOSNAP1")

static uint64_t slots_for(uint64_t capacity)
{
	uint64_t need = (capacity * 10 + 6) / 7, s = 64;

	while (s < need)
		s <<= 1;
	return s;
}

static inline uint64_t pack(unsigned scopes, int64_t time)
{
	if (time < 0)
		time = 0;
	if (time > TIME_MAX)
		time = TIME_MAX;
	return (uint64_t)time << 8 | (scopes & 0xffu);
}

static inline struct ap_optout_key hash_user(uint64_t seed, const void *p, size_t n)
{
	XXH128_hash_t h = XXH3_128bits_withSeed(p, n, seed);

	return (struct ap_optout_key){h.high64, h.low64};
}

static uint32_t crc(const void *p, size_t n)
{
	uLong c = crc32(0L, Z_NULL, 0);

	/* zlib takes uInt lengths; feed large buffers in pieces */
	while (n) {
		uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
		c = crc32(c, p, k);
		p = (const char *)p + k;
		n -= k;
	}
	return (uint32_t)c;
}

static uint32_t rec_crc(const struct jrec *r)
{
	return crc((const char *)r + 4, REC_SIZE - 4);
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	return n >= 2 && n <= SHM_NAME_MAX && s[0] == '/' && !strchr(s + 1, '/');
}

static int random_seed(uint64_t *seed, char *err)
{
	if (getrandom(seed, sizeof(*seed), 0) != (ssize_t)sizeof(*seed))
		return fail(err, "cannot draw a random seed: %s", strerror(errno));
	return AP_OK;
}

/* ---- probing ---- */

/* Where the probe for <k> starts: the first slot of a 64-byte line (two slots), so the
 * first two probes cost one cache miss. */
static inline uint64_t home(const struct seg *g, struct ap_optout_key k)
{
	return k.lo & g->mask & ~(uint64_t)1;
}

/* The val word of key <k> in <g>, or 0. The reader's side of the protocol above. */
static inline uint64_t probe(const struct seg *g, struct ap_optout_key k)
{
	uint64_t i = home(g, k);

	for (uint64_t n = 0; n <= g->mask; n++, i = (i + 1) & g->mask) {
		struct slot *s = &g->s[i];
		for (;;) {
			uint64_t c = atomic_load_explicit(&s->ctl, memory_order_acquire);
			if ((c & 3) == ST_EMPTY)
				return 0;
			if ((c & 3) != ST_LIVE)
				break;
			uint64_t hi = atomic_load_explicit(&s->hi, memory_order_relaxed);
			uint64_t lo = atomic_load_explicit(&s->lo, memory_order_relaxed);
			if (hi != k.hi || lo != k.lo)
				break; /* not ours, or being reused for ours: either way absent then
				        */
			uint64_t v = atomic_load_explicit(&s->val, memory_order_relaxed);
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&s->ctl, memory_order_relaxed) == c)
				return v;
			/* reused while we read: read it again */
		}
	}
	return 0;
}

/* The writer's probe: the index of <k>, or -1 with *ins the slot an insert takes (first
 * tombstone on the path, else the empty slot that ends it; -1 when there is neither). */
static int64_t find(const struct seg *g, struct ap_optout_key k, int64_t *ins)
{
	uint64_t i = home(g, k);
	int64_t tomb = -1;

	for (uint64_t n = 0; n <= g->mask; n++, i = (i + 1) & g->mask) {
		struct slot *s = &g->s[i];
		uint64_t c = atomic_load_explicit(&s->ctl, memory_order_relaxed);
		if ((c & 3) == ST_EMPTY) {
			*ins = tomb >= 0 ? tomb : (int64_t)i;
			return -1;
		}
		if ((c & 3) == ST_TOMB) {
			if (tomb < 0)
				tomb = (int64_t)i;
		} else if (atomic_load_explicit(&s->hi, memory_order_relaxed) == k.hi &&
		           atomic_load_explicit(&s->lo, memory_order_relaxed) == k.lo) {
			return (int64_t)i;
		}
	}
	*ins = tomb;
	return -1;
}

static inline uint64_t ld(_Atomic uint64_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static inline void st(_Atomic uint64_t *p, uint64_t v)
{
	atomic_store_explicit(p, v, memory_order_relaxed);
}

/* Sets key <k> to <val> in <g> (0 removes). The writer's side of the protocol. AP_ERR only
 * when the key is new and the table holds <capacity> entries already. */
static int seg_apply(struct seg *g, struct ap_optout_key k, uint64_t val)
{
	struct seg_hdr *h = g->h;
	int64_t ins = -1, i = find(g, k, &ins);
	struct slot *s;
	uint64_t c;

	if (val == 0) {
		if (i < 0)
			return AP_OK;
		s = &g->s[i];
		c = ld(&s->ctl);
		atomic_store_explicit(&s->ctl, ((c >> 2) + 1) << 2 | ST_TOMB, memory_order_release);
		st(&h->live, ld(&h->live) - 1);
		st(&h->tomb, ld(&h->tomb) + 1);
		return AP_OK;
	}
	if (i >= 0) {
		atomic_store_explicit(&g->s[i].val, val, memory_order_release);
		return AP_OK;
	}
	if (ld(&h->live) >= h->capacity || ins < 0)
		return AP_ERR;
	s = &g->s[ins];
	c = ld(&s->ctl);
	/* the tombstone (if any) must be visible before any word of the new key */
	atomic_thread_fence(memory_order_release);
	st(&s->hi, k.hi);
	st(&s->lo, k.lo);
	st(&s->val, val);
	atomic_store_explicit(&s->ctl, ((c >> 2) + 1) << 2 | ST_LIVE, memory_order_release);
	st(&h->live, ld(&h->live) + 1);
	if ((c & 3) == ST_TOMB)
		st(&h->tomb, ld(&h->tomb) - 1);
	return AP_OK;
}

static void seg_recount(struct seg *g)
{
	uint64_t live = 0, tomb = 0;

	for (uint64_t i = 0; i <= g->mask; i++) {
		uint64_t c = ld(&g->s[i].ctl) & 3;
		live += c == ST_LIVE;
		tomb += c == ST_TOMB;
	}
	st(&g->h->live, live);
	st(&g->h->tomb, tomb);
}

/* ---- mapping ---- */

static void seg_unmap(struct seg *g)
{
	if (g->h)
		munmap(g->h, g->bytes);
	memset(g, 0, sizeof(*g));
}

/* Maps the segment open on <fd> and checks its header. On AP_ERR *why says what is wrong
 * and, when the file was large enough to map, g->h stays mapped (the caller unmaps it, or
 * retires it once a replacement is published). */
static int seg_map_fd(struct seg *g, int fd, bool rw, const char **why, char *whybuf)
{
	struct stat sb;
	void *p;
	struct seg_hdr *h;

	memset(g, 0, sizeof(*g));
	if (fstat(fd, &sb) != 0) {
		*why = strerror(errno);
		return AP_ERR;
	}
	if (sb.st_size < (off_t)SEG_HDR_SIZE) {
		*why = "it is too small to be an opt-out table";
		return AP_ERR;
	}
	p = mmap(NULL, (size_t)sb.st_size, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd,
	         0);
	if (p == MAP_FAILED) {
		*why = strerror(errno);
		return AP_ERR;
	}
	g->h = h = p;
	g->bytes = (size_t)sb.st_size;
	g->dev = sb.st_dev;
	g->ino = sb.st_ino;
	if (atomic_load_explicit(&h->magic, memory_order_acquire) != SEG_MAGIC) {
		*why = atomic_load_explicit(&h->magic, memory_order_relaxed) == 0
		               ? "it was never finished (a writer died while building it)"
		               : "it is not an opt-out table (wrong magic)";
		return AP_ERR;
	}
	if (h->version != SEG_VERSION || h->hdr_size != SEG_HDR_SIZE ||
	    h->slot_size != sizeof(struct slot)) {
		snprintf(whybuf, AP_OPTOUT_ERR_MAX,
		         "it has layout version %u (header %u, slot %u bytes); this binary uses "
		         "version %u (header %u, slot %zu bytes)",
		         h->version, h->hdr_size, h->slot_size, SEG_VERSION, SEG_HDR_SIZE,
		         sizeof(struct slot));
		*why = whybuf;
		return AP_ERR;
	}
	if (h->slots < 2 || (h->slots & (h->slots - 1)) ||
	    h->slots > (SIZE_MAX - SEG_HDR_SIZE) / sizeof(struct slot) ||
	    g->bytes != SEG_HDR_SIZE + h->slots * sizeof(struct slot) || h->capacity == 0 ||
	    h->capacity >= h->slots) {
		*why = "its size does not match its header";
		return AP_ERR;
	}
	g->s = (struct slot *)((char *)p + SEG_HDR_SIZE);
	g->mask = h->slots - 1;
	return AP_OK;
}

/* Builds an empty segment under <tmpname> (not yet visible under the table's name: its
 * magic is 0 until seg_publish). Memory is reserved now, so a full /dev/shm is an error
 * here and never a SIGBUS later. */
static int seg_create(struct seg *g, const char *tmpname, uint64_t capacity, uint64_t seed,
                      char *err)
{
	uint64_t slots = slots_for(capacity);
	size_t bytes = SEG_HDR_SIZE + slots * sizeof(struct slot);
	struct stat sb;
	int fd, rc;
	void *p;

	memset(g, 0, sizeof(*g));
	shm_unlink(tmpname);
	fd = shm_open(tmpname, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (fd < 0)
		return fail(err, "cannot create shared memory %s: %s", tmpname, strerror(errno));
	if (fchmod(fd, 0640) != 0 || ftruncate(fd, (off_t)bytes) != 0 || fstat(fd, &sb) != 0) {
		fail(err, "cannot size shared memory %s: %s", tmpname, strerror(errno));
		goto bad;
	}
	if ((rc = posix_fallocate(fd, 0, (off_t)bytes)) != 0) {
		fail(err,
		     "cannot reserve %zu MiB of shared memory for %s: %s (is /dev/shm large "
		     "enough?)",
		     bytes >> 20, tmpname, strerror(rc));
		goto bad;
	}
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		fail(err, "cannot map shared memory %s: %s", tmpname, strerror(errno));
		goto bad;
	}
	close(fd);
	madvise(p, bytes, MADV_HUGEPAGE);
	g->h = p;
	g->s = (struct slot *)((char *)p + SEG_HDR_SIZE);
	g->mask = slots - 1;
	g->bytes = bytes;
	g->dev = sb.st_dev;
	g->ino = sb.st_ino;
	g->h->version = SEG_VERSION;
	g->h->hdr_size = SEG_HDR_SIZE;
	g->h->slot_size = sizeof(struct slot);
	g->h->slots = slots;
	g->h->capacity = capacity;
	g->h->seed = seed;
	g->h->created = (uint64_t)time(NULL);
	return AP_OK;
bad:
	close(fd);
	shm_unlink(tmpname);
	return AP_ERR;
}

static void tmp_name(const struct ap_optout *t, char *out)
{
	snprintf(out, TMP_NAME_MAX, "%s.new", t->shm);
}

/* Makes <ng> (built under tmp_name) the table: magic last, then an atomic rename over the
 * name (glibc keeps POSIX shm objects in /dev/shm), then the old mapping, if any, is marked
 * retired and unmapped. On AP_ERR the old segment stays and <ng> is removed. */
static int seg_publish(struct ap_optout *t, struct seg *ng, char *err)
{
	char tmp[TMP_NAME_MAX], from[NAME_MAX + 16], to[NAME_MAX + 16];

	tmp_name(t, tmp);
	snprintf(from, sizeof(from), "/dev/shm%s", tmp);
	snprintf(to, sizeof(to), "/dev/shm%s", t->shm);
	atomic_store_explicit(&ng->h->magic, SEG_MAGIC, memory_order_release);
	if (rename(from, to) != 0) {
		fail(err, "cannot publish shared memory %s: %s", t->shm, strerror(errno));
		seg_unmap(ng);
		shm_unlink(tmp);
		return AP_ERR;
	}
	if (t->g.h) {
		/* any layout keeps the retired flag at offset 20 */
		if (atomic_load_explicit(&t->g.h->magic, memory_order_relaxed) == SEG_MAGIC &&
		    t->writer)
			atomic_store_explicit(&t->g.h->retired, 1, memory_order_release);
		seg_unmap(&t->g);
	}
	t->g = *ng;
	memset(ng, 0, sizeof(*ng));
	return AP_OK;
}

/* A new segment holding the live entries of the current one: no tombstones. */
static int seg_copy(struct ap_optout *t, char *err)
{
	char tmp[TMP_NAME_MAX];
	struct seg ng;
	struct seg_hdr *h = t->g.h;

	tmp_name(t, tmp);
	if (seg_create(&ng, tmp, h->capacity, t->seed, err) != AP_OK)
		return AP_ERR;
	for (uint64_t i = 0; i <= t->g.mask; i++) {
		struct slot *s = &t->g.s[i];
		if ((ld(&s->ctl) & 3) == ST_LIVE)
			seg_apply(&ng, (struct ap_optout_key){ld(&s->hi), ld(&s->lo)}, ld(&s->val));
	}
	st(&ng.h->gen, ld(&h->gen));
	st(&ng.h->applying, ld(&h->gen));
	return seg_publish(t, &ng, err);
}

/* ---- files ---- */

static char *path_in(const struct ap_optout *t, const char *name)
{
	static __thread char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s/%s", t->dir, name);
	return buf;
}

static int write_all(int fd, const void *p, size_t n, off_t off)
{
	while (n) {
		ssize_t w = pwrite(fd, p, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return AP_ERR;
		p = (const char *)p + w;
		n -= (size_t)w;
		off += w;
	}
	return AP_OK;
}

static int read_all(int fd, void *p, size_t n, off_t off)
{
	while (n) {
		ssize_t r = pread(fd, p, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return AP_ERR;
		p = (char *)p + r;
		n -= (size_t)r;
		off += r;
	}
	return AP_OK;
}

static int fsync_dir(const struct ap_optout *t, char *err)
{
	int fd = open(t->dir, O_RDONLY | O_DIRECTORY);

	if (fd < 0 || fsync(fd) != 0) {
		fail(err, "cannot fsync %s: %s", t->dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return AP_ERR;
	}
	close(fd);
	return AP_OK;
}

/* Starts a new, empty journal after seq <base>: written to a temporary file, fsync'd and
 * renamed over the old one, so the journal file always has a valid header. */
static int journal_create(struct ap_optout *t, uint64_t base, uint64_t capacity, char *err)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	struct jhdr jh = {0};
	int fd;

	snprintf(tmp, sizeof(tmp), "%s", path_in(t, "optout.journal.tmp"));
	snprintf(dst, sizeof(dst), "%s", path_in(t, "optout.journal"));
	jh.magic = JRNL_MAGIC;
	jh.version = 1;
	jh.rec_size = REC_SIZE;
	jh.seed = t->seed;
	jh.base = base;
	jh.capacity = capacity;
	jh.created = (uint64_t)time(NULL);
	jh.crc = crc(&jh, offsetof(struct jhdr, crc));
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return fail(err, "cannot create %s: %s", tmp, strerror(errno));
	if (write_all(fd, &jh, sizeof(jh), 0) != AP_OK || fsync(fd) != 0 || rename(tmp, dst) != 0) {
		fail(err, "cannot write %s: %s", dst, strerror(errno));
		close(fd);
		unlink(tmp);
		return AP_ERR;
	}
	if (fsync_dir(t, err) != AP_OK) {
		close(fd);
		return AP_ERR;
	}
	if (t->jfd >= 0)
		close(t->jfd);
	t->jfd = fd;
	t->jbase = t->jend = base;
	t->jcap = capacity;
	return AP_OK;
}

static int journal_read_hdr(struct ap_optout *t, const char *path, char *err)
{
	struct jhdr jh;

	if (read_all(t->jfd, &jh, sizeof(jh), 0) != AP_OK)
		return fail(err, "%s: shorter than its header", path);
	if (jh.magic != JRNL_MAGIC || jh.version != 1 || jh.rec_size != REC_SIZE ||
	    jh.crc != crc(&jh, offsetof(struct jhdr, crc)))
		return fail(err, "%s: not an opt-out journal of this version (bad header)", path);
	t->seed = jh.seed;
	t->jbase = jh.base;
	t->jcap = jh.capacity;
	return AP_OK;
}

/* The snapshot's header, if the file exists: *exists false when it does not. */
static int snap_read_hdr(struct ap_optout *t, struct shdr *sh, bool *exists, char *err)
{
	const char *path = path_in(t, "optout.snap");
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*exists = false;
	if (fd < 0) {
		if (errno == ENOENT)
			return AP_OK;
		return fail(err, "cannot open %s: %s", path, strerror(errno));
	}
	*exists = true;
	if (read_all(fd, sh, sizeof(*sh), 0) != AP_OK || sh->magic != SNAP_MAGIC ||
	    sh->version != 1 || sh->ent_size != ENT_SIZE ||
	    sh->crc != crc(sh, offsetof(struct shdr, crc))) {
		close(fd);
		return fail(err, "%s: not an opt-out snapshot of this version (bad header)", path);
	}
	close(fd);
	return AP_OK;
}

static bool rec_ok(const struct jrec *r, uint64_t seq)
{
	if (r->seq != seq || r->zero || (r->flags & ~(F_END | F_BEGIN)) || r->crc != rec_crc(r))
		return false;
	if (r->type == REC_SET)
		return r->scopes && !(r->scopes & ~AP_OPTOUT_SCOPE_MASK);
	return r->type == REC_DEL;
}

/* Applies records r[0, n) to <g>: applying first, gen after each record (see above). */
static int apply_frame(struct seg *g, const struct jrec *r, size_t n, char *err)
{
	if (!n)
		return AP_OK;
	atomic_store_explicit(&g->h->applying, r[n - 1].seq, memory_order_release);
	for (size_t i = 0; i < n; i++) {
		uint64_t val = r[i].type == REC_SET ? pack(r[i].scopes, r[i].time) : 0;
		if (seg_apply(g, (struct ap_optout_key){r[i].hi, r[i].lo}, val) != AP_OK)
			return fail(err,
			            "journal record %llu does not fit the table (capacity %llu): "
			            "raise the capacity",
			            (unsigned long long)r[i].seq,
			            (unsigned long long)g->h->capacity);
		atomic_store_explicit(&g->h->gen, r[i].seq, memory_order_release);
	}
	return AP_OK;
}

/* Replays the journal records after seq <from> onto <g>, frame by frame. The last frame may
 * be torn (its write never finished its fsync, so it was never applied nor acknowledged),
 * and a crash can leave any of its pages missing, not only the last: it is dropped whole
 * and the file truncated to the frame before it. A damaged record followed by an intact
 * record that begins a frame is not a torn write — that frame was only written after the
 * damaged one's fsync — but corruption: refused. <committed>: the highest seq the table is
 * known to have applied; dropping it would be corruption too. */
static int journal_replay(struct ap_optout *t, struct seg *g, uint64_t from, uint64_t committed,
                          char *err)
{
	const char *path = path_in(t, "optout.journal");
	struct stat sb;
	uint64_t n, i0, i, fs, good;
	size_t body;
	bool partial;
	void *map;
	const struct jrec *r;
	int rc = AP_ERR;

	if (fstat(t->jfd, &sb) != 0 || sb.st_size < (off_t)JHDR_SIZE)
		return fail(err, "%s: cannot read: %s", path, strerror(errno));
	body = (size_t)sb.st_size - JHDR_SIZE;
	n = body / REC_SIZE;
	partial = body % REC_SIZE != 0;
	i0 = from - t->jbase;
	if (from < t->jbase || i0 > n)
		return fail(err, "%s: does not hold record %llu", path,
		            (unsigned long long)from + 1);
	if (i0 == n && !partial) {
		t->jend = t->jbase + n;
		return AP_OK;
	}
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, t->jfd, 0);
	if (map == MAP_FAILED)
		return fail(err, "%s: cannot map: %s", path, strerror(errno));
	r = (const struct jrec *)((const char *)map + JHDR_SIZE);
	for (i = fs = good = i0; i < n; i++) {
		if (!rec_ok(&r[i], t->jbase + 1 + i) || i - fs >= AP_OPTOUT_BATCH)
			break;
		if (r[i].flags & F_END) {
			if (apply_frame(g, r + fs, (size_t)(i + 1 - fs), err) != AP_OK)
				goto out;
			fs = good = i + 1;
		}
	}
	if (good < n || partial) {
		for (uint64_t j = i + 1; j < n; j++)
			if (rec_ok(&r[j], t->jbase + 1 + j) && (r[j].flags & F_BEGIN)) {
				fail(err,
				     "%s: record %llu (seq %llu) is damaged and later records are "
				     "intact: this is corruption, not a torn write; refusing to "
				     "guess "
				     "(see docs/optout.md, \"Recovery\")",
				     path, (unsigned long long)i,
				     (unsigned long long)(t->jbase + 1 + i));
				goto out;
			}
		if (t->jbase + good < committed) {
			fail(err,
			     "%s: ends at seq %llu but the table had applied seq %llu: the journal "
			     "lost committed records; refusing",
			     path, (unsigned long long)(t->jbase + good),
			     (unsigned long long)committed);
			goto out;
		}
		if (ftruncate(t->jfd, (off_t)(JHDR_SIZE + good * REC_SIZE)) != 0 ||
		    fdatasync(t->jfd) != 0) {
			fail(err, "%s: cannot truncate its torn tail: %s", path, strerror(errno));
			goto out;
		}
		note(t, "dropped a torn journal tail (%llu records, %zu bytes)",
		     (unsigned long long)(n - good), body - (size_t)good * REC_SIZE);
	}
	if (good > i0)
		note(t, "replayed %llu journal records", (unsigned long long)(good - i0));
	t->jend = t->jbase + good;
	rc = AP_OK;
out:
	munmap(map, (size_t)sb.st_size);
	return rc;
}

/* Loads the snapshot's entries into <g>, checking its size and checksum. */
static int snap_load(struct ap_optout *t, struct seg *g, char *err)
{
	const char *path = path_in(t, "optout.snap");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	const struct shdr *sh;
	const struct sent *e;
	void *map;
	int rc = AP_ERR;

	if (fd < 0 || fstat(fd, &sb) != 0) {
		fail(err, "cannot open %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return AP_ERR;
	}
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return fail(err, "cannot map %s: %s", path, strerror(errno));
	sh = map;
	e = (const struct sent *)((const char *)map + SHDR_SIZE);
	if ((size_t)sb.st_size != SHDR_SIZE + sh->count * ENT_SIZE ||
	    crc(e, sh->count * ENT_SIZE) != sh->ent_crc) {
		fail(err, "%s: damaged (size or checksum): refusing (see docs/optout.md)", path);
		goto out;
	}
	if (sh->count > g->h->capacity) {
		fail(err, "%s holds %llu users: more than capacity %llu", path,
		     (unsigned long long)sh->count, (unsigned long long)g->h->capacity);
		goto out;
	}
	for (uint64_t i = 0; i < sh->count; i++) {
		unsigned scopes = e[i].val & 0xff;
		if (!scopes || (scopes & ~AP_OPTOUT_SCOPE_MASK) ||
		    seg_apply(g, (struct ap_optout_key){e[i].hi, e[i].lo}, e[i].val) != AP_OK) {
			fail(err, "%s: entry %llu is invalid", path, (unsigned long long)i);
			goto out;
		}
	}
	st(&g->h->gen, sh->seq);
	st(&g->h->applying, sh->seq);
	rc = AP_OK;
out:
	munmap(map, (size_t)sb.st_size);
	return rc;
}

/* Builds a new segment from snapshot + journal and publishes it. */
static int rebuild(struct ap_optout *t, uint64_t capacity, char *err)
{
	char tmp[TMP_NAME_MAX];
	struct seg ng;

	tmp_name(t, tmp);
	if (seg_create(&ng, tmp, capacity, t->seed, err) != AP_OK)
		return AP_ERR;
	if ((t->have_snap && snap_load(t, &ng, err) != AP_OK) ||
	    journal_replay(t, &ng, t->have_snap ? t->snap_seq : t->jbase, 0, err) != AP_OK) {
		seg_unmap(&ng);
		shm_unlink(tmp);
		return AP_ERR;
	}
	st(&ng.h->gen, t->jend);
	st(&ng.h->applying, t->jend);
	return seg_publish(t, &ng, err);
}

/* ---- opening ---- */

static struct ap_optout *handle_new(const char *shm, char *err)
{
	struct ap_optout *t;

	if (!shm || !valid_name(shm)) {
		fail(err,
		     "bad shared-memory name: one '/' then a name without '/', at most %d bytes",
		     SHM_NAME_MAX);
		return NULL;
	}
	if (!(t = calloc(1, sizeof(*t)))) {
		fail(err, "out of memory");
		return NULL;
	}
	snprintf(t->shm, sizeof(t->shm), "%s", shm);
	t->lockfd = t->jfd = -1;
	return t;
}

static int lock_dir(struct ap_optout *t, bool nowait, char *err)
{
	const char *path = path_in(t, "lock");

	if (mkdir(t->dir, 0750) != 0 && errno != EEXIST)
		return fail(err, "cannot create %s: %s", t->dir, strerror(errno));
	t->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (t->lockfd < 0)
		return fail(err, "cannot open %s: %s", path, strerror(errno));
	while (flock(t->lockfd, LOCK_EX | (nowait ? LOCK_NB : 0)) != 0) {
		if (errno == EINTR)
			continue;
		if (errno == EWOULDBLOCK)
			return fail(err, "another writer holds %s", path);
		return fail(err, "cannot lock %s: %s", path, strerror(errno));
	}
	return AP_OK;
}

/* Opens the segment by name for the writer and says, in *why, why it cannot be used as
 * it is (NULL: it can). A mapped but unusable segment stays in t->g so that the rebuild
 * retires it. */
static int writer_map(struct ap_optout *t, uint64_t capacity, uint64_t jend, const char **why,
                      char *whybuf, char *err)
{
	int fd = shm_open(t->shm, O_RDWR, 0);
	struct seg_hdr *h;
	uint64_t gen;

	*why = NULL;
	if (fd < 0) {
		if (errno != ENOENT)
			return fail(err, "cannot open shared memory %s: %s", t->shm,
			            strerror(errno));
		*why = "it did not exist";
		return AP_OK;
	}
	if (seg_map_fd(&t->g, fd, true, why, whybuf) != AP_OK) {
		close(fd);
		return AP_OK;
	}
	close(fd);
	h = t->g.h;
	gen = ld(&h->gen);
	/* Another seed means another table — most likely another directory given the same
	 * name by mistake. Replacing it would silently swap one table's users for another's
	 * under the workers, so this takes an operator's decision. */
	if (h->seed != t->seed)
		return fail(err,
		            "shared memory %s holds another table (its seed is not the one in %s): "
		            "give this table another name, or remove that one first (anonctl "
		            "optout unlink --shm %s)",
		            t->shm, t->dir, t->shm);
	if (capacity && h->capacity != capacity) {
		snprintf(whybuf, AP_OPTOUT_ERR_MAX, "its capacity changes from %llu to %llu",
		         (unsigned long long)h->capacity, (unsigned long long)capacity);
		*why = whybuf;
	} else if (gen < t->jbase || gen > jend) {
		snprintf(whybuf, AP_OPTOUT_ERR_MAX,
		         "its generation %llu is outside the journal (%llu..%llu)",
		         (unsigned long long)gen, (unsigned long long)t->jbase,
		         (unsigned long long)jend);
		*why = whybuf;
	}
	return AP_OK;
}

static int open_ephemeral(struct ap_optout *t, size_t capacity, char *err)
{
	char tmp[TMP_NAME_MAX];
	struct seg ng;

	t->ephemeral = true;
	tmp_name(t, tmp);
	if (random_seed(&t->seed, err) != AP_OK ||
	    seg_create(&ng, tmp, capacity ? capacity : AP_OPTOUT_DEFAULT_CAPACITY, t->seed, err) !=
	            AP_OK)
		return AP_ERR;
	return seg_publish(t, &ng, err);
}

static int open_durable(struct ap_optout *t, const struct ap_optout_opts *o, char *err)
{
	char jpath[PATH_MAX], whybuf[AP_OPTOUT_ERR_MAX], tmp[TMP_NAME_MAX];
	struct shdr sh;
	struct stat sb;
	uint64_t jn, jend, capacity = o->capacity;
	const char *why;

	if (!(t->dir = strdup(o->dir)))
		return fail(err, "out of memory");
	if (lock_dir(t, o->nowait, err) != AP_OK)
		return AP_ERR;
	/* leftovers of a writer that died while writing a snapshot or a new journal, or while
	 * building a segment (which may be hundreds of MiB of shared memory) */
	unlink(path_in(t, "optout.snap.tmp"));
	unlink(path_in(t, "optout.journal.tmp"));
	tmp_name(t, tmp);
	shm_unlink(tmp);
	if (snap_read_hdr(t, &sh, &t->have_snap, err) != AP_OK)
		return AP_ERR;
	snprintf(jpath, sizeof(jpath), "%s", path_in(t, "optout.journal"));
	t->jfd = open(jpath, O_RDWR | O_CLOEXEC);
	if (t->jfd < 0) {
		if (errno != ENOENT)
			return fail(err, "cannot open %s: %s", jpath, strerror(errno));
		if (t->have_snap)
			return fail(
			        err,
			        "%s is missing but a snapshot exists: changes after the snapshot "
			        "would be lost; restore the journal (see docs/optout.md)",
			        jpath);
		if (random_seed(&t->seed, err) != AP_OK ||
		    journal_create(t, 0, capacity ? capacity : AP_OPTOUT_DEFAULT_CAPACITY, err) !=
		            AP_OK)
			return AP_ERR;
		note(t, "started an empty journal in %s", t->dir);
	} else if (journal_read_hdr(t, jpath, err) != AP_OK) {
		return AP_ERR;
	}
	if (fstat(t->jfd, &sb) != 0)
		return fail(err, "%s: %s", jpath, strerror(errno));
	jn = ((uint64_t)sb.st_size - JHDR_SIZE) / REC_SIZE;
	jend = t->jbase + jn;
	if (t->have_snap) {
		if (sh.seed != t->seed)
			return fail(err, "the snapshot and the journal in %s have different seeds",
			            t->dir);
		if (sh.seq < t->jbase || sh.seq > jend)
			return fail(
			        err,
			        "the snapshot (seq %llu) and the journal (seq %llu..%llu) in %s do "
			        "not follow each other: records are missing",
			        (unsigned long long)sh.seq, (unsigned long long)t->jbase,
			        (unsigned long long)jend, t->dir);
		t->snap_seq = sh.seq;
	} else if (t->jbase != 0) {
		return fail(err, "%s starts after seq %llu but there is no snapshot", jpath,
		            (unsigned long long)t->jbase);
	}
	if (writer_map(t, capacity, jend, &why, whybuf, err) != AP_OK)
		return AP_ERR;
	if (!why) {
		struct seg_hdr *h = t->g.h;
		uint64_t gen = ld(&h->gen), applying = ld(&h->applying);
		bool dirty = applying != gen;
		bool behind = gen != jend || ((uint64_t)sb.st_size - JHDR_SIZE) % REC_SIZE;

		capacity = h->capacity;
		if (behind || dirty) {
			if (journal_replay(t, &t->g, gen, applying > gen ? applying : gen, err) !=
			    AP_OK)
				return AP_ERR;
			st(&h->applying, ld(&h->gen));
			if (dirty) {
				seg_recount(&t->g);
				note(t, "a writer had died while changing the table: recounted it");
			}
		}
		t->jend = ld(&h->gen);
	} else {
		if (!capacity)
			capacity = t->jcap ? t->jcap : AP_OPTOUT_DEFAULT_CAPACITY;
		if (rebuild(t, capacity, err) != AP_OK)
			return AP_ERR;
		note(t, "rebuilt shared memory %s from %s%s: %s", t->shm,
		     t->have_snap ? "snapshot + " : "", "journal", why);
	}
	/* the capacity in the files is the one a later open without a capacity uses */
	if (capacity != t->jcap && ap_optout_snapshot(t, err) != AP_OK)
		return AP_ERR;
	if (ld(&t->g.h->tomb) && ld(&t->g.h->live) + ld(&t->g.h->tomb) > USED_MAX(t->g.h->slots))
		return seg_copy(t, err);
	return AP_OK;
}

struct ap_optout *ap_optout_open(const struct ap_optout_opts *o, char *err)
{
	struct ap_optout *t = handle_new(o->shm, err);

	if (!t)
		return NULL;
	t->writer = true;
	if (o->capacity > AP_OPTOUT_MAX_CAPACITY) {
		fail(err, "capacity %zu is above the maximum %u", o->capacity,
		     AP_OPTOUT_MAX_CAPACITY);
		goto bad;
	}
	if (!(t->stage = malloc(AP_OPTOUT_BATCH * sizeof(*t->stage)))) {
		fail(err, "out of memory");
		goto bad;
	}
	if ((o->dir ? open_durable(t, o, err) : open_ephemeral(t, o->capacity, err)) != AP_OK)
		goto bad;
	return t;
bad:
	ap_optout_close(t);
	return NULL;
}

static int reader_map(struct seg *g, const char *shm, char *err)
{
	char whybuf[AP_OPTOUT_ERR_MAX];
	const char *why;
	int fd = shm_open(shm, O_RDONLY, 0);

	if (fd < 0)
		return fail(err, "cannot open shared memory %s: %s", shm, strerror(errno));
	if (seg_map_fd(g, fd, false, &why, whybuf) != AP_OK) {
		close(fd);
		seg_unmap(g);
		return fail(err, "shared memory %s: %s", shm, why);
	}
	close(fd);
	/* Huge pages when /dev/shm allows them (mounted with huge=advise or within_size): a
	 * random lookup then misses the TLB far less. Then page tables now, not on the first
	 * lookups. Both are hints; failures are harmless. */
	madvise(g->h, g->bytes, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_READ
	madvise(g->h, g->bytes, MADV_POPULATE_READ);
#endif
	return AP_OK;
}

struct ap_optout *ap_optout_open_reader(const char *shm, char *err)
{
	struct ap_optout *t = handle_new(shm, err);

	if (!t)
		return NULL;
	if (reader_map(&t->g, shm, err) != AP_OK) {
		free(t);
		return NULL;
	}
	t->seed = t->g.h->seed;
	return t;
}

int ap_optout_refresh(struct ap_optout *t, char *err)
{
	struct stat sb;
	struct seg ng;
	int fd;

	if (t->writer)
		return 0;
	fd = shm_open(t->shm, O_RDONLY, 0);
	if (fd < 0)
		return fail(err, "cannot open shared memory %s: %s (still using the old mapping)",
		            t->shm, strerror(errno));
	if (fstat(fd, &sb) != 0) {
		close(fd);
		return fail(err, "shared memory %s: %s", t->shm, strerror(errno));
	}
	close(fd);
	if (sb.st_dev == t->g.dev && sb.st_ino == t->g.ino)
		return 0;
	if (reader_map(&ng, t->shm, err) != AP_OK)
		return AP_ERR;
	seg_unmap(&t->g);
	t->g = ng;
	t->seed = ng.h->seed;
	return 1;
}

void ap_optout_close(struct ap_optout *t)
{
	if (!t)
		return;
	seg_unmap(&t->g);
	if (t->jfd >= 0)
		close(t->jfd);
	if (t->lockfd >= 0)
		close(t->lockfd); /* releases the flock */
	free(t->stage);
	free(t->fresh);
	free(t->dir);
	free(t);
}

int ap_optout_unlink(const char *shm, char *err)
{
	char tmp[TMP_NAME_MAX];

	if (!shm || !valid_name(shm))
		return fail(err, "bad shared-memory name");
	snprintf(tmp, sizeof(tmp), "%s.new", shm);
	shm_unlink(tmp);
	if (shm_unlink(shm) != 0 && errno != ENOENT)
		return fail(err, "cannot remove shared memory %s: %s", shm, strerror(errno));
	return AP_OK;
}

const char *ap_optout_notice(const struct ap_optout *t)
{
	return t->notice;
}

uint64_t ap_optout_seed(const struct ap_optout *t)
{
	return t->seed;
}

int ap_optout_adopt_seed(struct ap_optout *t, uint64_t seed, char *err)
{
	if (!t->writer || t->ephemeral)
		return fail(err, "only the writer of a table with a journal can change its seed");
	if (seed == t->seed)
		return AP_OK;
	if (t->have_snap || t->jend != 0 || t->nstage || ld(&t->g.h->live))
		return fail(err, "the table already holds records under its own seed: start from "
		                 "an empty directory to adopt another one");
	/* the journal first: a crash before the rebuild leaves a segment with the old seed,
	 * which the next open rebuilds */
	t->seed = seed;
	if (journal_create(t, 0, t->g.h->capacity, err) != AP_OK)
		return AP_ERR;
	return rebuild(t, t->g.h->capacity, err);
}

/* ---- reading ---- */

struct ap_optout_key ap_optout_key(const struct ap_optout *t, const void *user, size_t len)
{
	return hash_user(t->seed, user, len);
}

unsigned ap_optout_lookup(const struct ap_optout *t, const void *user, size_t len)
{
	return (unsigned)(probe(&t->g, hash_user(t->seed, user, len)) & 0xff);
}

unsigned ap_optout_lookup_key(const struct ap_optout *t, struct ap_optout_key k, int64_t *time)
{
	uint64_t v = probe(&t->g, k);

	if (time)
		*time = (int64_t)(v >> 8);
	return (unsigned)(v & 0xff);
}

void ap_optout_prefetch(const struct ap_optout *t, struct ap_optout_key k)
{
	__builtin_prefetch(&t->g.s[home(&t->g, k)]);
}

void ap_optout_lookup_many(const struct ap_optout *t, const struct ap_span *ids, size_t n,
                           unsigned *out)
{
	enum { GROUP = 16 };
	struct ap_optout_key k[GROUP];

	for (size_t base = 0; base < n; base += GROUP) {
		size_t m = n - base < GROUP ? n - base : GROUP;
		for (size_t i = 0; i < m; i++)
			k[i] = hash_user(t->seed, ids[base + i].p, ids[base + i].n);
		for (size_t i = 0; i < m; i++) {
			__builtin_prefetch(&t->g.s[home(&t->g, k[i])]);
			__builtin_prefetch(&t->g.s[(home(&t->g, k[i]) + 2) & t->g.mask]);
		}
		for (size_t i = 0; i < m; i++)
			out[base + i] = (unsigned)(probe(&t->g, k[i]) & 0xff);
	}
}

int ap_optout_iterate(const struct ap_optout *t,
                      int (*cb)(void *arg, const struct ap_optout_entry *e), void *arg)
{
	for (uint64_t i = 0; i <= t->g.mask; i++) {
		struct slot *s = &t->g.s[i];
		struct ap_optout_entry e;
		uint64_t c, v;
		int rc;

		do {
			c = atomic_load_explicit(&s->ctl, memory_order_acquire);
			e.key.hi = ld(&s->hi);
			e.key.lo = ld(&s->lo);
			v = ld(&s->val);
			atomic_thread_fence(memory_order_acquire);
		} while (ld(&s->ctl) != c);
		if ((c & 3) != ST_LIVE)
			continue;
		e.scopes = (unsigned)(v & 0xff);
		e.time = (int64_t)(v >> 8);
		if ((rc = cb(arg, &e)) != 0)
			return rc;
	}
	return 0;
}

void ap_optout_stats(const struct ap_optout *t, struct ap_optout_stats *s)
{
	const struct seg_hdr *h = t->g.h;

	memset(s, 0, sizeof(*s));
	s->entries = (size_t)atomic_load_explicit(&h->live, memory_order_relaxed);
	s->tombstones = (size_t)atomic_load_explicit(&h->tomb, memory_order_relaxed);
	s->capacity = (size_t)h->capacity;
	s->slots = (size_t)h->slots;
	s->bytes = t->g.bytes;
	s->load = (double)s->entries / (double)s->slots;
	s->gen = atomic_load_explicit(&h->gen, memory_order_relaxed);
	if (t->writer && !t->ephemeral) {
		s->snapshot_seq = t->snap_seq;
		s->journal_records = t->jend - t->jbase;
	}
}

/* ---- writing ---- */

/* Appends r[0, n) as one frame: seqs, flags and checksums filled in, one write, one fsync.
 * On failure the file is cut back to where it was, so the journal never holds a record
 * that was not applied because of an error reported to the caller. */
static int journal_append(struct ap_optout *t, struct jrec *r, size_t n, char *err)
{
	off_t off = (off_t)(JHDR_SIZE + (t->jend - t->jbase) * REC_SIZE);

	for (size_t i = 0; i < n; i++) {
		r[i].seq = t->jend + 1 + i;
		r[i].flags = (i == 0 ? F_BEGIN : 0) | (i + 1 == n ? F_END : 0);
		r[i].zero = 0;
		r[i].crc = rec_crc(&r[i]);
	}
	if (write_all(t->jfd, r, n * REC_SIZE, off) != AP_OK || fdatasync(t->jfd) != 0) {
		int e = errno;
		if (ftruncate(t->jfd, off) == 0)
			fdatasync(t->jfd);
		return fail(err, "cannot append to %s: %s (nothing changed)",
		            path_in(t, "optout.journal"), strerror(e));
	}
	t->jend += n;
	return AP_OK;
}

int ap_optout_stage_key(struct ap_optout *t, struct ap_optout_key k, unsigned scopes, int64_t time,
                        char *err)
{
	struct jrec *r;

	if (!t->writer)
		return fail(err, "the table is open read-only");
	if (scopes & ~AP_OPTOUT_SCOPE_MASK)
		return fail(err, "unknown scope bits 0x%x", scopes & ~AP_OPTOUT_SCOPE_MASK);
	r = &t->stage[t->nstage++];
	memset(r, 0, sizeof(*r));
	r->type = scopes ? REC_SET : REC_DEL;
	r->scopes = (uint8_t)scopes;
	r->hi = k.hi;
	r->lo = k.lo;
	r->time = (int64_t)(pack(0, time) >> 8);
	if (t->nstage == AP_OPTOUT_BATCH)
		return ap_optout_commit(t, err);
	return AP_OK;
}

int ap_optout_stage(struct ap_optout *t, const void *user, size_t len, unsigned scopes,
                    int64_t time, char *err)
{
	return ap_optout_stage_key(t, hash_user(t->seed, user, len), scopes, time, err);
}

static int key_cmp(const void *a, const void *b)
{
	const struct ap_optout_key *x = a, *y = b;

	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* How many distinct keys the n staged records would add to the table: those set and not
 * in it, each counted once however often it is staged. Removals in the same batch are not
 * credited (their order matters), so this bounds the entries at every point of the batch. */
static int count_fresh(struct ap_optout *t, size_t n, uint64_t *fresh, char *err)
{
	size_t m = 0;

	*fresh = 0;
	if (!t->fresh && !(t->fresh = malloc(AP_OPTOUT_BATCH * sizeof(*t->fresh))))
		return fail(err, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct ap_optout_key k = {t->stage[i].hi, t->stage[i].lo};
		if (t->stage[i].type == REC_SET && !probe(&t->g, k))
			t->fresh[m++] = k;
	}
	if (m > 1)
		qsort(t->fresh, m, sizeof(*t->fresh), key_cmp);
	for (size_t i = 0; i < m; i++)
		*fresh += i == 0 || key_cmp(&t->fresh[i - 1], &t->fresh[i]) != 0;
	return AP_OK;
}

int ap_optout_commit(struct ap_optout *t, char *err)
{
	size_t n = t->nstage;
	struct seg_hdr *h;
	uint64_t fresh = 0, live, gen;

	if (!t->writer)
		return fail(err, "the table is open read-only");
	if (!n)
		return AP_OK;
	t->nstage = 0;
	h = t->g.h;
	live = ld(&h->live);
	if (count_fresh(t, n, &fresh, err) != AP_OK)
		return AP_ERR;
	if (live + fresh > h->capacity)
		return fail(err,
		            "the table is full: %llu users of capacity %llu, and this change adds "
		            "up to %llu; nothing was changed (raise the capacity)",
		            (unsigned long long)live, (unsigned long long)h->capacity,
		            (unsigned long long)fresh);
	if (ld(&h->tomb) && live + ld(&h->tomb) + fresh > USED_MAX(h->slots)) {
		if (seg_copy(t, err) != AP_OK)
			return AP_ERR;
		h = t->g.h;
	}
	if (t->ephemeral) {
		gen = ld(&h->gen);
		for (size_t i = 0; i < n; i++) {
			t->stage[i].seq = gen + 1 + i;
			t->stage[i].flags = i + 1 == n ? F_END : 0;
		}
	} else if (journal_append(t, t->stage, n, err) != AP_OK) {
		return AP_ERR;
	}
	if (apply_frame(&t->g, t->stage, n, err) != AP_OK)
		return AP_ERR;
	if (!t->ephemeral && t->jend - t->jbase > (1u << 20) && t->jend - t->jbase > ld(&h->live)) {
		char serr[AP_OPTOUT_ERR_MAX];
		if (ap_optout_snapshot(t, serr) != AP_OK)
			note(t, "the change is committed, but the snapshot after it failed: %s",
			     serr);
	}
	return AP_OK;
}

int ap_optout_set_key(struct ap_optout *t, struct ap_optout_key k, unsigned scopes, int64_t time,
                      char *err)
{
	if (ap_optout_stage_key(t, k, scopes, time, err) != AP_OK)
		return AP_ERR;
	return ap_optout_commit(t, err);
}

int ap_optout_set(struct ap_optout *t, const void *user, size_t len, unsigned scopes, int64_t time,
                  char *err)
{
	return ap_optout_set_key(t, hash_user(t->seed, user, len), scopes, time, err);
}

int ap_optout_remove_key(struct ap_optout *t, struct ap_optout_key k, int64_t time, char *err)
{
	if (!t->writer)
		return fail(err, "the table is open read-only");
	if (ap_optout_commit(t, err) != AP_OK)
		return AP_ERR;
	if (!probe(&t->g, k))
		return 0;
	if (ap_optout_set_key(t, k, 0, time, err) != AP_OK)
		return AP_ERR;
	return 1;
}

int ap_optout_remove(struct ap_optout *t, const void *user, size_t len, int64_t time, char *err)
{
	return ap_optout_remove_key(t, hash_user(t->seed, user, len), time, err);
}

/* The crash windows, in order (each leaves a state that open_durable accepts):
 *  1. while the temporary snapshot is written: the old snapshot and journal are intact,
 *     the temporary file is removed at the next open;
 *  2. after the rename: the new snapshot (seq G) and the old journal, which ends at G, so
 *     nothing after the snapshot is missing and the records up to G are skipped;
 *  3. after the journal was replaced: the new snapshot and an empty journal based at G.
 * The journal is replaced by rename rather than truncated in place so that it never lacks
 * a valid header, and the directory is fsync'd after each rename so the second can never
 * become durable before the first. */
int ap_optout_snapshot(struct ap_optout *t, char *err)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	struct shdr sh = {0};
	struct sent *buf;
	size_t nb = 0, cap = 65536;
	off_t off = SHDR_SIZE;
	uLong ecrc = crc32(0L, Z_NULL, 0);
	int fd;

	if (!t->writer || t->ephemeral)
		return fail(err, "only the writer of a table with a journal takes snapshots");
	if (ap_optout_commit(t, err) != AP_OK)
		return AP_ERR;
	snprintf(tmp, sizeof(tmp), "%s", path_in(t, "optout.snap.tmp"));
	snprintf(dst, sizeof(dst), "%s", path_in(t, "optout.snap"));
	if (!(buf = malloc(cap * sizeof(*buf))))
		return fail(err, "out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0) {
		free(buf);
		return fail(err, "cannot create %s: %s", tmp, strerror(errno));
	}
	for (uint64_t i = 0; i <= t->g.mask + 1; i++) {
		if (nb == cap || (i == t->g.mask + 1 && nb)) {
			if (write_all(fd, buf, nb * ENT_SIZE, off) != AP_OK)
				goto bad;
			ecrc = crc32(ecrc, (const Bytef *)buf, (uInt)(nb * ENT_SIZE));
			off += (off_t)(nb * ENT_SIZE);
			sh.count += nb;
			nb = 0;
		}
		if (i <= t->g.mask && (ld(&t->g.s[i].ctl) & 3) == ST_LIVE)
			buf[nb++] = (struct sent){ld(&t->g.s[i].hi), ld(&t->g.s[i].lo),
			                          ld(&t->g.s[i].val)};
	}
	sh.magic = SNAP_MAGIC;
	sh.version = 1;
	sh.ent_size = ENT_SIZE;
	sh.seed = t->seed;
	sh.seq = t->jend;
	sh.capacity = t->g.h->capacity;
	sh.created = (uint64_t)time(NULL);
	sh.ent_crc = (uint32_t)ecrc;
	sh.crc = crc(&sh, offsetof(struct shdr, crc));
	if (write_all(fd, &sh, sizeof(sh), 0) != AP_OK || fsync(fd) != 0)
		goto bad;
	close(fd);
	free(buf);
	if (rename(tmp, dst) != 0) {
		fail(err, "cannot rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return AP_ERR;
	}
	if (fsync_dir(t, err) != AP_OK)
		return AP_ERR;
	t->have_snap = true;
	t->snap_seq = t->jend;
	return journal_create(t, t->jend, t->g.h->capacity, err);
bad:
	fail(err, "cannot write %s: %s", tmp, strerror(errno));
	close(fd);
	unlink(tmp);
	free(buf);
	return AP_ERR;
}

int ap_optout_compact(struct ap_optout *t, char *err)
{
	if (!t->writer)
		return fail(err, "the table is open read-only");
	if (ap_optout_commit(t, err) != AP_OK)
		return AP_ERR;
	return seg_copy(t, err);
}

/* ---- text forms ---- */

void ap_optout_key_hex(struct ap_optout_key k, char *out)
{
	snprintf(out, 33, "%016llx%016llx", (unsigned long long)k.hi, (unsigned long long)k.lo);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int ap_optout_key_parse(struct ap_span s, struct ap_optout_key *k)
{
	uint64_t w[2] = {0, 0};

	if (s.n != 32)
		return AP_ERR;
	for (size_t i = 0; i < 32; i++) {
		int v = hexval(s.p[i]);
		if (v < 0)
			return AP_ERR;
		w[i / 16] = w[i / 16] << 4 | (uint64_t)v;
	}
	k->hi = w[0];
	k->lo = w[1];
	return AP_OK;
}

static const char *const scope_names[] = {"analytics", "personalization", "push",
                                          "location",  "minor",           "all"};

size_t ap_optout_scopes_format(unsigned scopes, char sep, char *out, size_t n)
{
	size_t len = 0;

	if (n)
		out[0] = 0;
	for (unsigned i = 0; i < AP_ARRAY_LEN(scope_names); i++) {
		if (!(scopes & (1u << i)))
			continue;
		int w = snprintf(len < n ? out + len : NULL, len < n ? n - len : 0, "%s%s",
		                 len ? (char[]){sep, 0} : "", scope_names[i]);
		len += (size_t)w;
	}
	return len;
}

int ap_optout_scopes_parse(struct ap_span s, char sep, unsigned *scopes)
{
	char name[32];

	*scopes = 0;
	for (;;) {
		const char *e = memchr(s.p, sep, s.n);
		struct ap_span one =
		        ap_span_trim((struct ap_span){s.p, e ? (size_t)(e - s.p) : s.n});
		unsigned bit;

		if (one.n == 0 || one.n >= sizeof(name))
			return AP_ERR;
		memcpy(name, one.p, one.n);
		name[one.n] = 0;
		for (size_t i = 0; i < one.n; i++)
			if (name[i] >= 'A' && name[i] <= 'Z')
				name[i] |= 0x20;
		if (!(bit = ap_scope_parse(name)))
			return AP_ERR;
		*scopes |= bit;
		if (!e)
			return AP_OK;
		s.n -= (size_t)(e - s.p) + 1;
		s.p = e + 1;
	}
}
