/* The opt-out table under a live writer, in separate processes as in production: readers
 * check that they only ever see whole entries while a writer changes, removes, re-inserts
 * and compacts; writers are killed with SIGKILL at random moments and the next writer must
 * recover a table that an independent reading of the journal and snapshot agrees with;
 * and a lost segment is rebuilt to the same contents.
 *
 * Every key k has two known values, each self-consistent: value b (0 or 1) has time
 * T0 + 2k + b and scopes scope_of(k, b). A reader that got words from two keys, or from two
 * versions of one key, sees a time and scopes that do not belong together. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "harness.h"
#include "optout.h"

#define KEYS     2000
#define CAPACITY 2500 /* 4096 slots: long probe chains, many tombstones reused */
#define T0       1000000

static char shm[64];

/* Our children, so that a failed test still stops them (by pid) before the segment's name
 * is removed: a writer left running would publish it again at its next compaction. */
static pid_t children[16];
static int nchildren;

static void forget_child(pid_t pid)
{
	for (int i = 0; i < nchildren; i++)
		if (children[i] == pid)
			children[i] = children[--nchildren];
}

static unsigned scope_of(int k, int b)
{
	return 1u + (unsigned)((k * 7 + b * 13) % 63);
}

static int user_id(char *out, int k)
{
	return sprintf(out, "user-%d", k);
}

/* What a reader may see for key k: nothing, or one of its two values, whole. Returns NULL
 * when fine, else what is wrong. *b gets the value seen (-1: absent). */
static const char *judge(int k, unsigned scopes, int64_t time, int *b)
{
	*b = -1;
	if (scopes == 0)
		return time == 0 ? NULL : "absent, but a time";
	if (time != T0 + 2 * k && time != T0 + 2 * k + 1)
		return "a time that belongs to another key";
	*b = (int)(time - T0 - 2 * k);
	if (scopes != scope_of(k, *b))
		return "scopes and time from different versions";
	return NULL;
}

static void setup(void)
{
	ht_setup();
	snprintf(shm, sizeof(shm), "/ap-optout-stress-%d", (int)getpid());
}

static void teardown(void)
{
	char err[AP_OPTOUT_ERR_MAX];

	while (nchildren > 0) {
		pid_t pid = children[--nchildren];
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	ap_optout_unlink(shm, err);
	ht_teardown();
}

TestSuite(optout_stress, .init = setup, .fini = teardown, .timeout = 240);

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A child that dies with the test. Returns 0 in the child. */
static pid_t fork_child(void)
{
	pid_t pid = fork();

	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		nchildren = 0;
	} else if (nchildren < (int)(sizeof(children) / sizeof(children[0]))) {
		children[nchildren++] = pid;
	}
	return pid;
}

/* ---- the writer ---- */

/* Changes random users for ever (until killed): sets value 0 or 1, removes, stages batches
 * of random size (one frame, one fsync each), and now and then compacts or snapshots. */
static void writer_main(const char *dir, uint64_t seed, int ready_fd)
{
	struct ap_optout_opts o = {shm, dir, CAPACITY, false};
	char err[AP_OPTOUT_ERR_MAX], id[32];
	struct ap_optout *t = ap_optout_open(&o, err);

	if (!t) {
		fprintf(stderr, "writer: %s\n", err);
		_exit(3);
	}
	if (ready_fd >= 0) {
		if (write(ready_fd, "r", 1) != 1)
			_exit(3);
		close(ready_fd);
	}
	for (uint64_t op = 0;; op++) {
		uint64_t r = rnd(&seed);
		int k = (int)(r % KEYS), n = user_id(id, k), rc = AP_OK;
		int b = (int)((r >> 20) & 1);

		if ((r >> 24) % 8 == 0) {
			rc = ap_optout_remove(t, id, (size_t)n, 1, err) < 0 ? AP_ERR : AP_OK;
		} else if ((r >> 24) % 8 == 1) {
			/* a batch: one frame, one fsync */
			int m = 1 + (int)((r >> 32) % 20000);
			for (int i = 0; i < m && rc == AP_OK; i++) {
				uint64_t q = rnd(&seed);
				int kk = (int)(q % KEYS), nn = user_id(id, kk);
				int bb = (int)((q >> 20) & 1);
				unsigned sc = (q >> 24) % 5 == 0 ? 0 : scope_of(kk, bb);
				rc = ap_optout_stage(t, id, (size_t)nn, sc, T0 + 2 * kk + bb, err);
			}
			if (rc == AP_OK)
				rc = ap_optout_commit(t, err);
		} else {
			rc = ap_optout_set(t, id, (size_t)n, scope_of(k, b), T0 + 2 * k + b, err);
		}
		if (rc == AP_OK && op % 97 == 96)
			rc = ap_optout_compact(t, err);
		if (rc == AP_OK && op % 211 == 210)
			rc = ap_optout_snapshot(t, err);
		if (rc != AP_OK) {
			fprintf(stderr, "writer: %s\n", err);
			_exit(3);
		}
	}
}

