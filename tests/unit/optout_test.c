/* Tests for optout.c: the table (insert, lookup, update, remove, tombstone reuse, a full
 * table), its header checks, and its durability — rebuild from the journal, snapshot +
 * journal, a torn journal tail, corruption in the middle, a writer that died between
 * fsync and apply — then the text forms, an export/import round trip and a 10 M table.
 * Files are damaged here with plain reads and writes at the offsets docs/optout.md gives,
 * not through optout.c. Each test has its own directory and shm name (with the pid). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "optout.h"

#define A AP_SCOPE_ANALYTICS
#define P AP_SCOPE_PUSH
#define L AP_SCOPE_LOCATION

/* on-disk layout (docs/optout.md) */
#define JHDR         64
#define JREC         40
#define SEG_GEN      64
#define SEG_APPLYING 72
#define SEG_LIVE     80

static char dir[128], shm[64];
static char err[AP_OPTOUT_ERR_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/optout_test.XXXXXX");
	cr_assert(mkdtemp(dir));
	snprintf(shm, sizeof(shm), "/ap-optout-test-%d", (int)getpid());
}

static void teardown(void)
{
	char cmd[256];

	ap_optout_unlink(shm, err);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(optout, .init = setup, .fini = teardown, .timeout = 300);

static struct ap_optout *wopen(size_t capacity)
{
	struct ap_optout_opts o = {shm, dir, capacity, false};
	struct ap_optout *t = ap_optout_open(&o, err);

	cr_assert(t, "open: %s", err);
	return t;
}

static const char *path(const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static const char *shm_path(void)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "/dev/shm%s", shm);
	return buf;
}

static void set(struct ap_optout *t, const char *user, unsigned scopes, int64_t time)
{
	cr_assert_eq(ap_optout_set(t, user, strlen(user), scopes, time, err), AP_OK, "set: %s",
	             err);
}

static unsigned get(const struct ap_optout *t, const char *user)
{
	return ap_optout_lookup(t, user, strlen(user));
}

static void poke(const char *file, off_t off, const void *p, size_t n)
{
	int fd = open(file, O_WRONLY);

	cr_assert(fd >= 0, "open %s", file);
	cr_assert_eq(pwrite(fd, p, n, off), (ssize_t)n);
	close(fd);
}

static void peek(const char *file, off_t off, void *p, size_t n)
{
	int fd = open(file, O_RDONLY);

	cr_assert(fd >= 0, "open %s", file);
	cr_assert_eq(pread(fd, p, n, off), (ssize_t)n);
	close(fd);
}

static off_t fsize(const char *file)
{
	struct stat sb;

	cr_assert_eq(stat(file, &sb), 0, "stat %s", file);
	return sb.st_size;
}

/* Flips one bit of the key of journal record <i>: its checksum no longer matches. */
static void damage_record(uint64_t i)
{
	unsigned char b;
	off_t off = JHDR + (off_t)i * JREC + 20;

	peek(path("optout.journal"), off, &b, 1);
	b ^= 1;
	poke(path("optout.journal"), off, &b, 1);
}

static struct ap_optout_stats stats(const struct ap_optout *t)
{
	struct ap_optout_stats s;

	ap_optout_stats(t, &s);
	return s;
}

/* ---- the table ---- */

Test(optout, insert_lookup_update_remove)
{
	struct ap_optout *t = wopen(1000);
	int64_t tm;

	cr_assert_eq(get(t, "alice"), 0);
	set(t, "alice", A | P, 1000);
	set(t, "bob", L, 1001);
	cr_assert_eq(get(t, "alice"), A | P);
	cr_assert_eq(get(t, "bob"), L);
	cr_assert_eq(get(t, "carol"), 0);
	cr_assert_eq(ap_optout_lookup_key(t, ap_optout_key(t, "alice", 5), &tm), A | P);
	cr_assert_eq(tm, 1000);

	set(t, "alice", AP_SCOPE_ALL, 2000); /* update in place */
	cr_assert_eq(ap_optout_lookup_key(t, ap_optout_key(t, "alice", 5), &tm), AP_SCOPE_ALL);
	cr_assert_eq(tm, 2000);
	cr_assert_eq(stats(t).entries, 2);

	cr_assert_eq(ap_optout_remove(t, "alice", 5, 3000, err), 1);
	cr_assert_eq(get(t, "alice"), 0);
	cr_assert_eq(ap_optout_lookup_key(t, ap_optout_key(t, "alice", 5), &tm), 0);
	cr_assert_eq(tm, 0);
	cr_assert_eq(ap_optout_remove(t, "alice", 5, 3000, err), 0, "absent: nothing to do");
	cr_assert_eq(get(t, "bob"), L);
	cr_assert_eq(stats(t).entries, 1);
	cr_assert_eq(stats(t).tombstones, 1);
	cr_assert_eq(stats(t).journal_records, 4, "the second remove journals nothing");

	set(t, "bob", 0, 4000); /* scopes 0 removes */
	cr_assert_eq(get(t, "bob"), 0);
	cr_assert_eq(stats(t).entries, 0);
	ap_optout_close(t);
}

