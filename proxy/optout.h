/* The per-user opt-out table: a fixed-capacity, open-addressing hash table in POSIX shared
 * memory that the workers read without locks or writes, kept durable by a journal and a
 * snapshot in a directory that one writer at a time (anonctl, the admin API) appends to
 * before it changes the table. Keys are seeded XXH3-128 hashes of user ids; a raw id is
 * never stored, journaled or exported. What an opt-out does to a request is not decided
 * here. docs/optout.md has the layout, the torn-write protocol and the crash windows. */
#ifndef AP_OPTOUT_H
#define AP_OPTOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap.h"

#define AP_OPTOUT_ERR_MAX 256

/* Defaults of anonctl's --shm, --dir and --capacity; the configuration section "optout"
 * ({"shm", "dir", "capacity"}) uses the same names and defaults. */
#define AP_OPTOUT_DEFAULT_SHM      "/anonproxy-optout"
#define AP_OPTOUT_DEFAULT_DIR      "/var/lib/anonproxy/optout"
#define AP_OPTOUT_DEFAULT_CAPACITY 1048576u
/* 150 M users need 2^28 slots of 32 bytes: 8 GiB of shared memory. */
#define AP_OPTOUT_MAX_CAPACITY     150000000u

/* Every defined scope bit (AP_SCOPE_* in conf.h: analytics … all). */
#define AP_OPTOUT_SCOPE_MASK 0x3fu
/* Records per journal frame: one write and one fsync each (the import batch). */
#define AP_OPTOUT_BATCH      65536u

/* A user's key: XXH3-128 of the id under the table's seed. Its text form is 32 lower-case
 * hex digits, hi then lo (XXH128's canonical, big-endian order). */
struct ap_optout_key {
	uint64_t hi, lo;
};

/* One entry as iterate() hands it out; valid during the callback only. */
struct ap_optout_entry {
	struct ap_optout_key key;
	unsigned scopes; /* AP_SCOPE_* bits, never 0 */
	int64_t time;    /* seconds since the epoch of the last change */
};

/* Where the table lives. shm: a POSIX shm name ("/name", no other '/'). dir: the journal,
 * snapshot and lock file (created if missing, one level); NULL makes an ephemeral table
 * with no journal and no lock — for tests and benchmarks only. capacity: the most users
 * the table accepts; 0 keeps the current segment's, or the one recorded in dir, or
 * AP_OPTOUT_DEFAULT_CAPACITY. nowait: fail instead of waiting for another writer. */
struct ap_optout_opts {
	const char *shm;
	const char *dir;
	size_t capacity;
	bool nowait;
};

struct ap_optout_stats {
	size_t entries;    /* live users */
	size_t tombstones; /* removed slots not yet reused or compacted */
	size_t capacity;   /* most users accepted */
	size_t slots;      /* power of two >= capacity / 0.7 */
	size_t bytes;      /* size of the shared-memory segment */
	double load;       /* entries / slots */
	uint64_t gen;      /* sequence number of the last journal record applied */
	/* writers only (0 for readers and ephemeral tables): */
	uint64_t snapshot_seq;    /* the snapshot holds every record up to this one */
	uint64_t journal_records; /* records in the journal file */
};

struct ap_optout;

/* ---- opening ---- */

/* Opens the table as its writer: takes the lock <dir>/lock (waits for another writer unless
 * nowait), reads the journal and snapshot (initialising an empty directory with a fresh
 * random seed), and maps the segment. The segment is rebuilt from snapshot + journal when
 * it is missing, has a different layout, seed or capacity, or its generation lies outside
 * the journal; when it is only behind (a writer died between fsync and apply, or during
 * apply) the missing records are replayed onto it. A torn journal tail is dropped and
 * truncated; a bad record with good ones after it refuses the open. Returns the handle
 * (the caller owns it: ap_optout_close), or NULL with err[AP_OPTOUT_ERR_MAX] set.
 * ap_optout_notice() says what recovery did, if anything. */
struct ap_optout *ap_optout_open(const struct ap_optout_opts *o, char *err);

/* Maps an existing segment read-only, for the workers: no lock, no journal, never writes.
 * Refuses (NULL, err set) a segment with a different magic, layout version, slot size or
 * file size. The caller owns the handle. */
struct ap_optout *ap_optout_open_reader(const char *shm, char *err);

/* For a reader: remaps when the name now names another segment (a writer rebuilt or
 * compacted it, or re-created it after it was lost) — one shm_open and fstat, so call it
 * from a timer (about once a second), not per request. Returns 0 (unchanged), 1
 * (remapped: nothing from the old mapping may be used any more), or AP_ERR with err set
 * (the old mapping stays in use, valid and consistent). A writer handle returns 0. Not to
 * be run concurrently with lookups on the same handle. */
int ap_optout_refresh(struct ap_optout *t, char *err);

/* Unmaps, releases the lock and frees. Staged records that were not committed are
 * discarded (call ap_optout_commit first). NULL is fine. */
void ap_optout_close(struct ap_optout *t);

/* Removes the segment's name. Mappings stay valid; the next writer open rebuilds it from
 * the journal. AP_OK (also when absent) or AP_ERR with err set. */
int ap_optout_unlink(const char *shm, char *err);

/* What the writer open did to recover (rebuilt, replayed, truncated a torn tail), or "". */
const char *ap_optout_notice(const struct ap_optout *t);

/* The table's seed (chosen at random when its directory was first used; kept by every
 * rebuild). Keys mean the same users only under the same seed. */
uint64_t ap_optout_seed(const struct ap_optout *t);