static pid_t start_writer(const char *dir, uint64_t seed)
{
	int p[2];
	char c;
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	if ((pid = fork_child()) == 0) {
		close(p[0]);
		writer_main(dir, seed, p[1]);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &c, 1), 1, "the writer did not start");
	close(p[0]);
	return pid;
}

/* ---- the readers ---- */

/* The readers' test works on a hot set: HOT users whose keys all begin their probe in the
 * first 8 slots, so they share one long cluster in which slots keep passing from one key to
 * another through tombstones — the case where a torn read would mix two keys. COLD users
 * start there too but are never set: they must never be found. Chosen before the fork. */
#define HOT  48
#define COLD 16
static char hot_id[HOT][32], cold_id[COLD][32];

static void pick_hot(const struct ap_optout *t)
{
	struct ap_optout_stats st;
	char id[32];
	int nh = 0, nc = 0;

	ap_optout_stats(t, &st);
	for (int c = 0; nh < HOT || nc < COLD; c++) {
		bool hot = nh < HOT && (c & 1);
		int n = sprintf(id, "%s-%d", hot ? "hot" : "cold", c);
		if ((ap_optout_key(t, id, (size_t)n).lo & (st.slots - 1)) >= 8)
			continue;
		if (hot)
			strcpy(hot_id[nh++], id);
		else if (nc < COLD)
			strcpy(cold_id[nc++], id);
	}
}

/* Changes the hot users for ever (until killed) through the handle the parent opened:
 * value 0 or 1, or a removal, at random; a compaction now and then. */
static void hot_writer_main(struct ap_optout *t, uint64_t seed)
{
	char err[AP_OPTOUT_ERR_MAX];

	for (uint64_t op = 0;; op++) {
		uint64_t r = rnd(&seed);
		int k = (int)(r % HOT), b = (int)((r >> 20) & 1), rc;
		const char *id = hot_id[k];

		if ((r >> 24) % 4 == 0)
			rc = ap_optout_remove(t, id, strlen(id), 1, err) < 0 ? AP_ERR : AP_OK;
		else
			rc = ap_optout_set(t, id, strlen(id), scope_of(k, b), T0 + 2 * k + b, err);
		if (rc == AP_OK && op % 50021 == 50020)
			rc = ap_optout_compact(t, err);
		if (rc != AP_OK) {
			fprintf(stderr, "writer: %s\n", err);
			_exit(3);
		}
	}
}

struct reader_report {
	uint64_t lookups, seen[3], refreshes, bad;
	char why[300];
};

/* Looks users up until <until>, checking every answer: the hot set when <hot>, else
 * user-0 … user-(KEYS-1). Refreshes often, to follow compactions and rebuilds. Writes its
 * report to <fd>. */