Test(optout, ids_are_bytes)
{
	struct ap_optout *t = wopen(100);
	const char id1[] = {'a', 0, 'b'}, id2[] = {'a', 0, 'c'};

	cr_assert_eq(ap_optout_set(t, id1, 3, A, 1, err), AP_OK);
	cr_assert_eq(ap_optout_lookup(t, id1, 3), A);
	cr_assert_eq(ap_optout_lookup(t, id2, 3), 0);
	cr_assert_eq(ap_optout_lookup(t, id1, 1), 0);
	cr_assert_eq(ap_optout_set(t, "", 0, P, 1, err), AP_OK, "the empty id is an id too");
	cr_assert_eq(ap_optout_lookup(t, "", 0), P);
	ap_optout_close(t);
}

Test(optout, bad_scopes_refused)
{
	struct ap_optout *t = wopen(100);

	cr_assert_eq(ap_optout_set(t, "u", 1, 0x40, 1, err), AP_ERR);
	cr_assert(strstr(err, "scope"), "%s", err);
	cr_assert_eq(stats(t).journal_records, 0);
	ap_optout_close(t);
}

/* Users whose keys start their probe at the same slot as <first>'s. */
static int same_home(const struct ap_optout *t, const char *first, char out[][16], int want)
{
	size_t mask = stats(t).slots - 1;
	uint64_t home = ap_optout_key(t, first, strlen(first)).lo & mask;
	int n = 0;

	for (int i = 0; n < want && i < 1000000; i++) {
		snprintf(out[n], 16, "c%d", i);
		if ((ap_optout_key(t, out[n], strlen(out[n])).lo & mask) == home)
			n++;
	}
	return n;
}

Test(optout, tombstone_reuse)
{
	struct ap_optout *t = wopen(40); /* 64 slots */
	char u[3][16];

	cr_assert_eq(same_home(t, "x", u, 3), 3);
	set(t, u[0], A, 1);
	set(t, u[1], P, 2); /* one slot further */
	cr_assert_eq(ap_optout_remove(t, u[0], strlen(u[0]), 3, err), 1);
	cr_assert_eq(stats(t).tombstones, 1);
	cr_assert_eq(get(t, u[1]), P, "found past the tombstone");
	set(t, u[2], L, 4); /* takes the tombstone */
	cr_assert_eq(stats(t).tombstones, 0);
	cr_assert_eq(stats(t).entries, 2);
	cr_assert_eq(get(t, u[1]), P);
	cr_assert_eq(get(t, u[2]), L);
	cr_assert_eq(get(t, u[0]), 0);
	set(t, u[1], A, 5); /* still an update, not a second copy */
	cr_assert_eq(stats(t).entries, 2);
	cr_assert_eq(ap_optout_remove(t, u[1], strlen(u[1]), 6, err), 1);
	cr_assert_eq(get(t, u[1]), 0);
	cr_assert_eq(get(t, u[2]), L);

	/* compaction drops tombstones and keeps entries */
	cr_assert_eq(ap_optout_compact(t, err), AP_OK, "%s", err);
	cr_assert_eq(stats(t).tombstones, 0);
	cr_assert_eq(get(t, u[2]), L);
	ap_optout_close(t);
}

Test(optout, churn_never_fills_with_tombstones)
{
	struct ap_optout *t = wopen(40); /* 64 slots */
	char u[32];

	/* far more distinct users than slots, never more than 30 at a time */
	for (int i = 0; i < 2000; i++) {
		snprintf(u, sizeof(u), "churn%d", i);
		set(t, u, A, i);
		if (i >= 30) {
			snprintf(u, sizeof(u), "churn%d", i - 30);
			cr_assert_eq(ap_optout_remove(t, u, strlen(u), i, err), 1, "%s", err);
		}
	}
	cr_assert_eq(stats(t).entries, 30);
	cr_assert_leq(stats(t).entries + stats(t).tombstones, 48);
	for (int i = 1970; i < 2000; i++) {
		snprintf(u, sizeof(u), "churn%d", i);
		cr_assert_eq(get(t, u), A);
	}
	ap_optout_close(t);
}

