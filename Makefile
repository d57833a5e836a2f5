# anonproxy — one GNU Makefile. `make` builds bin/anonproxy and bin/anonctl, `make test`
# builds and runs the whole suite, `make run` starts the proxy on conf/anonproxy.json.
# Libraries come from Debian packages through pkg-config; tools/deps.sh installs them
# when they are missing and we are root. Quiet unless V=1.

CC ?= cc
OPT ?= -O2
CFLAGS ?= $(OPT) -g
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS += -D_GNU_SOURCE -Iproxy -Itests/support
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(SAN) $(PKG_CFLAGS) -MMD -MP
LDFLAGS ?=
CONF ?= conf/anonproxy.json
B ?= build
BIN ?= bin

ifneq ($(V),1)
Q := @
say = @printf '  %-6s %s\n' $(1) $(2);
else
say =
endif

all: $(BIN)/anonproxy $(BIN)/anonctl devkey

# build/config.mk is made by tools/deps.sh (installing packages if needed); make then
# restarts with the pkg-config flags it holds.
-include $(B)/config.mk
$(B)/config.mk: tools/deps.sh
	@mkdir -p $(B)
	$(Q)./tools/deps.sh > $@.tmp && mv $@.tmp $@

LIB_SRC := $(filter-out proxy/main.c,$(wildcard proxy/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
UNIT_SRC := $(wildcard tests/unit/*_test.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
TEST_SUPPORT := $(wildcard tests/support/*.c)
TEST_SUPPORT_OBJ := $(TEST_SUPPORT:%.c=$(B)/%.o)
INTEG_SRC := $(wildcard tests/integration/*_test.c)
INTEG_BIN := $(INTEG_SRC:tests/integration/%.c=$(B)/tests/integration/%)
INTEG_SUPPORT := $(filter-out $(INTEG_SRC) tests/integration/recorder.c,$(wildcard tests/integration/*.c))
INTEG_SUPPORT_OBJ := $(INTEG_SUPPORT:%.c=$(B)/%.o)
FUZZ_SRC := $(wildcard tests/fuzz/*_fuzz.c)
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/%)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
FUZZ_TIME ?= 60
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:%.c=$(B)/%)

.SECONDARY:
.PHONY: all test unit integration run clean fmt bench asan fuzz devkey

$(B)/%.o: %.c $(B)/config.mk
	@mkdir -p $(@D)
	$(call say,CC,$<)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

$(B)/libap.a: $(LIB_OBJ)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

$(BIN)/anonproxy: $(B)/proxy/main.o $(B)/libap.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BIN)/anonctl: $(B)/tools/anonctl.o $(B)/libap.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(B)/tests/%_test: $(B)/tests/unit/%_test.o $(TEST_SUPPORT_OBJ) $(B)/libap.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS) -lm

$(B)/bench/%: $(B)/bench/%.o $(B)/libap.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# Integration tests start the real anonproxy and the recording upstream on loopback.
$(B)/tests/integration/%_test: $(B)/tests/integration/%_test.o $(INTEG_SUPPORT_OBJ) $(B)/libap.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS) -lm

$(B)/tests/recorder: $(B)/tests/integration/recorder.o
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# Fuzz targets twice: linked with a small replay driver (gcc, part of `make test`: every
# committed seed must keep its invariant), and with libFuzzer (clang) for `make fuzz`.
$(B)/fuzz/%_fuzz: $(B)/tests/fuzz/%_fuzz.o $(B)/tests/fuzz/replay.o $(B)/libap.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
build-fuzz/%_fuzz: tests/fuzz/%_fuzz.c $(LIB_SRC) $(B)/config.mk
	@mkdir -p $(@D)
	@ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] && apt-get install -y -q clang libclang-rt-14-dev; }
	$(call say,FUZZ,$@)clang -std=c11 $(CPPFLAGS) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -o $@ \
		tests/fuzz/$*_fuzz.c $(LIB_SRC) $(PKG_LIBS) -lm

# `make fuzz` runs every target FUZZ_TIME seconds (FUZZ=name for one); new inputs go to
# build-fuzz/corpus/<name>, the committed seeds stay as they are.
fuzz: $(if $(FUZZ),build-fuzz/$(FUZZ)_fuzz,$(FUZZ_BIN))
	@for f in $^; do n=$$(basename $$f _fuzz); mkdir -p build-fuzz/corpus/$$n; \
		d=tests/fuzz/$$n.dict; [ -f $$d ] && d=-dict=$$d || d=; \
		echo "== fuzz $$n for $(FUZZ_TIME)s"; \
		$$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $$d \
			build-fuzz/corpus/$$n tests/fuzz/corpus/$$n || exit 1; done

# The development key and admin token that conf/anonproxy.json names. Never committed
# (see .gitignore); made once with mode 0600 so the loaders' permission checks pass.
devkey: conf/dev.key conf/admin.token
conf/dev.key:
	$(call say,KEY,$@)umask 077 && head -c 32 /dev/urandom > $@
conf/admin.token:
	$(call say,TOKEN,$@)umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > $@

# Each unit binary runs on its own so one crash names its module; then the integration
# scripts, which start real servers on loopback.
UNIT_JOBS ?= 2
test: all $(UNIT_BIN) $(FUZZ_REPLAY) $(BENCH_BIN) $(INTEG_BIN) $(if $(wildcard tests/integration/recorder.c),$(B)/tests/recorder)
	@fail=0; for t in $(UNIT_BIN); do \
		printf '== %s\n' $$t; $$t --jobs $(UNIT_JOBS) --timeout 300 || { echo "FAILED: $$t"; fail=1; }; done; \
	for t in $(FUZZ_REPLAY); do n=$$(basename $$t _fuzz); \
		$$t tests/fuzz/corpus/$$n || { echo "FAILED: $$t"; fail=1; }; done; \
	for t in $(INTEG_BIN); do \
		printf '== %s\n' $$t; B=$(B) BIN=$(BIN) $$t --jobs 1 --timeout 300 || { echo "FAILED: $$t"; fail=1; }; done; \
	for t in $(wildcard tests/integration/*_test.sh); do \
		printf '== %s\n' $$t; B=$(B) BIN=$(BIN) $$t || { echo "FAILED: $$t"; fail=1; }; done; \
	exit $$fail

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do $$t --jobs 2 --timeout 300 || exit 1; done

bench: all $(BENCH_BIN)
	$(B)/bench/scrub_bench

run: all
	./$(BIN)/anonproxy -c $(CONF)

# `make asan`: the whole suite (unit, fuzz-seed replay, integration binaries and scripts)
# built with AddressSanitizer + UBSan in build-asan/; the integration tests start
# build-asan/bin/anonproxy and anonctl (BIN) and build-asan/tests/recorder (B).
# A report from ANY process fails the run, however deep in the process tree:
# - ASan and LeakSanitizer reports go to $(SAN_LOG)/asan.<pid> (log_path), whoever
#   writes them: a criterion test worker (criterion keeps a passed test passed when LSan
#   finds a leak at the worker's exit), the proxy's master and its workers, the recorder,
#   anonctl under the scripts. After the suite any file there is printed and fails
#   `make asan`, even when every test passed.
# - UBSan cannot do the same with gcc: its libubsan.so ignores log_path when libasan is
#   loaded as well and writes to stderr only (and -static-libubsan takes ASan's log_path
#   over instead). So UBSan is fatal (-fno-sanitize-recover, halt_on_error), and the
#   integration tests run with TMPDIR=$(SAN_TMP) and HT_KEEP=1: every process's stderr
#   (<test dir>/<name>.err, the proxy workers' included, as they inherit the master's) is
#   kept and searched for sanitizer reports after the suite (and removed if it passed).
# - exitcode=86: a process with a report also exits 86, a status no test expects (anonctl
#   refuses with 1 or 2), so the test that ran it fails on the spot too. The proxy's master
#   is checked that way by the tests (exit 0 wanted after SIGTERM); a worker's status goes
#   no further than its master, so for workers the report files are what counts.
# - detect_leaks=1: LeakSanitizer runs at every exit(). Workers leave by exit(), not _exit()
#   (proxy/master.c), for this: _exit() skips the check.
# - Only files holding a report count (SAN_GREP): ASan also writes its allocator statistics
#   there when a process calls malloc_stats() (hostile_test.c does, in the worker, via gdb).
# - UNIT_JOBS=1: criterion 2.4.1's runner leaks 48 bytes of its timeout handling when a
#   test with a shorter timeout ends while one with a longer timeout still runs in
#   parallel (a suite .timeout next to a test's own .timeout is enough). The stack is all
#   libcriterion, but a suppression cannot say "only libcriterion": every unit test's
#   allocation has criterion frames below it, so it would hide leaks in proxy/ code too.
#   One test at a time never triggers it, and is not slower under ASan on two cores.
# No suppressions: Debian's libevent, OpenSSL, jansson, zlib and xxHash leave no report in
# this suite. Should a library ever do so, add an LSan suppressions file with a comment per
# entry saying why the leak is the library's and not ours, and that no frame of ours can
# match it.
SAN_LOG := $(CURDIR)/build-asan/sanitizer-reports
SAN_TMP := $(CURDIR)/build-asan/tmp
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:exitcode=86:detect_stack_use_after_return=1:log_path=$(SAN_LOG)/asan \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86 TMPDIR=$(SAN_TMP) HT_KEEP=1
SAN_GREP := -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' -e 'runtime error:' -e 'Sanitizer:DEADLYSIGNAL'
asan:
	@rm -rf $(SAN_LOG) $(SAN_TMP) && mkdir -p $(SAN_LOG) $(SAN_TMP)
	@$(SAN_ENV) $(MAKE) B=build-asan BIN=build-asan/bin OPT=-O1 UNIT_JOBS=1 \
		SAN='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined' \
		test; rc=$$?; \
	logs=$$(grep -rl $(SAN_GREP) $(SAN_LOG) 2>/dev/null); errs=$$(grep -rl --include='*.err' $(SAN_GREP) $(SAN_TMP) 2>/dev/null); \
	for f in $$logs; do printf '== sanitizer report: %s\n' "$$f"; head -c 20000 "$$f"; done; \
	for f in $$errs; do printf '== sanitizer report in: %s\n' "$$f"; grep -A40 $(SAN_GREP) "$$f" | head -c 20000; done; \
	if [ -n "$$logs$$errs" ]; then echo "asan: FAILED: sanitizer reports above"; exit 1; fi; \
	[ $$rc = 0 ] && rm -rf $(SAN_TMP) && echo "asan: suite passed, no sanitizer report"; exit $$rc

fmt:
	clang-format -i proxy/*.[ch] tools/*.c tests/unit/*.c tests/support/*.[ch] tests/fuzz/*.c bench/*.c

clean:
	rm -rf build build-asan build-fuzz bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)