static void reader_main(bool hot, uint64_t seed, double until, int fd)
{
	struct reader_report rep = {0};
	char err[AP_OPTOUT_ERR_MAX], buf[32];
	struct ap_optout *t = ap_optout_open_reader(shm, err);

	if (!t) {
		snprintf(rep.why, sizeof(rep.why), "open: %s", err);
		rep.bad = 1;
	}
	while (t && now() < until) {
		for (int i = 0; i < 4096; i++) {
			uint64_t r = rnd(&seed);
			int k = (int)(r % (hot ? HOT : KEYS)), b;
			const char *id = hot ? hot_id[k] : buf;
			int64_t time;
			unsigned sc;
			const char *why;

			if (!hot)
				user_id(buf, k);
			sc = ap_optout_lookup_key(t, ap_optout_key(t, id, strlen(id)), &time);
			why = judge(k, sc, time, &b);
			rep.lookups++;
			rep.seen[b + 1]++;
			if (why && !rep.bad++)
				snprintf(rep.why, sizeof(rep.why),
				         "key %d: %s (scopes %u, time %lld)", k, why, sc,
				         (long long)time);
			id = hot ? cold_id[r % COLD] : "absent";
			if (ap_optout_lookup(t, id, strlen(id)) && !rep.bad++)
				snprintf(rep.why, sizeof(rep.why), "a user never set was found");
		}
		int rc = ap_optout_refresh(t, err);
		if (rc == 1)
			rep.refreshes++;
		else if (rc < 0 && !rep.bad++)
			snprintf(rep.why, sizeof(rep.why), "refresh: %s", err);
	}
	ap_optout_close(t);
	if (write(fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(3);
	_exit(rep.bad ? 1 : 0);
}

static pid_t start_reader(bool hot, uint64_t seed, double until, int *fd)
{
	int p[2];
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	if ((pid = fork_child()) == 0) {
		close(p[0]);
		reader_main(hot, seed, until, p[1]);
	}
	close(p[1]);
	*fd = p[0];
	return pid;
}

static void reap_reader(pid_t pid, int fd, struct reader_report *rep)
{
	int status;

	memset(rep, 0, sizeof(*rep));
	cr_assert_eq(read(fd, rep, sizeof(*rep)), (ssize_t)sizeof(*rep), "no report from reader");
	close(fd);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	forget_child(pid);
	cr_assert_eq(rep->bad, 0, "reader saw %llu torn answers; first: %s",
	             (unsigned long long)rep->bad, rep->why);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader: %s", rep->why);
}

static void kill_wait(pid_t pid)
{
	int status;

	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	forget_child(pid);
	cr_assert(WIFSIGNALED(status), "the writer had exited by itself (status %d)", status);
}

#define READERS 3

Test(optout_stress, readers_see_whole_entries)
{
	struct ap_optout_opts o = {shm, NULL, 400, false}; /* ephemeral: the fastest writer */
	char err[AP_OPTOUT_ERR_MAX];
	struct ap_optout *t = ap_optout_open(&o, err);
	pid_t w, r[READERS];
	int fd[READERS];
	struct reader_report rep;
	uint64_t total = 0, refreshes = 0, seen[3] = {0};
	double until;

	cr_assert(t, "%s", err);
	pick_hot(t);
	if ((w = fork_child()) == 0)
		hot_writer_main(t, 0x1234567);
	ap_optout_close(t); /* the parent's mapping only; the writer keeps its own */
	until = now() + 4.0;
	for (int i = 0; i < READERS; i++)
		r[i] = start_reader(true, 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1), until, &fd[i]);
	for (int i = 0; i < READERS; i++) {
		reap_reader(r[i], fd[i], &rep);
		total += rep.lookups;
		refreshes += rep.refreshes;
		for (int j = 0; j < 3; j++)
			seen[j] += rep.seen[j];
	}
	kill_wait(w);
	cr_log_info("%d readers: %llu lookups, %llu remaps after compactions; seen absent %llu, "
	            "value 0 %llu, value 1 %llu",
	            READERS, (unsigned long long)total, (unsigned long long)refreshes,
	            (unsigned long long)seen[0], (unsigned long long)seen[1],
	            (unsigned long long)seen[2]);
	cr_assert_gt(total, 100000);
	cr_assert(seen[0] && seen[1] && seen[2], "the writer's changes were not all seen");
	cr_assert_gt(refreshes, 0, "no compaction was followed");
}

/* ---- an independent reading of the files (docs/optout.md, "Files") ---- */

struct expect {
	unsigned scopes[KEYS];
	int64_t time[KEYS];
};

static const struct ap_optout_key *KEYS_OF; /* sorted, with their k */
static int KEY_K[KEYS];

static int key_cmp(const void *a, const void *b)
{
	const struct ap_optout_key *x = a, *y = b;

	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static struct ap_optout_key sorted_keys[KEYS];

/* Sorts the keys of user-0 … user-(KEYS-1) under the table's seed, to map a key back. */
static void index_keys(const struct ap_optout *t)
{
	struct {
		struct ap_optout_key key;
		int k;
	} tmp[KEYS];
	char id[32];

	for (int k = 0; k < KEYS; k++) {
		tmp[k].key = ap_optout_key(t, id, (size_t)user_id(id, k));
		tmp[k].k = k;
	}
	qsort(tmp, KEYS, sizeof(tmp[0]), key_cmp); /* key is the first member */
	for (int i = 0; i < KEYS; i++) {
		sorted_keys[i] = tmp[i].key;
		KEY_K[i] = tmp[i].k;
	}
	KEYS_OF = sorted_keys;
}

static int key_index(uint64_t hi, uint64_t lo)
{
	struct ap_optout_key k = {hi, lo};
	const struct ap_optout_key *f = bsearch(&k, KEYS_OF, KEYS, sizeof(k), key_cmp);

	return f ? KEY_K[f - KEYS_OF] : -1;
}

static uint64_t u64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static uint32_t u32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* Replays snapshot + journal as the documentation describes them into *e. Every record
 * must be intact: the writer that opened before us has truncated any torn tail. */
static void oracle(const char *dir, struct expect *e)
{
	size_t n;
	unsigned char *s = (unsigned char *)ht_read(ht_fmt("%s/optout.snap", dir), &n);
	unsigned char *j;
	uint64_t snap_seq = 0, base;

	memset(e, 0, sizeof(*e));
	if (s) {
		uint64_t count = u64(s + 32);
		snap_seq = u64(s + 24);
		cr_assert_eq(n, 64 + count * 24, "snapshot size");
		cr_assert_eq(u32(s + 56), (uint32_t)crc32(0, s + 64, (uInt)(count * 24)),
		             "snapshot checksum");
		for (uint64_t i = 0; i < count; i++) {
			const unsigned char *p = s + 64 + i * 24;
			int k = key_index(u64(p), u64(p + 8));
			cr_assert_geq(k, 0, "a snapshot entry that is no user of ours");
			e->scopes[k] = (unsigned)(u64(p + 16) & 0xff);
			e->time[k] = (int64_t)(u64(p + 16) >> 8);
		}
	}
	j = (unsigned char *)ht_read(ht_fmt("%s/optout.journal", dir), &n);
	cr_assert(j, "no journal");
	cr_assert_geq(n, 64);
	cr_assert_eq((n - 64) % 40, 0, "the journal has a partial record left");
	base = u64(j + 24);
	for (size_t off = 64; off < n; off += 40) {
		const unsigned char *p = j + off;
		uint64_t seq = u64(p + 8);
		int k;
		cr_assert_eq(u32(p), (uint32_t)crc32(0, p + 4, 36), "record %zu checksum",
		             (off - 64) / 40);
		cr_assert_eq(seq, base + 1 + (off - 64) / 40, "records are dense");
		if (seq <= snap_seq)
			continue;
		k = key_index(u64(p + 16), u64(p + 24));
		cr_assert_geq(k, 0, "a journal record that is no user of ours");
		if (p[4] == 1) {
			e->scopes[k] = p[5];
			e->time[k] = (int64_t)u64(p + 32);
		} else {
			cr_assert_eq(p[4], 2, "record type");
			e->scopes[k] = 0;
			e->time[k] = 0;
		}
	}
}

/* The table holds exactly what the files say, every entry whole. */
static void verify(const struct ap_optout *t, const char *dir, const char *when)
{
	struct expect *e = malloc(sizeof(*e));
	struct ap_optout_stats st;
	char id[32];
	size_t live = 0;

	cr_assert(e);
	oracle(dir, e);
	for (int k = 0; k < KEYS; k++) {
		int64_t time;
		int b;
		unsigned sc = ap_optout_lookup_key(t, ap_optout_key(t, id, (size_t)user_id(id, k)),
		                                   &time);
		const char *why = judge(k, sc, time, &b);
		cr_assert_null(why, "%s: key %d: %s", when, k, why);
		cr_assert_eq(sc, e->scopes[k], "%s: key %d: table %u, journal %u", when, k, sc,
		             e->scopes[k]);
		cr_assert_eq(time, e->time[k], "%s: key %d: time", when, k);
		live += sc != 0;
	}
	ap_optout_stats(t, &st);
	cr_assert_eq(st.entries, live, "%s: the count is off", when);
	free(e);
}

static struct ap_optout *open_writer(const char *dir)
{
	struct ap_optout_opts o = {shm, dir, CAPACITY, false};
	char err[AP_OPTOUT_ERR_MAX];
	struct ap_optout *t = ap_optout_open(&o, err);

	cr_assert(t, "recovery failed: %s", err);
	return t;
}

static int dump_cb(void *arg, const struct ap_optout_entry *e)
{
	char *s = arg;

	sprintf(s + strlen(s), "%016llx%016llx %u %lld\n", (unsigned long long)e->key.hi,
	        (unsigned long long)e->key.lo, e->scopes, (long long)e->time);
	return 0;
}

static int line_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries as sorted text, to compare two tables whatever their slot order. */
static char *dump(const struct ap_optout *t)
{
	char *s = ht_alloc(KEYS * 64 + 1), *out = ht_alloc(KEYS * 64 + 1), *lines[KEYS + 1];
	size_t n = 0;

	ap_optout_iterate(t, dump_cb, s);
	for (char *p = strtok(s, "\n"); p; p = strtok(NULL, "\n"))
		lines[n++] = p;
	qsort(lines, n, sizeof(lines[0]), line_cmp);
	for (size_t i = 0; i < n; i++)
		sprintf(out + strlen(out), "%s\n", lines[i]);
	return out;
}

Test(optout_stress, kill_the_writer_anywhere)
{
	const char *dir = ht_path("optout");
	struct ap_optout *t;
	struct reader_report rep;
	uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	int iterations = 0, replayed = 0, recounted = 0, torn = 0, fd;
	double until = now() + 12.0;
	pid_t reader;
	char *before;

	t = open_writer(dir); /* creates the journal and the seed */
	index_keys(t);
	ap_optout_close(t);

	/* one reader watches the whole time, following every rebuild */
	reader = start_reader(false, seed, until - 1.0, &fd);
	cr_log_info("seed %llu", (unsigned long long)seed);
	while (now() < until - 1.5) {
		pid_t w = start_writer(dir, rnd(&seed));
		usleep((useconds_t)(rnd(&seed) % 40000));
		kill_wait(w);
		t = open_writer(dir);
		replayed += strstr(ap_optout_notice(t), "replayed") != NULL;
		recounted += strstr(ap_optout_notice(t), "recounted") != NULL;
		torn += strstr(ap_optout_notice(t), "torn") != NULL;
		verify(t, dir, ht_fmt("after kill %d", iterations));
		ap_optout_close(t);
		iterations++;
	}
	reap_reader(reader, fd, &rep);
	cr_log_info("%d writers killed and recovered (%d between fsync and apply, %d during an "
	            "apply, %d with a torn journal tail); the reader made %llu lookups",
	            iterations, replayed, recounted, torn, (unsigned long long)rep.lookups);
	cr_assert_geq(iterations, 20);

	/* restart: the segment as it is; then lost, and rebuilt to the same contents */
	t = open_writer(dir);
	before = dump(t);
	cr_assert_str_empty(ap_optout_notice(t));
	ap_optout_close(t);
	cr_assert_eq(ap_optout_unlink(shm, (char[AP_OPTOUT_ERR_MAX]){0}), AP_OK);
	t = open_writer(dir);
	cr_assert(strstr(ap_optout_notice(t), "rebuilt"), "%s", ap_optout_notice(t));
	cr_assert_str_eq(dump(t), before);
	verify(t, dir, "after the rebuild");
	ap_optout_close(t);
}

Test(optout_stress, restart_and_rebuild)
{
	const char *dir = ht_path("optout");
	struct ap_optout *t = open_writer(dir), *r;
	char err[AP_OPTOUT_ERR_MAX], id[32], *before;
	int n;

	index_keys(t);
	for (int k = 0; k < KEYS; k++) {
		n = user_id(id, k);
		cr_assert_eq(ap_optout_stage(t, id, (size_t)n, scope_of(k, k & 1),
		                             T0 + 2 * k + (k & 1), err),
		             AP_OK, "%s", err);
	}
	cr_assert_eq(ap_optout_commit(t, err), AP_OK, "%s", err);
	cr_assert_eq(ap_optout_snapshot(t, err), AP_OK, "%s", err);
	for (int k = 0; k < KEYS; k += 3) {
		n = user_id(id, k);
		cr_assert_geq(ap_optout_remove(t, id, (size_t)n, 1, err), 0, "%s", err);
	}
	before = dump(t);
	r = ap_optout_open_reader(shm, err);
	cr_assert(r, "%s", err);
	ap_optout_close(t);

	cr_assert_eq(ap_optout_unlink(shm, err), AP_OK);
	t = open_writer(dir);
	cr_assert_str_eq(dump(t), before, "rebuilt from snapshot + journal");
	verify(t, dir, "rebuilt");
	/* a reader of the lost segment still answers, and moves to the new one */
	cr_assert_str_eq(dump(r), before);
	cr_assert_eq(ap_optout_refresh(r, err), 1, "%s", err);
	cr_assert_str_eq(dump(r), before);
	ap_optout_close(r);
	ap_optout_close(t);
}

/* ---- anonctl optout, end to end ---- */

/* Runs $BIN/anonctl optout with --shm <name> --dir <dir> and <args> (NULL-terminated);
 * returns its exit status; *out and *err get what it printed. */
static int anonctl(const char *dir, const char *name, const char **args, const char **out,
                   const char **err)
{
	const char *argv[16] = {ht_bin("anonctl"), "optout", "--shm", name, "--dir", dir};
	static int runs;
	int n = 6, status;
	pid_t pid;

	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	pid = ht_start(argv, ht_fmt("anonctl%d", ++runs));
	cr_assert_gt(pid, 0);
	status = ht_wait(pid, 20000);
	cr_assert(status >= 0 && WIFEXITED(status), "anonctl did not finish: %s",
	          ht_status_str(status));
	*out = ht_out(pid);
	*err = ht_err(pid);
	return WEXITSTATUS(status);
}

#define CTL(...) anonctl(dir, shm, (const char *[]){__VA_ARGS__, NULL}, &out, &err)

Test(optout_stress, anonctl_commands)
{
	const char *dir = ht_path("optout"), *out, *err, *csv = ht_path("users.csv");
	const char *secret = "secret-user-4711";
	char shm2[80];

	cr_assert_eq(CTL("add", "alice", "--scope", "analytics,push"), 0, "%s", err);
	cr_assert(strstr(out, "opted out of analytics,push (key "), "%s", out);
	cr_assert_null(strstr(out, "alice"), "the id is never printed");
	cr_assert_eq(CTL("check", "alice"), 0, "%s", err);
	cr_assert(strstr(out, "analytics,push (since "), "%s", out);
	cr_assert_eq(CTL("check", "bob"), 1);
	cr_assert(strstr(out, "not opted out"), "%s", out);
	cr_assert_eq(CTL("add", "alice", "--scope", "location"), 0);
	cr_assert(strstr(out, "analytics,push,location"), "%s", out);
	cr_assert_eq(CTL("remove", "alice", "--scope", "push"), 0);
	cr_assert(strstr(out, "still opted out of analytics,location"), "%s", out);
	cr_assert_eq(CTL("remove", "alice"), 0);
	cr_assert(strstr(out, "removed"), "%s", out);
	cr_assert_eq(CTL("remove", "alice"), 1);
	cr_assert_eq(CTL("add", secret, "--scope", "ads"), 2);
	cr_assert_null(strstr(err, secret), "%s", err);
	cr_assert_eq(CTL("add", secret), 2, "no --scope");

	/* import: bad lines by number, never by content; nothing imported unless --skip-bad */
	cr_assert(ht_write_str(csv, ht_fmt("user,scopes\r\nu1,analytics|push\r\n\r\n"
	                                   "%s,ads\r\nu,with,commas,location\r\nnocomma\r\n",
	                                   secret)));
	cr_assert_eq(CTL("import", csv), 1);
	cr_assert(strstr(err, "line 4: unknown or empty scope"), "%s", err);
	cr_assert(strstr(err, "line 6: expected user,scope1|scope2"), "%s", err);
	cr_assert(strstr(err, "nothing imported"), "%s", err);
	cr_assert_null(strstr(err, secret), "%s", err);
	cr_assert_eq(CTL("check", "u1"), 1);
	cr_assert_eq(CTL("import", csv, "--skip-bad"), 1);
	cr_assert(strstr(out, "imported 2 users"), "%s", out);
	cr_assert_eq(CTL("check", "u1"), 0);
	cr_assert_eq(CTL("check", "u,with,commas"), 0, "split at the last comma");
	cr_assert(strstr(out, "location"), "%s", out);

	cr_assert_eq(CTL("stats"), 0);
	cr_assert(strstr(out, "entries      2 of capacity 1048576"), "%s", out);
	cr_assert(strstr(out, "tombstones   1"), "%s", out);

	/* export, then import into an empty directory, which takes the seed */
	cr_assert_eq(CTL("export"), 0, "%s", err);
	cr_assert(!strncmp(out, "# seed ", 7) && strstr(out, "\nkey,scopes,time\n"), "%s", out);
	cr_assert_null(strstr(out, "u1"), "no raw id in an export");
	cr_assert(ht_write_str(ht_path("export.csv"), out));
	snprintf(shm2, sizeof(shm2), "%s-copy", shm);
	cr_assert_eq(anonctl(ht_path("copy"), shm2,
	                     (const char *[]){"import", ht_path("export.csv"), NULL}, &out, &err),
	             0, "%s", err);
	cr_assert_eq(
	        anonctl(ht_path("copy"), shm2, (const char *[]){"check", "u1", NULL}, &out, &err),
	        0, "the copy finds users by id: %s", out);
	cr_assert_eq(anonctl(ht_path("copy"), shm2, (const char *[]){"export", NULL}, &out, &err),
	             0);
	{
		const char *orig = ht_read(ht_path("export.csv"), NULL);
		cr_assert_eq(strlen(out), strlen(orig), "%s\n---\n%s", out, orig);
		for (char *l = strtok(ht_fmt("%s", orig), "\n"); l; l = strtok(NULL, "\n"))
			cr_assert(strstr(out, l), "the copy lacks a line of the export: %s", l);
	}
	/* another directory under the same name is another table: refused, until the name is
	 * freed */
	cr_assert_eq(anonctl(ht_path("other"), shm2,
	                     (const char *[]){"add", "zed", "--scope", "push", NULL}, &out, &err),
	             2);
	cr_assert(strstr(err, "holds another table"), "%s", err);
	cr_assert_eq(anonctl(ht_path("other"), shm2, (const char *[]){"unlink", NULL}, &out, &err),
	             0, "%s", err);
	cr_assert_eq(anonctl(ht_path("other"), shm2,
	                     (const char *[]){"add", "zed", "--scope", "push", NULL}, &out, &err),
	             0, "%s", err);
	/* a table with records of its own refuses keys made under another seed */
	cr_assert_eq(anonctl(ht_path("other"), shm2,
	                     (const char *[]){"import", ht_path("export.csv"), NULL}, &out, &err),
	             2);
	cr_assert(strstr(err, "another seed"), "%s", err);
	ap_optout_unlink(shm2, (char[AP_OPTOUT_ERR_MAX]){0});

	/* a worker's view, without lock or journal */
	cr_assert_eq(CTL("check", "u1", "--read-only"), 0, "%s", err);
	cr_assert_eq(CTL("add", "u9", "--scope", "push", "--read-only"), 2);
}