Test(optout, full_table_refused)
{
	struct ap_optout *t = wopen(10);
	char u[16];

	for (int i = 0; i < 10; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		set(t, u, A, i);
	}
	cr_assert_eq(ap_optout_set(t, "u10", 3, A, 10, err), AP_ERR);
	cr_assert(strstr(err, "full"), "%s", err);
	cr_assert_eq(get(t, "u10"), 0);
	cr_assert_eq(stats(t).journal_records, 10, "a refused change is not journaled");
	set(t, "u3", P, 11); /* an update still works */
	cr_assert_eq(ap_optout_remove(t, "u0", 2, 12, err), 1);
	set(t, "u10", L, 13);
	cr_assert_eq(get(t, "u10"), L);

	/* a batch that would overflow is refused whole */
	cr_assert_eq(ap_optout_stage(t, "u4", 2, L, 14, err), AP_OK);
	cr_assert_eq(ap_optout_stage(t, "n1", 2, L, 14, err), AP_OK);
	cr_assert_eq(ap_optout_commit(t, err), AP_ERR);
	cr_assert(strstr(err, "full"), "%s", err);
	cr_assert_eq(get(t, "u4"), A);
	cr_assert_eq(stats(t).entries, 10);

	/* a user staged twice counts once */
	cr_assert_eq(ap_optout_remove(t, "u1", 2, 15, err), 1);
	cr_assert_eq(ap_optout_stage(t, "n2", 2, L, 16, err), AP_OK);
	cr_assert_eq(ap_optout_stage(t, "n2", 2, P, 17, err), AP_OK);
	cr_assert_eq(ap_optout_commit(t, err), AP_OK, "%s", err);
	cr_assert_eq(get(t, "n2"), P, "the later record wins");
	cr_assert_eq(stats(t).entries, 10);
	ap_optout_close(t);
}

Test(optout, reader_sees_writer_and_cannot_write)
{
	struct ap_optout *w = wopen(100), *r;

	set(w, "alice", A, 1);
	r = ap_optout_open_reader(shm, err);
	cr_assert(r, "%s", err);
	cr_assert_eq(get(r, "alice"), A);
	set(w, "bob", P, 2);
	cr_assert_eq(get(r, "bob"), P, "no refresh needed for changes");
	cr_assert_eq(ap_optout_set(r, "carol", 5, A, 3, err), AP_ERR);
	cr_assert(strstr(err, "read-only"), "%s", err);
	cr_assert_eq(ap_optout_refresh(r, err), 0);

	/* a compaction makes a new segment: the reader keeps the old one until refresh */
	cr_assert_eq(ap_optout_compact(w, err), AP_OK, "%s", err);
	set(w, "dave", L, 4);
	cr_assert_eq(get(r, "dave"), 0);
	cr_assert_eq(get(r, "alice"), A);
	cr_assert_eq(ap_optout_refresh(r, err), 1, "%s", err);
	cr_assert_eq(get(r, "dave"), L);
	cr_assert_eq(get(r, "alice"), A);
	ap_optout_close(r);
	ap_optout_close(w);
}

Test(optout, one_writer_at_a_time)
{
	struct ap_optout *w = wopen(100);
	struct ap_optout_opts o = {shm, dir, 0, true};

	cr_assert_null(ap_optout_open(&o, err));
	cr_assert(strstr(err, "another writer"), "%s", err);
	ap_optout_close(w);
	w = ap_optout_open(&o, err);
	cr_assert(w, "%s", err);
	ap_optout_close(w);
}