/* For a writer whose table has never held a record (a fresh directory): starts over under
 * <seed>, so that keys exported from a table with that seed name the same users here.
 * AP_OK (also when the seed is already <seed>), or AP_ERR with err set when the table has
 * records, or is ephemeral or read-only. */
int ap_optout_adopt_seed(struct ap_optout *t, uint64_t seed, char *err);

/* ---- reading: lock-free, never writes, safe against a writer killed at any point ---- */

/* The key of user id <user, len> under this table's seed. */
struct ap_optout_key ap_optout_key(const struct ap_optout *t, const void *user, size_t len);

/* The scope bits user <user, len> opted out of, or 0. Hashes, then probes; no allocation,
 * no system call. */
unsigned ap_optout_lookup(const struct ap_optout *t, const void *user, size_t len);

/* The scope bits of key <k>, or 0; *time (if not NULL) gets the time of the last change
 * (0 when absent). Scopes and time always come from one version of the entry. */
unsigned ap_optout_lookup_key(const struct ap_optout *t, struct ap_optout_key k, int64_t *time);

/* Looks up <n> user ids at once: hashes a group of them, prefetches their slots, then
 * probes, so that their cache misses overlap instead of queueing (a batch of events).
 * out[i] gets what ap_optout_lookup(t, ids[i].p, ids[i].n) would return. */
void ap_optout_lookup_many(const struct ap_optout *t, const struct ap_span *ids, size_t n,
                           unsigned *out);

/* Starts loading the slot where <k> begins its probe, without waiting for it: hash the
 * user id when it is found, prefetch, and call ap_optout_lookup_key later to hide most of
 * a cache miss. Harmless for any key. */
void ap_optout_prefetch(const struct ap_optout *t, struct ap_optout_key k);

/* Calls cb on every live entry in slot order until it returns non-zero; returns that
 * value, or 0. Under a writer handle the view is exact; under a reader each entry is whole
 * but the set may mix moments of a concurrent writer. */
int ap_optout_iterate(const struct ap_optout *t,
                      int (*cb)(void *arg, const struct ap_optout_entry *e), void *arg);

/* Fills *st. Counts are those of the last applied record (exact for the writer). */
void ap_optout_stats(const struct ap_optout *t, struct ap_optout_stats *st);

/* ---- writing (writer handles only; each call journals, fsyncs, then applies) ---- */

/* Sets user <user, len>'s scopes to <scopes> (AP_SCOPE_* bits; 0 removes the entry) at
 * <time> (seconds; clamped to 0 .. 2^56-1). AP_OK, or AP_ERR with err set: a reader
 * handle, bad bits, a full table (the user is new and entries == capacity), an I/O error
 * (the journal is then left as it was and the table unchanged). */
int ap_optout_set(struct ap_optout *t, const void *user, size_t len, unsigned scopes, int64_t time,
                  char *err);
/* ap_optout_set by key (imports of exported keys). */
int ap_optout_set_key(struct ap_optout *t, struct ap_optout_key k, unsigned scopes, int64_t time,
                      char *err);

/* Removes user <user, len>. Returns 1 (removed), 0 (was not in the table; nothing is
 * journaled) or AP_ERR with err set. */
int ap_optout_remove(struct ap_optout *t, const void *user, size_t len, int64_t time, char *err);
int ap_optout_remove_key(struct ap_optout *t, struct ap_optout_key k, int64_t time, char *err);

/* Batches, for imports: stage records (nothing is visible yet), then commit them as one
 * journal frame — one write, one fsync, then applied in order. Staging the
 * AP_OPTOUT_BATCH-th record commits by itself. scopes 0 stages a removal. A commit that
 * would overflow the table is refused whole (new keys are counted before anything is
 * written, a key staged twice counting once; removals in the batch are not credited).
 * AP_OK, or AP_ERR with err set; after an error the staged records are discarded. */
int ap_optout_stage(struct ap_optout *t, const void *user, size_t len, unsigned scopes,
                    int64_t time, char *err);
int ap_optout_stage_key(struct ap_optout *t, struct ap_optout_key k, unsigned scopes, int64_t time,
                        char *err);
int ap_optout_commit(struct ap_optout *t, char *err);

/* Writes a snapshot of the table and starts an empty journal after it (compaction of the
 * journal; also done by itself when the journal outgrows the table). AP_OK or AP_ERR. */
int ap_optout_snapshot(struct ap_optout *t, char *err);

/* Rebuilds the segment without tombstones (a new object under the same name; readers
 * follow on their next ap_optout_refresh). Done by itself when tombstones crowd the
 * table. AP_OK or AP_ERR with err set (the old segment then stays). */
int ap_optout_compact(struct ap_optout *t, char *err);

/* ---- text forms ---- */

/* Writes the 32 hex digits of <k> and a NUL into out[33]. */
void ap_optout_key_hex(struct ap_optout_key k, char *out);
/* Parses exactly 32 hex digits (either case). AP_OK or AP_ERR. */
int ap_optout_key_parse(struct ap_span s, struct ap_optout_key *k);

/* Writes the names of <scopes> separated by <sep> ("analytics|push") into out[n], NUL
 * included. Returns the length it needs (as snprintf). */
size_t ap_optout_scopes_format(unsigned scopes, char sep, char *out, size_t n);
/* Parses names separated by <sep>, spaces around each allowed, into *scopes. AP_OK, or
 * AP_ERR for an unknown or empty name (the input is not repeated in any message). */
int ap_optout_scopes_parse(struct ap_span s, char sep, unsigned *scopes);

#endif