Test(optout, header_mismatch_refused)
{
	struct ap_optout *w = wopen(100), *r;
	uint32_t v = 99;
	uint64_t m = 0x1234;

	set(w, "alice", A, 1);
	ap_optout_close(w);

	poke(shm_path(), 8, &v, sizeof(v)); /* layout version */
	cr_assert_null(ap_optout_open_reader(shm, err));
	cr_assert(strstr(err, "layout version 99"), "%s", err);

	w = wopen(0); /* the writer replaces it from the journal */
	cr_assert(strstr(ap_optout_notice(w), "layout version 99"), "%s", ap_optout_notice(w));
	cr_assert_eq(get(w, "alice"), A);
	ap_optout_close(w);
	r = ap_optout_open_reader(shm, err);
	cr_assert(r, "%s", err);
	cr_assert_eq(get(r, "alice"), A);
	ap_optout_close(r);

	poke(shm_path(), 0, &m, sizeof(m)); /* magic */
	cr_assert_null(ap_optout_open_reader(shm, err));
	cr_assert(strstr(err, "magic"), "%s", err);
	cr_assert(truncate(shm_path(), 100) == 0);
	cr_assert_null(ap_optout_open_reader(shm, err));
	cr_assert(strstr(err, "too small"), "%s", err);
	cr_assert_null(ap_optout_open_reader("/ap-optout-test-none", err));
	cr_assert_null(ap_optout_open_reader("no-slash", err));
}

Test(optout, capacity_change_rebuilds)
{
	struct ap_optout *w = wopen(100);
	char u[16];

	for (int i = 0; i < 50; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		set(w, u, A, i);
	}
	ap_optout_close(w);
	w = wopen(5000);
	cr_assert(strstr(ap_optout_notice(w), "capacity changes"), "%s", ap_optout_notice(w));
	cr_assert_eq(stats(w).capacity, 5000);
	cr_assert_eq(stats(w).slots, 8192);
	cr_assert_eq(stats(w).entries, 50);
	ap_optout_close(w);

	ap_optout_unlink(shm, err); /* the files remember the capacity */
	w = wopen(0);
	cr_assert_eq(stats(w).capacity, 5000);
	cr_assert_eq(stats(w).entries, 50);
	ap_optout_close(w);

	struct ap_optout_opts o = {shm, dir, 10, false};
	cr_assert_null(ap_optout_open(&o, err), "50 users do not fit 10");
	cr_assert(strstr(err, "capacity 10"), "%s", err);
}

/* ---- durability ---- */

Test(optout, rebuild_from_journal)
{
	struct ap_optout *w = wopen(100);

	set(w, "alice", A, 1);
	set(w, "bob", P | L, 2);
	set(w, "carol", A, 3);
	cr_assert_eq(ap_optout_remove(w, "carol", 5, 4, err), 1);
	set(w, "alice", L, 5);
	ap_optout_close(w);
	cr_assert_eq(fsize(path("optout.journal")), JHDR + 5 * JREC);

	cr_assert_eq(ap_optout_unlink(shm, err), AP_OK);
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "rebuilt"), "%s", ap_optout_notice(w));
	cr_assert_eq(get(w, "alice"), L);
	cr_assert_eq(get(w, "bob"), P | L);
	cr_assert_eq(get(w, "carol"), 0);
	cr_assert_eq(stats(w).entries, 2);
	cr_assert_eq(stats(w).gen, 5);
	ap_optout_close(w);

	w = wopen(0); /* in step: nothing to do */
	cr_assert_str_empty(ap_optout_notice(w));
	ap_optout_close(w);
}

Test(optout, snapshot_then_journal)
{
	struct ap_optout *w = wopen(100);
	int64_t tm;

	set(w, "alice", A, 1);
	set(w, "bob", P, 2);
	set(w, "carol", L, 3);
	cr_assert_eq(ap_optout_snapshot(w, err), AP_OK, "%s", err);
	cr_assert_eq(stats(w).snapshot_seq, 3);
	cr_assert_eq(stats(w).journal_records, 0);
	cr_assert_eq(fsize(path("optout.journal")), JHDR);
	set(w, "dave", A, 4);
	cr_assert_eq(ap_optout_remove(w, "bob", 3, 5, err), 1);
	set(w, "alice", A | P, 6);
	cr_assert_eq(stats(w).journal_records, 3);
	ap_optout_close(w);

	ap_optout_unlink(shm, err);
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "snapshot + journal"), "%s", ap_optout_notice(w));
	cr_assert_eq(ap_optout_lookup_key(w, ap_optout_key(w, "alice", 5), &tm), A | P);
	cr_assert_eq(tm, 6);
	cr_assert_eq(get(w, "bob"), 0);
	cr_assert_eq(get(w, "carol"), L);
	cr_assert_eq(get(w, "dave"), A);
	cr_assert_eq(stats(w).entries, 3);
	cr_assert_eq(stats(w).gen, 6);
	ap_optout_close(w);

	/* a damaged snapshot is refused, not half-loaded */
	unsigned char b;
	/* flip the byte: writing a constant left it as it was one time in 256 */
	peek(path("optout.snap"), 64 + 3, &b, 1);
	b ^= 0xff;
	poke(path("optout.snap"), 64 + 3, &b, 1);
	ap_optout_unlink(shm, err);
	struct ap_optout_opts o = {shm, dir, 0, false};
	cr_assert_null(ap_optout_open(&o, err));
	cr_assert(strstr(err, "optout.snap"), "%s", err);
}

/* A snapshot written but the journal not yet replaced (a writer died between the two
 * renames): the old journal ends where the snapshot is, and both still agree. */
Test(optout, crash_between_snapshot_and_new_journal)
{
	struct ap_optout *w = wopen(100);
	char *old;
	off_t n;

	set(w, "alice", A, 1);
	set(w, "bob", P, 2);
	n = fsize(path("optout.journal"));
	old = malloc((size_t)n);
	peek(path("optout.journal"), 0, old, (size_t)n);
	cr_assert_eq(ap_optout_snapshot(w, err), AP_OK, "%s", err);
	ap_optout_close(w);
	poke(path("optout.journal"), 0, old, (size_t)n); /* the old journal back */
	free(old);
	ap_optout_unlink(shm, err);
	w = wopen(0);
	cr_assert_eq(get(w, "alice"), A);
	cr_assert_eq(get(w, "bob"), P);
	set(w, "carol", L, 3);
	ap_optout_close(w);
	ap_optout_unlink(shm, err);
	w = wopen(0);
	cr_assert_eq(get(w, "carol"), L);
	cr_assert_eq(stats(w).entries, 3);
	ap_optout_close(w);
}

Test(optout, torn_journal_tail_dropped)
{
	struct ap_optout *w = wopen(100);
	char junk[17] = "half a record...";

	set(w, "u1", A, 1);
	set(w, "u2", A, 2);
	set(w, "u3", A, 3);
	ap_optout_close(w);

	/* a partial record after the last one: truncated, nothing lost */
	poke(path("optout.journal"), JHDR + 3 * JREC, junk, sizeof(junk));
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "torn"), "%s", ap_optout_notice(w));
	cr_assert_eq(fsize(path("optout.journal")), JHDR + 3 * JREC);
	cr_assert_eq(get(w, "u3"), A);
	ap_optout_close(w);

	/* the last record damaged (its append never finished): dropped */
	damage_record(2);
	ap_optout_unlink(shm, err);
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "torn journal tail (1 records"), "%s",
	          ap_optout_notice(w));
	cr_assert_eq(fsize(path("optout.journal")), JHDR + 2 * JREC);
	cr_assert_eq(get(w, "u1"), A);
	cr_assert_eq(get(w, "u2"), A);
	cr_assert_eq(get(w, "u3"), 0);
	set(w, "u4", P, 4); /* appends where the torn record was */
	ap_optout_close(w);
	ap_optout_unlink(shm, err);
	w = wopen(0);
	cr_assert_eq(get(w, "u4"), P);
	cr_assert_eq(stats(w).gen, 3);
	ap_optout_close(w);
}

Test(optout, torn_last_frame_dropped_whole)
{
	struct ap_optout *w = wopen(1000);
	char u[16];

	set(w, "first", A, 1);
	for (int i = 0; i < 10; i++) {
		snprintf(u, sizeof(u), "b%d", i);
		cr_assert_eq(ap_optout_stage(w, u, strlen(u), P, 2, err), AP_OK);
	}
	cr_assert_eq(ap_optout_commit(w, err), AP_OK, "%s", err);
	ap_optout_close(w);

	/* a page in the middle of the last frame never reached the disk */
	damage_record(4);
	ap_optout_unlink(shm, err);
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "torn journal tail (10 records"), "%s",
	          ap_optout_notice(w));
	cr_assert_eq(get(w, "first"), A);
	cr_assert_eq(get(w, "b0"), 0, "the torn frame is dropped whole");
	cr_assert_eq(get(w, "b9"), 0);
	cr_assert_eq(stats(w).entries, 1);
	ap_optout_close(w);
}

Test(optout, corruption_in_the_middle_refused)
{
	struct ap_optout *w = wopen(100);
	struct ap_optout_opts o = {shm, dir, 0, false};
	char u[16];
	off_t n;

	for (int i = 0; i < 20; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		set(w, u, A, i);
	}
	ap_optout_close(w);
	n = fsize(path("optout.journal"));
	damage_record(7);
	ap_optout_unlink(shm, err);
	cr_assert_null(ap_optout_open(&o, err));
	cr_assert(strstr(err, "corruption"), "%s", err);
	cr_assert(strstr(err, "record 7"), "%s", err);
	cr_assert_eq(fsize(path("optout.journal")), n, "nothing truncated");

	/* the second-to-last single-record frame: the last one began after it, so also
	 * corruption (not a torn tail) */
	damage_record(7);
	damage_record(18);
	cr_assert_null(ap_optout_open(&o, err));
	cr_assert(strstr(err, "record 18"), "%s", err);
}

/* A writer killed after the fsync and before (or during) the apply: the segment is behind
 * the journal, or marked as being changed. The next writer replays and recounts. */
Test(optout, writer_died_between_fsync_and_apply)
{
	struct ap_optout *w = wopen(100);
	size_t bytes;
	char *seg;
	uint64_t v;

	set(w, "alice", A, 1);
	bytes = (size_t)fsize(shm_path());
	seg = malloc(bytes);
	peek(shm_path(), 0, seg, bytes); /* the segment at gen 1 */
	set(w, "bob", P, 2);
	set(w, "alice", L, 3);
	ap_optout_close(w);
	poke(shm_path(), 0, seg, bytes); /* as if records 2 and 3 were never applied */
	free(seg);

	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "replayed 2 journal records"), "%s",
	          ap_optout_notice(w));
	cr_assert_eq(get(w, "alice"), L);
	cr_assert_eq(get(w, "bob"), P);
	cr_assert_eq(stats(w).gen, 3);
	ap_optout_close(w);

	/* died in the middle of record 3: applying 3, gen 2, a count off by one */
	v = 2;
	poke(shm_path(), SEG_GEN, &v, 8);
	v = 3;
	poke(shm_path(), SEG_APPLYING, &v, 8);
	v = 7;
	poke(shm_path(), SEG_LIVE, &v, 8);
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "recounted"), "%s", ap_optout_notice(w));
	cr_assert_eq(stats(w).entries, 2);
	cr_assert_eq(stats(w).gen, 3);
	peek(shm_path(), SEG_APPLYING, &v, 8);
	cr_assert_eq(v, 3);
	ap_optout_close(w);
}

Test(optout, segment_ahead_of_journal_rebuilt)
{
	struct ap_optout *w = wopen(100);

	set(w, "alice", A, 1);
	set(w, "bob", P, 2);
	ap_optout_close(w);
	cr_assert_eq(truncate(path("optout.journal"), JHDR + JREC), 0); /* bob's record gone */
	w = wopen(0);
	cr_assert(strstr(ap_optout_notice(w), "outside the journal"), "%s", ap_optout_notice(w));
	cr_assert_eq(get(w, "alice"), A);
	cr_assert_eq(get(w, "bob"), 0, "the files are the truth");
	ap_optout_close(w);
}

Test(optout, journal_missing_with_snapshot_refused)
{
	struct ap_optout *w = wopen(100);
	struct ap_optout_opts o = {shm, dir, 0, false};

	set(w, "alice", A, 1);
	cr_assert_eq(ap_optout_snapshot(w, err), AP_OK);
	ap_optout_close(w);
	cr_assert_eq(unlink(path("optout.journal")), 0);
	cr_assert_null(ap_optout_open(&o, err));
	cr_assert(strstr(err, "missing"), "%s", err);
}

Test(optout, seed_is_per_directory_and_kept)
{
	struct ap_optout *w = wopen(100);
	struct ap_optout_key k1 = ap_optout_key(w, "alice", 5), k2;
	char other[160], cmd[200];
	struct ap_optout_opts o = {shm, other, 100, false};

	ap_optout_close(w);
	ap_optout_unlink(shm, err);
	w = wopen(0);
	k2 = ap_optout_key(w, "alice", 5);
	cr_assert(k1.hi == k2.hi && k1.lo == k2.lo, "a rebuild keeps the seed");
	ap_optout_close(w);

	/* the same shm name with another directory: another table, not replaced silently */
	snprintf(other, sizeof(other), "%s/other", dir);
	cr_assert_null(ap_optout_open(&o, err));
	cr_assert(strstr(err, "holds another table"), "%s", err);
	w = ap_optout_open_reader(shm, err);
	cr_assert(w, "%s", err);
	k2 = ap_optout_key(w, "alice", 5);
	cr_assert(k1.hi == k2.hi && k1.lo == k2.lo, "the first table is still there");
	ap_optout_close(w);
	cr_assert_eq(ap_optout_unlink(shm, err), AP_OK);
	w = ap_optout_open(&o, err);
	cr_assert(w, "%s", err);
	k2 = ap_optout_key(w, "alice", 5);
	cr_assert(k1.hi != k2.hi || k1.lo != k2.lo, "another directory, another seed");
	ap_optout_close(w);
	snprintf(cmd, sizeof(cmd), "grep -rq alice '%s'", dir);
	cr_assert_neq(system(cmd), 0, "no raw id in any file");
}

/* ---- text forms and export/import ---- */

Test(optout, text_forms)
{
	char buf[128];
	unsigned s;
	struct ap_optout_key k = {0x0123456789abcdefULL, 0xfedcba9876543210ULL}, k2;

	cr_assert_eq(ap_optout_scopes_format(A | P | AP_SCOPE_MINOR, '|', buf, sizeof(buf)),
	             strlen("analytics|push|minor"));
	cr_assert_str_eq(buf, "analytics|push|minor");
	cr_assert_eq(ap_optout_scopes_format(0, ',', buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "");
	cr_assert_eq(ap_optout_scopes_parse(AP_SPAN(" Push | location"), '|', &s), AP_OK);
	cr_assert_eq(s, P | L);
	cr_assert_eq(ap_optout_scopes_parse(AP_SPAN("all"), ',', &s), AP_OK);
	cr_assert_eq(s, AP_SCOPE_ALL);
	cr_assert_eq(ap_optout_scopes_parse(AP_SPAN("analytics,"), ',', &s), AP_ERR);
	cr_assert_eq(ap_optout_scopes_parse(AP_SPAN(""), ',', &s), AP_ERR);
	cr_assert_eq(ap_optout_scopes_parse(AP_SPAN("ads"), ',', &s), AP_ERR);

	ap_optout_key_hex(k, buf);
	cr_assert_str_eq(buf, "0123456789abcdeffedcba9876543210");
	cr_assert_eq(ap_optout_key_parse((struct ap_span){buf, 32}, &k2), AP_OK);
	cr_assert(k2.hi == k.hi && k2.lo == k.lo);
	cr_assert_eq(ap_optout_key_parse(AP_SPAN("0123456789ABCDEFFEDCBA9876543210"), &k2), AP_OK);
	cr_assert(k2.hi == k.hi && k2.lo == k.lo);
	cr_assert_eq(ap_optout_key_parse(AP_SPAN("0123"), &k2), AP_ERR);
	cr_assert_eq(ap_optout_key_parse(AP_SPAN("0123456789abcdeffedcba987654321g"), &k2), AP_ERR);
}

struct csv {
	char *p;
	size_t n, cap;
	size_t count;
};

static int export_cb(void *arg, const struct ap_optout_entry *e)
{
	struct csv *c = arg;
	char hex[33], sc[96];

	ap_optout_key_hex(e->key, hex);
	ap_optout_scopes_format(e->scopes, '|', sc, sizeof(sc));
	if (c->cap - c->n < 200) {
		c->cap = c->cap * 2 + 4096;
		c->p = realloc(c->p, c->cap);
	}
	c->n += (size_t)sprintf(c->p + c->n, "%s,%s,%lld\n", hex, sc, (long long)e->time);
	c->count++;
	return 0;
}

/* Exports as anonctl does (key hex, scopes, time, and the seed), imports the text by key
 * into a fresh table that adopts the seed, and checks both hold the same entries and that
 * raw ids find them; a table that has records cannot adopt another seed. */
Test(optout, export_import_round_trip)
{
	struct ap_optout *w = wopen(1000), *w2;
	struct csv a = {0}, b = {0};
	char other[160], u[16], name2[64];
	struct ap_optout_opts o;

	for (int i = 0; i < 500; i++) {
		snprintf(u, sizeof(u), "user%d", i);
		set(w, u, (unsigned)(i % 63) + 1, 1000 + i);
	}
	cr_assert_eq(ap_optout_iterate(w, export_cb, &a), 0);
	cr_assert_eq(a.count, 500);

	snprintf(other, sizeof(other), "%s/copy", dir);
	snprintf(name2, sizeof(name2), "/ap-optout-test-copy-%d", (int)getpid());
	o = (struct ap_optout_opts){name2, other, 1000, false};
	w2 = ap_optout_open(&o, err);
	cr_assert(w2, "%s", err);
	cr_assert_neq(ap_optout_seed(w2), ap_optout_seed(w), "each directory draws its seed");
	cr_assert_eq(ap_optout_adopt_seed(w2, ap_optout_seed(w), err), AP_OK, "%s", err);
	cr_assert_eq(ap_optout_seed(w2), ap_optout_seed(w));
	for (char *line = a.p; line < a.p + a.n;) {
		char *nl = strchr(line, '\n'), *c1 = strchr(line, ','), *c2 = strchr(c1 + 1, ',');
		struct ap_optout_key k;
		unsigned s;
		cr_assert_eq(ap_optout_key_parse((struct ap_span){line, (size_t)(c1 - line)}, &k),
		             AP_OK);
		cr_assert_eq(ap_optout_scopes_parse((struct ap_span){c1 + 1, (size_t)(c2 - c1 - 1)},
		                                    '|', &s),
		             AP_OK);
		cr_assert_eq(ap_optout_stage_key(w2, k, s, atoll(c2 + 1), err), AP_OK, "%s", err);
		line = nl + 1;
	}
	cr_assert_eq(ap_optout_commit(w2, err), AP_OK, "%s", err);
	cr_assert_eq(stats(w2).entries, 500);
	cr_assert_eq(stats(w2).journal_records, 500, "one frame of 500");
	cr_assert_eq(ap_optout_iterate(w2, export_cb, &b), 0);
	/* slot order may differ; sort-free check: every line of b is in a */
	for (char *line = b.p; line < b.p + b.n;) {
		char *nl = strchr(line, '\n');
		*nl = 0;
		cr_assert(strstr(a.p, line), "entry missing after the round trip");
		line = nl + 1;
	}
	/* under the same seed the raw ids find their entries */
	cr_assert_eq(get(w2, "user7"), 8);
	cr_assert_eq(get(w2, "user62"), 63);
	cr_assert_eq(ap_optout_adopt_seed(w2, ap_optout_seed(w2) + 1, err), AP_ERR);
	cr_assert(strstr(err, "already holds records"), "%s", err);
	ap_optout_close(w2);

	/* the seed survives a rebuild of the copy */
	ap_optout_unlink(name2, err);
	w2 = ap_optout_open(&o, err);
	cr_assert(w2, "%s", err);
	cr_assert_eq(ap_optout_seed(w2), ap_optout_seed(w));
	cr_assert_eq(get(w2, "user7"), 8);
	ap_optout_close(w2);
	ap_optout_unlink(name2, err);
	ap_optout_close(w);
	free(a.p);
	free(b.p);
}

/* ---- scale ---- */

Test(optout, ten_million_users)
{
	struct ap_optout_opts o = {shm, NULL, 10000000, false}; /* ephemeral: no journal */
	struct ap_optout *t = ap_optout_open(&o, err);
	struct ap_optout_stats s;
	char u[24];
	struct timespec t0, t1;
	unsigned hits = 0;

	cr_assert(t, "%s", err);
	for (unsigned i = 0; i < 10000000; i++) {
		int n = snprintf(u, sizeof(u), "user-%u", i);
		cr_assert_eq(ap_optout_stage(t, u, (size_t)n, (i % 63) + 1, i, err), AP_OK, "%s",
		             err);
	}
	cr_assert_eq(ap_optout_commit(t, err), AP_OK, "%s", err);
	ap_optout_stats(t, &s);
	cr_assert_eq(s.entries, 10000000);
	cr_assert_eq(s.slots, 16777216);
	cr_assert_eq(s.bytes, 4096 + 16777216ul * 32);
	cr_assert_eq(ap_optout_set(t, "one-more", 8, A, 1, err), AP_ERR, "at capacity");

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < 1000000; i++) {
		unsigned j = (i * 2654435761u) % 10000000;
		int n = snprintf(u, sizeof(u), "user-%u", j);
		hits += ap_optout_lookup(t, u, (size_t)n) == (j % 63) + 1;
		n = snprintf(u, sizeof(u), "absent-%u", j);
		hits += ap_optout_lookup(t, u, (size_t)n) != 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_eq(hits, 1000000);
	cr_log_info("10M table: %.0f ns per lookup (present and absent, with snprintf)",
	            ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
	                    2e6);
	ap_optout_close(t);
}
