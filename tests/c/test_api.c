/*
 * The C ABI's test suite (driven by tests/c_abi.rs; also runnable by hand):
 *
 *   make -C tests/c LIBDIR=target/debug && tests/c/build/test_api [--prefix NAME_PREFIX]
 *
 * Every status code reached on purpose, NULL in every pointer slot, timeouts, shutdown and
 * drain, outputs untouched on failure, many threads on one handle, and the version macros.
 * Every queue is named "<prefix>_<n>" and unlinked at the end of its test (the driver also
 * removes leftovers of a crashed run). Prints "N passed, N failed" last.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include "shmq.h"

/* ----- a small harness ------------------------------------------------------------------ */

static int checks_failed;
static const char *current_test;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: [%s] CHECK failed: %s (last error: %s)\n", __FILE__,     \
                    __LINE__, current_test, #cond, shmq_last_error());                       \
            checks_failed++;                                                                 \
        }                                                                                    \
    } while (0)

/* Checks that `expr` returns status `want`. */
#define CHECK_STATUS(expr, want)                                                             \
    do {                                                                                     \
        int got_ = (int)(expr);                                                              \
        if (got_ != (int)(want)) {                                                           \
            fprintf(stderr, "%s:%d: [%s] %s returned %d (%s), expected %s (last error: %s)\n", \
                    __FILE__, __LINE__, current_test, #expr, got_,                           \
                    shmq_status_str((shmq_status)got_), #want, shmq_last_error());           \
            checks_failed++;                                                                 \
        }                                                                                    \
    } while (0)

/* Checks that this thread's last error contains `needle`. */
#define CHECK_LAST_ERROR_HAS(needle)                                                         \
    do {                                                                                     \
        if (strstr(shmq_last_error(), (needle)) == NULL) {                                   \
            fprintf(stderr, "%s:%d: [%s] last error \"%s\" lacks \"%s\"\n", __FILE__,        \
                    __LINE__, current_test, shmq_last_error(), (needle));                    \
            checks_failed++;                                                                 \
        }                                                                                    \
    } while (0)

static char prefix[64] = "ctest";
static int name_counter;

/* A fresh queue name for this run: "<prefix>_<n>". */
static const char *fresh_name(char *buf, size_t len) {
    snprintf(buf, len, "%s_%d", prefix, name_counter++);
    return buf;
}

static uint64_t monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* How far a message's timestamp may stray from CLOCK_REALTIME read around it: the library
 * extrapolates between kernel reads with the TSC (src/clock.rs; within a microsecond on the
 * project's VM, 20 us checked by its unit test), so a stamp may lead a clock read made right
 * after it. */
#define STAMP_SKEW_NS 20000u

/* Creates a queue with shmq_create_with's `flags` (mode 0600) that the test must shmq_close
 * and shmq_unlink; NULL on failure. */
static shmq_queue *make_queue_with(char *name, size_t name_len, uint32_t cap, uint32_t size,
                                   uint32_t flags) {
    shmq_queue *q = NULL;
    fresh_name(name, name_len);
    CHECK_STATUS(shmq_create_with(name, cap, size, 0, flags, &q), SHMQ_OK);
    CHECK(q != NULL);
    return q;
}

/* Creates a queue that the test must shmq_close and shmq_unlink; NULL on failure. */
static shmq_queue *make_queue(char *name, size_t name_len, uint32_t cap, uint32_t size) {
    shmq_queue *q = NULL;
    fresh_name(name, name_len);
    CHECK_STATUS(shmq_create(name, cap, size, &q), SHMQ_OK);
    CHECK(q != NULL);
    return q;
}

static void drop_queue(shmq_queue *q, const char *name) {
    shmq_close(q);
    CHECK_STATUS(shmq_unlink(name), SHMQ_OK);
}

/* ----- tests ------------------------------------------------------------------------------ */

static void test_version(void) {
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", (int)SHMQ_VERSION_MAJOR,
             (int)SHMQ_VERSION_MINOR, (int)SHMQ_VERSION_PATCH);
    CHECK(strcmp(SHMQ_VERSION, expected) == 0);
    CHECK(strcmp(shmq_version(), SHMQ_VERSION) == 0);
}

static void test_checksum_implementation(void) {
    /* Static text naming one of the library's CRC32C implementations, the same each time. */
    const char *name = shmq_checksum_implementation();
    CHECK(name != NULL && strncmp(name, "CRC32C, ", 8) == 0);
    CHECK(shmq_checksum_implementation() == name);
#if defined(__x86_64__) && defined(__GNUC__)
    /* An x86-64 CPU with the crc32 instruction gets a hardware path, not the portable one. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul")) {
        CHECK(strstr(name, "crate") == NULL);
    }
#endif
}

static void test_status_codes(void) {
    /* The numbers are part of the ABI. */
    CHECK(SHMQ_OK == 0 && SHMQ_ERR_FULL == 1 && SHMQ_ERR_EMPTY == 2 && SHMQ_ERR_TIMEOUT == 3);
    CHECK(SHMQ_ERR_CLOSED == 4 && SHMQ_ERR_INVALID_ARGUMENT == 5);
    CHECK(SHMQ_ERR_ALREADY_EXISTS == 6 && SHMQ_ERR_NOT_FOUND == 7);
    CHECK(SHMQ_ERR_PERMISSION_DENIED == 8 && SHMQ_ERR_CREATION_FAILED == 9);
    CHECK(SHMQ_ERR_ACCESS_FAILED == 10 && SHMQ_ERR_MESSAGE_TOO_LARGE == 11);
    CHECK(SHMQ_ERR_BUFFER_TOO_SMALL == 12 && SHMQ_ERR_CORRUPTED_DATA == 13);
    CHECK(SHMQ_ERR_INCOMPATIBLE_VERSION == 14 && SHMQ_ERR_INTERNAL == 15);
    CHECK(SHMQ_ERR_ROLE_TAKEN == 16);
    for (int i = 0; i <= 16; i++) {
        const char *text = shmq_status_str((shmq_status)i);
        CHECK(text != NULL && strcmp(text, "unknown status") != 0 && text[0] != '\0');
        for (int j = 0; j < i; j++) {
            CHECK(strcmp(text, shmq_status_str((shmq_status)j)) != 0);
        }
    }
    CHECK(strcmp(shmq_status_str(SHMQ_ERR_INTERNAL), "internal error") == 0);
    CHECK(strcmp(shmq_status_str(SHMQ_ERR_ROLE_TAKEN), "role taken") == 0);
    /* Any integer is accepted (C may pass what it likes). */
    const int out_of_range[] = {-1, 17, 1000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof out_of_range / sizeof out_of_range[0]; i++) {
        CHECK(strcmp(shmq_status_str((shmq_status)out_of_range[i]), "unknown status") == 0);
    }
}

static void test_basics(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 64);
    if (q == NULL) return;
    CHECK(shmq_capacity(q) == 8);
    CHECK(shmq_message_size(q) == 64);
    CHECK(shmq_len(q) == 0);
    CHECK(shmq_is_shutdown(q) == 0);

    shmq_queue *other = NULL;
    CHECK_STATUS(shmq_connect(name, &other), SHMQ_OK);
    CHECK(other != NULL && other != q);

    /* shmq_send: id = position, timestamp = now. */
    uint64_t before = now_ns();
    CHECK_STATUS(shmq_send(q, "hello", 5, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "world!", 6, -1), SHMQ_OK);
    CHECK(shmq_len(other) == 2);
    char buf[64];
    shmq_message_info info;
    memset(&info, 0xAB, sizeof info);
    CHECK_STATUS(shmq_receive_message(other, buf, sizeof buf, &info, 0), SHMQ_OK);
    CHECK(info.len == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK(info.id == 0 && info.flags == 0);
    CHECK(info.timestamp_ns + STAMP_SKEW_NS >= before && info.timestamp_ns <= now_ns() + STAMP_SKEW_NS);
    size_t len = 0;
    CHECK_STATUS(shmq_receive(other, buf, sizeof buf, &len, 1000), SHMQ_OK);
    CHECK(len == 6 && memcmp(buf, "world!", 6) == 0);

    /* shmq_send_message: the caller's id and timestamp travel with the message. */
    CHECK_STATUS(shmq_send_message(other, 424242, 777, "x", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, 0), SHMQ_OK);
    CHECK(info.id == 424242 && info.timestamp_ns == 777 && info.len == 1 && buf[0] == 'x');

    /* Empty messages, with NULL data / buffer allowed when the length is 0. */
    CHECK_STATUS(shmq_send(q, NULL, 0, 0), SHMQ_OK);
    len = 99;
    CHECK_STATUS(shmq_receive(q, NULL, 0, &len, 0), SHMQ_OK);
    CHECK(len == 0);

    /* A full-size message fits exactly. */
    char big[64];
    memset(big, 'z', sizeof big);
    CHECK_STATUS(shmq_send(q, big, sizeof big, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
    CHECK(len == 64 && memcmp(buf, big, 64) == 0);

    /* A buffer larger than the message size is fine. */
    char larger[200];
    CHECK_STATUS(shmq_send(q, "abc", 3, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive(q, larger, sizeof larger, &len, 0), SHMQ_OK);
    CHECK(len == 3 && memcmp(larger, "abc", 3) == 0);

    shmq_close(other);
    drop_queue(q, name);
}

static void test_stats(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 32);
    if (q == NULL) return;
    CHECK_STATUS(shmq_send(q, "12345", 5, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "123", 3, 0), SHMQ_OK);
    char buf[32];
    size_t len;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);

    shmq_queue_stats st;
    memset(&st, 0xEE, sizeof st);
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(st.struct_size == sizeof st && st.reserved == 0);
    CHECK(st.messages_sent == 2 && st.messages_received == 1);
    CHECK(st.bytes_sent == 8 && st.bytes_received == 5);
    CHECK(st.depth == 1 && st.capacity == 4 && st.send_full == 0 && st.timeouts == 0);
    CHECK(st.checksum_failures == 0 && st.corrupted == 0 && st.abandoned == 0);
    CHECK(st.sender_sleeps == 0 && st.receiver_sleeps == 0);

    /* An older caller whose struct ends after messages_received: nothing beyond is written. */
    shmq_queue_stats old;
    memset(&old, 0xEE, sizeof old);
    old.struct_size = (uint32_t)offsetof(shmq_queue_stats, bytes_sent);
    CHECK_STATUS(shmq_stats(q, &old), SHMQ_OK);
    CHECK(old.struct_size == offsetof(shmq_queue_stats, bytes_sent));
    CHECK(old.messages_sent == 2 && old.messages_received == 1);
    CHECK(old.bytes_sent == 0xEEEEEEEEEEEEEEEEu && old.capacity == 0xEEEEEEEEEEEEEEEEu);

    /* A caller built before the sleep counters were appended gets everything up to them. */
    memset(&old, 0xEE, sizeof old);
    old.struct_size = (uint32_t)offsetof(shmq_queue_stats, sender_sleeps);
    CHECK_STATUS(shmq_stats(q, &old), SHMQ_OK);
    CHECK(old.struct_size == offsetof(shmq_queue_stats, sender_sleeps) && old.capacity == 4);
    CHECK(old.sender_sleeps == 0xEEEEEEEEEEEEEEEEu && old.receiver_sleeps == 0xEEEEEEEEEEEEEEEEu);

    /* A newer caller's bigger struct: we fill what we know and say how much. */
    struct {
        shmq_queue_stats known;
        uint64_t future_field;
    } newer;
    memset(&newer, 0xEE, sizeof newer);
    newer.known.struct_size = (uint32_t)sizeof newer;
    CHECK_STATUS(shmq_stats(q, &newer.known), SHMQ_OK);
    CHECK(newer.known.struct_size == sizeof(shmq_queue_stats));
    CHECK(newer.known.capacity == 4 && newer.future_field == 0xEEEEEEEEEEEEEEEEu);

    /* Too small to mean anything. */
    shmq_queue_stats tiny;
    memset(&tiny, 0xEE, sizeof tiny);
    tiny.struct_size = 4;
    CHECK_STATUS(shmq_stats(q, &tiny), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(tiny.struct_size == 4 && tiny.messages_sent == 0xEEEEEEEEEEEEEEEEu);
    CHECK_LAST_ERROR_HAS("struct_size");

    /* A receive that finds the queue empty and sleeps (no polling) counts once. */
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
    CHECK_STATUS(shmq_set_spin_limit(q, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 200), SHMQ_ERR_TIMEOUT);
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(st.receiver_sleeps == 1 && st.sender_sleeps == 0 && st.timeouts == 1);

    drop_queue(q, name);
}

static void test_null_arguments(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    shmq_queue *out = (shmq_queue *)(uintptr_t)0x1; /* must stay untouched */
    char buf[16];
    size_t len = 12345;
    shmq_message_info info;
    memset(&info, 0x5A, sizeof info);
    shmq_queue_stats st;
    st.struct_size = (uint32_t)sizeof st;

    CHECK_STATUS(shmq_create(NULL, 2, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'name' is NULL");
    CHECK_STATUS(shmq_create("x", 2, 16, NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'out' is NULL");
    CHECK_STATUS(shmq_create_with(NULL, 2, 16, 0, 0, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_create_with: invalid argument: 'name' is NULL");
    CHECK_STATUS(shmq_create_with("x", 2, 16, 0, 0, NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'out' is NULL");
    CHECK_STATUS(shmq_connect(NULL, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_connect: invalid argument: 'name' is NULL");
    CHECK_STATUS(shmq_connect(name, NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'out' is NULL");
    CHECK(out == (shmq_queue *)(uintptr_t)0x1);
    CHECK_STATUS(shmq_unlink(NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_unlink: invalid argument: 'name' is NULL");

    CHECK_STATUS(shmq_send(NULL, "a", 1, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_send: invalid argument: 'q' is NULL");
    CHECK_STATUS(shmq_send(q, NULL, 1, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'data' is NULL");
    CHECK_STATUS(shmq_send_message(NULL, 1, 2, "a", 1, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'q' is NULL");
    CHECK_STATUS(shmq_send_message(q, 1, 2, NULL, 1, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'data' is NULL");
    CHECK(shmq_len(q) == 0);

    CHECK_STATUS(shmq_send(q, "m", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive(NULL, buf, sizeof buf, &len, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'q' is NULL");
    CHECK_STATUS(shmq_receive(q, NULL, sizeof buf, &len, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'buf' is NULL");
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, NULL, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'out_len' is NULL");
    CHECK_STATUS(shmq_receive_message(NULL, buf, sizeof buf, &info, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive_message(q, NULL, sizeof buf, &info, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'buf' is NULL");
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, NULL, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'info' is NULL");
    /* None of that dequeued anything or wrote an output. */
    CHECK(len == 12345 && info.len == (size_t)0x5A5A5A5A5A5A5A5Au);
    CHECK(shmq_len(q) == 1);

    CHECK_STATUS(shmq_shutdown(NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_shutdown: invalid argument: 'q' is NULL");
    CHECK_STATUS(shmq_stats(NULL, &st), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_stats(q, NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'out' is NULL");
    CHECK(shmq_len(NULL) == 0);
    CHECK_LAST_ERROR_HAS("shmq_len: invalid argument: 'q' is NULL");
    CHECK(shmq_capacity(NULL) == 0);
    CHECK(shmq_message_size(NULL) == 0);
    CHECK(shmq_is_shutdown(NULL) == -1);
    CHECK(shmq_is_single_producer_single_consumer(NULL) == -1);
    CHECK_LAST_ERROR_HAS("shmq_is_single_producer_single_consumer: invalid argument: 'q' is NULL");
    shmq_close(NULL); /* a no-op */

    drop_queue(q, name);
}

/* The spin limit: default, set and read back, kept by shmq_reopen, per handle; NULLs; and
 * two processes whose handles never poll (limit 0) moving a stream through a small queue,
 * every handover through the futex. */
static void test_spin_limit(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    uint64_t ns = 1;
    CHECK_STATUS(shmq_spin_limit(q, &ns), SHMQ_OK);
    CHECK(ns == 10000);
    CHECK_STATUS(shmq_set_spin_limit(q, 250000), SHMQ_OK);
    CHECK_STATUS(shmq_spin_limit(q, &ns), SHMQ_OK);
    CHECK(ns == 250000);
    shmq_queue *again = NULL;
    CHECK_STATUS(shmq_reopen(q, &again), SHMQ_OK);
    ns = 1;
    CHECK_STATUS(shmq_spin_limit(again, &ns), SHMQ_OK);
    CHECK(ns == 250000);
    shmq_close(again);
    shmq_queue *other = NULL;
    CHECK_STATUS(shmq_connect(name, &other), SHMQ_OK);
    CHECK_STATUS(shmq_spin_limit(other, &ns), SHMQ_OK);
    CHECK(ns == 10000);
    shmq_close(other);
    CHECK_STATUS(shmq_set_spin_limit(q, UINT64_MAX), SHMQ_OK);
    CHECK_STATUS(shmq_spin_limit(q, &ns), SHMQ_OK);
    CHECK(ns == UINT64_MAX);

    CHECK_STATUS(shmq_set_spin_limit(NULL, 5), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_set_spin_limit: invalid argument: 'q' is NULL");
    CHECK_STATUS(shmq_spin_limit(NULL, &ns), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_spin_limit: invalid argument: 'q' is NULL");
    CHECK_STATUS(shmq_spin_limit(q, NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("shmq_spin_limit: invalid argument: 'nanoseconds' is NULL");
    CHECK(ns == UINT64_MAX); /* untouched by the failures */

    /* A limit of 0 still waits (asleep) and times out as asked. */
    CHECK_STATUS(shmq_set_spin_limit(q, 0), SHMQ_OK);
    char buf[16];
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 20), SHMQ_ERR_TIMEOUT);

    enum { COUNT = 20000 };
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        shmq_queue *tx = NULL;
        if (shmq_connect(name, &tx) != SHMQ_OK || shmq_set_spin_limit(tx, 0) != SHMQ_OK) _exit(2);
        for (uint64_t i = 0; i < COUNT; i++) {
            if (shmq_send(tx, &i, sizeof i, 10000) != SHMQ_OK) _exit(3);
        }
        shmq_close(tx);
        _exit(0);
    }
    uint64_t expected = 0;
    while (expected < COUNT) {
        uint64_t got = 0;
        len = 0;
        int status = shmq_receive(q, &got, sizeof got, &len, 10000);
        if (status != SHMQ_OK || len != sizeof got || got != expected) {
            fprintf(stderr, "[%s] at %llu: status %d, len %zu, got %llu\n", current_test,
                    (unsigned long long)expected, status, len, (unsigned long long)got);
            break;
        }
        expected++;
    }
    CHECK(expected == COUNT);
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    drop_queue(q, name);
}

static void test_invalid_arguments(void) {
    char name[96];
    shmq_queue *out = NULL;
    fresh_name(name, sizeof name);
    CHECK_STATUS(shmq_create("", 2, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_create("bad/name", 2, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("bad/name");
    CHECK_STATUS(shmq_create(".hidden", 2, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_create("caf\xc3", 2, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("not valid UTF-8");
    CHECK_STATUS(shmq_connect("caf\xc3", &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_unlink("no spaces"), SHMQ_ERR_INVALID_ARGUMENT);
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CHECK_STATUS(shmq_create(long_name, 2, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_create(name, 0, 16, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("capacity");
    CHECK_STATUS(shmq_create(name, 2, 0, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("message size");
    CHECK_STATUS(shmq_create(name, UINT32_MAX, UINT32_MAX, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_create_with(name, 2, 16, 01000, 0, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("mode");
    CHECK_STATUS(shmq_create_with(name, 2, 16, 0, 16u, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("unknown flags 0x10");
    CHECK_STATUS(shmq_create_with(name, 2, 16, 0, 0x80000000u | SHMQ_CREATE_NO_CHECKSUM, &out),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("unknown flags 0x80000000");
    CHECK_STATUS(shmq_create_with(name, 2, 16, 0,
                                  SHMQ_CREATE_OPEN_EXISTING | SHMQ_CREATE_REPLACE, &out),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL);
    CHECK_STATUS(shmq_connect(name, &out), SHMQ_ERR_NOT_FOUND); /* nothing was created */

    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    char buf[16];
    size_t len = 7;
    CHECK_STATUS(shmq_send(q, "a", 1, -2), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("timeout_ms -2");
    CHECK_STATUS(shmq_send(q, "a", 1, INT_MIN), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, -5), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive(q, buf, (size_t)PTRDIFF_MAX + 1u, &len, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(len == 7 && shmq_len(q) == 0);
    drop_queue(q, name);
}

static void test_create_options(void) {
    char name[96];
    shmq_queue *q = NULL, *again = NULL, *fresh = NULL;
    fresh_name(name, sizeof name);
    CHECK_STATUS(shmq_create_with(name, 4, 32, 0640, 0, &q), SHMQ_OK);
    if (q == NULL) return;
    char path[160];
    snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0640);

    /* ALREADY_EXISTS without flags; OPEN_EXISTING connects (same geometry only). */
    shmq_queue *dup = NULL;
    CHECK_STATUS(shmq_create(name, 4, 32, &dup), SHMQ_ERR_ALREADY_EXISTS);
    CHECK_LAST_ERROR_HAS(name);
    CHECK(dup == NULL);
    CHECK_STATUS(shmq_send(q, "kept", 4, 0), SHMQ_OK);
    CHECK_STATUS(shmq_create_with(name, 4, 32, 0, SHMQ_CREATE_OPEN_EXISTING, &again), SHMQ_OK);
    CHECK(again != NULL && shmq_len(again) == 1);
    CHECK_STATUS(shmq_create_with(name, 5, 32, 0, SHMQ_CREATE_OPEN_EXISTING, &dup),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(dup == NULL);

    /* REPLACE makes a fresh, empty queue under the name; the old handles keep the old one. */
    CHECK_STATUS(shmq_create_with(name, 2, 16, 0, SHMQ_CREATE_REPLACE, &fresh), SHMQ_OK);
    CHECK(fresh != NULL && shmq_len(fresh) == 0 && shmq_capacity(fresh) == 2);
    CHECK(shmq_len(q) == 1);
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);

    shmq_close(again);
    shmq_close(q);
    drop_queue(fresh, name);
    CHECK_STATUS(shmq_unlink(name), SHMQ_ERR_NOT_FOUND);
    CHECK_LAST_ERROR_HAS("does not exist");
    shmq_queue *none = NULL;
    CHECK_STATUS(shmq_connect(name, &none), SHMQ_ERR_NOT_FOUND);
    CHECK(none == NULL);
}

static void test_full_empty_timeout(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    char buf[16];
    size_t len = 31;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_EMPTY);
    CHECK_LAST_ERROR_HAS(name);
    CHECK(len == 31);
    uint64_t start = monotonic_ms();
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 50), SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - start >= 45); /* it did wait (no upper bound: machines are slow) */
    CHECK(len == 31);

    CHECK_STATUS(shmq_send(q, "1", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "2", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "3", 1, 0), SHMQ_ERR_FULL);
    CHECK_LAST_ERROR_HAS("full");
    start = monotonic_ms();
    CHECK_STATUS(shmq_send(q, "3", 1, 50), SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - start >= 45);
    CHECK(shmq_len(q) == 2);

    shmq_queue_stats st;
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(st.timeouts == 2 && st.send_full == 2 && st.peak_depth == 2);

    /* MESSAGE_TOO_LARGE is refused before anything else, even on a full queue. */
    char big[17] = {0};
    CHECK_STATUS(shmq_send(q, big, sizeof big, 0), SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK_LAST_ERROR_HAS("17 bytes");
    CHECK_STATUS(shmq_send(q, big, SIZE_MAX, -1), SHMQ_ERR_MESSAGE_TOO_LARGE);

    /* A receive that waits is woken by a send from another thread: see test_threads. */
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, -1), SHMQ_OK);
    CHECK(len == 1 && buf[0] == '1');
    drop_queue(q, name);
}

static void test_buffer_too_small(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 128);
    if (q == NULL) return;
    char msg[100];
    memset(msg, 'm', sizeof msg);
    CHECK_STATUS(shmq_send_message(q, 7, 8, msg, sizeof msg, 0), SHMQ_OK);
    char small[10];
    memset(small, 0, sizeof small);
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, small, sizeof small, &len, 0), SHMQ_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 100);
    CHECK_LAST_ERROR_HAS("100 bytes");
    CHECK(shmq_len(q) == 1);
    CHECK_STATUS(shmq_receive(q, NULL, 0, &len, 0), SHMQ_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 100);

    shmq_message_info info;
    memset(&info, 0x11, sizeof info);
    CHECK_STATUS(shmq_receive_message(q, small, sizeof small, &info, -1),
                 SHMQ_ERR_BUFFER_TOO_SMALL);
    CHECK(info.len == 100 && info.id == 0x1111111111111111u && info.flags == 0x11111111u);
    CHECK(shmq_len(q) == 1);

    /* The message was never lost: a big enough buffer gets it whole. */
    char buf[100];
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, 0), SHMQ_OK);
    CHECK(info.len == 100 && info.id == 7 && info.timestamp_ns == 8);
    CHECK(memcmp(buf, msg, sizeof msg) == 0);
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

static void test_shutdown_and_drain(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 16);
    if (q == NULL) return;
    shmq_queue *consumer = NULL;
    CHECK_STATUS(shmq_connect(name, &consumer), SHMQ_OK);
    if (consumer == NULL) return;
    for (int i = 0; i < 3; i++) {
        CHECK_STATUS(shmq_send_message(q, (uint64_t)i, 0, "d", 1, 0), SHMQ_OK);
    }
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK); /* idempotent */
    CHECK(shmq_is_shutdown(q) == 1 && shmq_is_shutdown(consumer) == 1);
    CHECK_STATUS(shmq_send(q, "x", 1, 0), SHMQ_ERR_CLOSED);
    CHECK_LAST_ERROR_HAS("shut down");
    CHECK_STATUS(shmq_send(consumer, "x", 1, -1), SHMQ_ERR_CLOSED);

    char buf[16];
    shmq_message_info info;
    for (uint64_t i = 0; i < 3; i++) {
        CHECK_STATUS(shmq_receive_message(consumer, buf, sizeof buf, &info, -1), SHMQ_OK);
        CHECK(info.id == i);
    }
    size_t len = 5;
    CHECK_STATUS(shmq_receive(consumer, buf, sizeof buf, &len, -1), SHMQ_ERR_CLOSED);
    CHECK_STATUS(shmq_receive(consumer, buf, sizeof buf, &len, 0), SHMQ_ERR_CLOSED);
    CHECK_STATUS(shmq_receive(consumer, buf, sizeof buf, &len, 100), SHMQ_ERR_CLOSED);
    CHECK(len == 5);
    /* A new handle sees the shutdown too. */
    shmq_queue *late = NULL;
    CHECK_STATUS(shmq_connect(name, &late), SHMQ_OK);
    CHECK(shmq_is_shutdown(late) == 1);
    shmq_close(late);
    shmq_close(consumer);
    drop_queue(q, name);
}

/* Writes a fake segment file in /dev/shm (as another program or version could leave). */
static int write_fake_segment(const char *name, uint64_t magic, uint32_t version) {
    char path[160];
    snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return -1;
    unsigned char page[8192];
    memset(page, 0, sizeof page);
    memcpy(page, &magic, sizeof magic); /* little-endian machines only, like the layout */
    memcpy(page + 8, &version, sizeof version);
    ssize_t w = write(fd, page, sizeof page);
    close(fd);
    return w == (ssize_t)sizeof page ? 0 : -1;
}

static void test_corrupted_and_incompatible(void) {
    char name[96];
    shmq_queue *q = NULL;
    uint64_t magic;
    memcpy(&magic, "SHMQRING", 8);

    fresh_name(name, sizeof name);
    CHECK(write_fake_segment(name, 0x0123456789abcdefu, 1) == 0);
    CHECK_STATUS(shmq_connect(name, &q), SHMQ_ERR_CORRUPTED_DATA);
    CHECK_LAST_ERROR_HAS("not an shmq queue");
    CHECK(q == NULL);
    CHECK_STATUS(shmq_unlink(name), SHMQ_OK);

    fresh_name(name, sizeof name);
    CHECK(write_fake_segment(name, magic, 999) == 0);
    CHECK_STATUS(shmq_connect(name, &q), SHMQ_ERR_INCOMPATIBLE_VERSION);
    CHECK_LAST_ERROR_HAS("999");
    CHECK(q == NULL);
    CHECK_STATUS(shmq_unlink(name), SHMQ_OK);

    /* A message whose payload changed after sending fails its CRC32C and is dropped;
       the next one is fine. The payload of position 0 starts right after the 4096-byte
       header: each slot is its payload, then its 64-byte slot header (docs/LAYOUT.md). */
    for (int checksums = 1; checksums >= 0; checksums--) {
        fresh_name(name, sizeof name);
        uint32_t flags = checksums ? 0u : SHMQ_CREATE_NO_CHECKSUM;
        CHECK_STATUS(shmq_create_with(name, 4, 64, 0, flags, &q), SHMQ_OK);
        if (q == NULL) return;
        CHECK_STATUS(shmq_send(q, "original", 8, 0), SHMQ_OK);
        CHECK_STATUS(shmq_send(q, "second", 6, 0), SHMQ_OK);
        char path[160];
        snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
        int fd = open(path, O_RDWR);
        CHECK(fd >= 0);
        if (fd >= 0) {
            unsigned char *base = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            CHECK(base != MAP_FAILED);
            if (base != MAP_FAILED) {
                CHECK(memcmp(base + 4096, "original", 8) == 0);
                base[4096] = 'X';
                munmap(base, 8192);
            }
            close(fd);
        }
        char buf[64];
        size_t len = 77;
        if (checksums) {
            CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_CORRUPTED_DATA);
            CHECK_LAST_ERROR_HAS("checksum");
            CHECK(len == 77);
            shmq_queue_stats st;
            st.struct_size = (uint32_t)sizeof st;
            CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
            CHECK(st.checksum_failures == 1);
        } else {
            CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
            CHECK(len == 8 && memcmp(buf, "Xriginal", 8) == 0);
        }
        CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
        CHECK(len == 6 && memcmp(buf, "second", 6) == 0);
        drop_queue(q, name);
        q = NULL;
    }
}

/* Runs `child` in a forked process and returns its exit status (or -1). */
static int in_child(int (*child)(const char *), const char *name) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(child(name));
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* In a child: as an unprivileged user, the owner-only queue is off limits. */
static int child_permission_denied(const char *name) {
    if (geteuid() == 0) {
        /* root bypasses permission bits: become "nobody" first. */
        if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    }
    shmq_queue *q = NULL;
    int ok = shmq_connect(name, &q) == SHMQ_ERR_PERMISSION_DENIED && q == NULL &&
             strstr(shmq_last_error(), "os error 13") != NULL &&
             strstr(shmq_last_error(), name) != NULL;
    return ok ? 0 : 11;
}

static void test_permission_denied(void) {
    char name[96];
    shmq_queue *q = NULL;
    fresh_name(name, sizeof name);
    /* Non-root: a queue whose mode denies its owner reading. Root: an owner-only queue,
       opened by a child that dropped to "nobody". */
    uint32_t mode = geteuid() == 0 ? 0600 : 0200;
    CHECK_STATUS(shmq_create_with(name, 2, 16, mode, 0, &q), SHMQ_OK);
    if (q == NULL) return;
    CHECK(in_child(child_permission_denied, name) == 0);
    drop_queue(q, name);
}

/* In a child with no file descriptors left: creating and opening fail with errno. */
static int child_no_descriptors(const char *name) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 20;
    rl.rlim_cur = 0;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 21;
    char fresh[128];
    snprintf(fresh, sizeof fresh, "%s_never", name);
    shmq_queue *q = NULL;
    if (shmq_create(fresh, 2, 16, &q) != SHMQ_ERR_CREATION_FAILED || q != NULL) return 22;
    if (strstr(shmq_last_error(), "os error 24") == NULL) return 23;
    if (shmq_connect(name, &q) != SHMQ_ERR_ACCESS_FAILED || q != NULL) return 24;
    if (strstr(shmq_last_error(), "os error 24") == NULL) return 25;
    if (strstr(shmq_last_error(), name) == NULL) return 26;
    return 0;
}

static void test_creation_and_access_failed(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    CHECK(in_child(child_no_descriptors, name) == 0);
    drop_queue(q, name);
}

/* ----- many threads on one handle ------------------------------------------------------- */

enum { PRODUCERS = 4, CONSUMERS = 4, PER_PRODUCER = 2000 };

struct worker_ctx {
    shmq_queue *q;
    int index;
    size_t received;
    uint64_t *ids; /* consumer: ids received */
    int errors;
};

static void *producer_thread(void *arg) {
    struct worker_ctx *ctx = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        uint64_t id = (uint64_t)ctx->index * 1000000u + (uint64_t)i;
        char text[32];
        int len = snprintf(text, sizeof text, "payload %llu", (unsigned long long)id);
        /* Alternate the blocking forms: without limit, and with a generous deadline. */
        int timeout = (i % 2 == 0) ? -1 : 30000;
        if (shmq_send_message(ctx->q, id, now_ns(), text, (size_t)len, timeout) != SHMQ_OK) {
            ctx->errors++;
        }
    }
    return NULL;
}

static void *consumer_thread(void *arg) {
    struct worker_ctx *ctx = arg;
    char buf[32];
    shmq_message_info info;
    for (;;) {
        shmq_status s = shmq_receive_message(ctx->q, buf, sizeof buf, &info, -1);
        if (s == SHMQ_ERR_CLOSED) break;
        if (s != SHMQ_OK) {
            ctx->errors++;
            break;
        }
        char expected[32];
        int len = snprintf(expected, sizeof expected, "payload %llu",
                           (unsigned long long)info.id);
        if (info.len != (size_t)len || memcmp(buf, expected, info.len) != 0) ctx->errors++;
        ctx->ids[ctx->received++] = info.id;
    }
    return NULL;
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Thread-local last error: another thread's failure does not change this one's. */
static void *other_thread_fails(void *arg) {
    (void)arg;
    shmq_queue *q = NULL;
    int ok = shmq_connect("no_such_queue_for_thread_test", &q) == SHMQ_ERR_NOT_FOUND &&
             strstr(shmq_last_error(), "no_such_queue_for_thread_test") != NULL;
    return ok ? (void *)1 : NULL;
}

static void test_threads(void) {
    char name[96];
    /* Small capacity: producers block on full and consumers on empty, many times. */
    shmq_queue *q = make_queue(name, sizeof name, 16, 32);
    if (q == NULL) return;
    pthread_t producers[PRODUCERS], consumers[CONSUMERS];
    struct worker_ctx pctx[PRODUCERS], cctx[CONSUMERS];
    const size_t total = (size_t)PRODUCERS * PER_PRODUCER;
    for (int i = 0; i < CONSUMERS; i++) {
        cctx[i] = (struct worker_ctx){q, i, 0, calloc(total, sizeof(uint64_t)), 0};
        CHECK(cctx[i].ids != NULL);
        CHECK(pthread_create(&consumers[i], NULL, consumer_thread, &cctx[i]) == 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pctx[i] = (struct worker_ctx){q, i, 0, NULL, 0};
        CHECK(pthread_create(&producers[i], NULL, producer_thread, &pctx[i]) == 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(producers[i], NULL);
        CHECK(pctx[i].errors == 0);
    }
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    uint64_t *all = calloc(total + 1, sizeof(uint64_t));
    size_t n = 0;
    int spread = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(consumers[i], NULL);
        CHECK(cctx[i].errors == 0);
        CHECK(n + cctx[i].received <= total);
        if (all != NULL && n + cctx[i].received <= total) {
            memcpy(all + n, cctx[i].ids, cctx[i].received * sizeof(uint64_t));
        }
        n += cctx[i].received;
        spread += cctx[i].received > 0;
        free(cctx[i].ids);
    }
    /* Every message received exactly once. */
    CHECK(n == total);
    if (all != NULL && n == total) {
        qsort(all, n, sizeof(uint64_t), compare_u64);
        size_t k = 0;
        for (int p = 0; p < PRODUCERS; p++) {
            for (int i = 0; i < PER_PRODUCER; i++, k++) {
                if (all[k] != (uint64_t)p * 1000000u + (uint64_t)i) {
                    fprintf(stderr, "[%s] id %llu at %zu, expected %llu\n", current_test,
                            (unsigned long long)all[k], k,
                            (unsigned long long)((uint64_t)p * 1000000u + (uint64_t)i));
                    checks_failed++;
                    p = PRODUCERS;
                    break;
                }
            }
        }
    }
    free(all);
    CHECK(spread >= 1);
    CHECK(shmq_len(q) == 0);

    /* Last error per thread. */
    CHECK_STATUS(shmq_send(q, "x", 1, 0), SHMQ_ERR_CLOSED);
    pthread_t t;
    void *result = NULL;
    CHECK(pthread_create(&t, NULL, other_thread_fails, NULL) == 0);
    pthread_join(t, &result);
    CHECK(result != NULL);
    CHECK_LAST_ERROR_HAS("shut down");
    drop_queue(q, name);
}

/* ----- zero-copy: shmq_send_in_place / shmq_receive_in_place ------------------------------ */

/* The byte at offset i of message `seq` (every byte of every message is checked). */
static uint8_t zc_byte(uint64_t seq, size_t i) {
    return (uint8_t)((seq * 131u + i * 7u + (i >> 8)) & 0xffu);
}

struct zc_fill {
    uint64_t seq;       /* which pattern to write */
    int64_t len;        /* what to return */
    size_t write;       /* how many bytes to write */
    int calls;          /* how often fill ran */
    size_t capacity;    /* the capacity it was given */
};

static int64_t zc_fill_fn(void *ctx, uint8_t *slot, size_t capacity) {
    struct zc_fill *f = ctx;
    f->calls++;
    f->capacity = capacity;
    size_t n = f->write < capacity ? f->write : capacity;
    for (size_t i = 0; i < n; i++) slot[i] = zc_byte(f->seq, i);
    return f->len;
}

struct zc_read {
    uint64_t seq;             /* pattern expected */
    int calls;
    size_t len;
    int data_null;
    int bad_bytes;            /* bytes that differ from the pattern */
    shmq_message_info info;
    uint8_t copy[4096];       /* what was seen in place, for a cross-check */
};

static void zc_read_fn(void *ctx, const uint8_t *data, size_t len, const shmq_message_info *info) {
    struct zc_read *r = ctx;
    r->calls++;
    r->len = len;
    r->data_null = data == NULL;
    r->info = *info;
    for (size_t i = 0; data != NULL && i < len; i++) {
        if (data[i] != zc_byte(r->seq, i)) r->bad_bytes++;
        if (i < sizeof r->copy) r->copy[i] = data[i];
    }
}

static void test_zerocopy_round_trip(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 1024);
    if (q == NULL) return;
    size_t lens[] = {1, 64, 1000, 1024, 0};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        struct zc_fill f = {k + 1, (int64_t)lens[k], lens[k], 0, 0};
        CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &f, 0, 0), SHMQ_OK);
        CHECK(f.calls == 1 && f.capacity == 1024);
        struct zc_read r = {.seq = k + 1};
        CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 0, 0), SHMQ_OK);
        CHECK(r.calls == 1 && r.len == lens[k] && r.bad_bytes == 0 && !r.data_null);
        CHECK(r.info.len == lens[k] && r.info.id == k && r.info.flags == 0);
        CHECK(r.info.timestamp_ns > 0 && r.info.timestamp_ns <= now_ns() + STAMP_SKEW_NS);
    }
    /* Cross-checks with the copying forms: in place -> copy, and copy -> in place. */
    struct zc_fill f = {77, 500, 500, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &f, -1, SHMQ_WAIT_SLICE), SHMQ_OK);
    uint8_t buf[1024];
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
    CHECK(len == 500);
    int same = 1;
    for (size_t i = 0; i < len; i++) same &= buf[i] == zc_byte(77, i);
    CHECK(same);
    for (size_t i = 0; i < 700; i++) buf[i] = zc_byte(78, i);
    CHECK_STATUS(shmq_send_message(q, 4242, 99, buf, 700, 0), SHMQ_OK);
    struct zc_read r = {.seq = 78};
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 50, SHMQ_WAIT_SLICE), SHMQ_OK);
    CHECK(r.calls == 1 && r.len == 700 && r.bad_bytes == 0 && memcmp(r.copy, buf, 700) == 0);
    CHECK(r.info.id == 4242 && r.info.timestamp_ns == 99);
    shmq_queue_stats st;
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(st.messages_sent == 7 && st.messages_received == 7 && st.corrupted == 0);
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

static void test_zerocopy_bad_fill(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 64);
    if (q == NULL) return;
    /* Too long: MESSAGE_TOO_LARGE, and the slot goes out poisoned. */
    struct zc_fill f = {1, 65, 64, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &f, 0, 0), SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK(f.calls == 1);
    CHECK_LAST_ERROR_HAS("65");
    CHECK_LAST_ERROR_HAS(name);
    /* Negative (a cancel): INVALID_ARGUMENT, poisoned too. */
    struct zc_fill neg = {2, -1, 10, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &neg, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(neg.calls == 1);
    CHECK_LAST_ERROR_HAS("cancelled");
    struct zc_fill huge = {2, INT64_MAX, 0, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &huge, 0, 0), SHMQ_ERR_MESSAGE_TOO_LARGE);
    struct zc_fill good = {3, 64, 64, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &good, 0, 0), SHMQ_OK);
    CHECK(shmq_len(q) == 4);
    /* Each poisoned slot costs one receive a CORRUPTED_DATA (read is not called); then the
     * good message comes through intact. */
    for (int i = 0; i < 3; i++) {
        struct zc_read r = {.seq = 3};
        CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 0, 0), SHMQ_ERR_CORRUPTED_DATA);
        CHECK(r.calls == 0);
    }
    struct zc_read r = {.seq = 3};
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 0, 0), SHMQ_OK);
    CHECK(r.calls == 1 && r.len == 64 && r.bad_bytes == 0);
    shmq_queue_stats st;
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    /* (messages_sent/received count queue positions, so the poisoned ones are included.) */
    CHECK(st.corrupted == 3 && st.messages_received == st.messages_sent);
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

static void test_zerocopy_arguments(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    struct zc_fill f = {1, 4, 4, 0, 0};
    struct zc_read r = {.seq = 1};
    CHECK_STATUS(shmq_send_in_place(NULL, zc_fill_fn, &f, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'q' is NULL");
    CHECK_STATUS(shmq_send_in_place(q, NULL, &f, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'fill' is NULL");
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &f, -2, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("timeout_ms -2");
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &f, 0, 2), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("unknown flags");
    CHECK(f.calls == 0 && shmq_len(q) == 0);
    CHECK_STATUS(shmq_receive_in_place(NULL, zc_read_fn, &r, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'q' is NULL");
    CHECK_STATUS(shmq_send(q, "abcd", 4, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive_in_place(q, NULL, &r, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("'read' is NULL");
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, -5, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 0, 8), SHMQ_ERR_INVALID_ARGUMENT);
    /* Nothing was dequeued by the refused calls. */
    CHECK(r.calls == 0 && shmq_len(q) == 1);
    size_t len = 0;
    char buf[16];
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
    CHECK(len == 4 && memcmp(buf, "abcd", 4) == 0);
    drop_queue(q, name);
}

static void test_zerocopy_timeouts_and_shutdown(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 1, 16);
    if (q == NULL) return;
    struct zc_read r = {.seq = 5};
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 0, 0), SHMQ_ERR_EMPTY);
    uint64_t start = monotonic_ms();
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 50, 0), SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - start >= 45);
    /* A slice of a longer wait: not counted in the statistics. */
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 20, SHMQ_WAIT_SLICE), SHMQ_ERR_TIMEOUT);
    CHECK(r.calls == 0);

    struct zc_fill f = {5, 16, 16, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &f, 0, 0), SHMQ_OK);
    struct zc_fill g = {6, 1, 1, 0, 0};
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &g, 0, 0), SHMQ_ERR_FULL);
    start = monotonic_ms();
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &g, 50, 0), SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - start >= 45);
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &g, 20, SHMQ_WAIT_SLICE), SHMQ_ERR_TIMEOUT);
    CHECK(g.calls == 0 && f.calls == 1);
    shmq_queue_stats st;
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(st.timeouts == 2 && st.send_full == 2);

    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    CHECK_STATUS(shmq_send_in_place(q, zc_fill_fn, &g, -1, 0), SHMQ_ERR_CLOSED);
    CHECK(g.calls == 0);
    /* The message left is delivered, then CLOSED even when waiting without limit. */
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, -1, 0), SHMQ_OK);
    CHECK(r.calls == 1 && r.len == 16 && r.bad_bytes == 0);
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, -1, 0), SHMQ_ERR_CLOSED);
    CHECK(r.calls == 1);
    drop_queue(q, name);
}

/* Another process writes ZC_COUNT messages in place (lengths and contents from their
 * sequence number); this one receives them in place and checks every byte. The queue is
 * small, so both sides wait for each other many times. */
#define ZC_COUNT 3000

static int zc_producer(const char *name) {
    shmq_queue *q = NULL;
    if (shmq_connect(name, &q) != SHMQ_OK) return 20;
    int rc = 0;
    for (uint64_t seq = 0; seq < ZC_COUNT && rc == 0; seq++) {
        size_t len = (size_t)(seq * 37u % 4097u);
        struct zc_fill f = {seq, (int64_t)len, len, 0, 0};
        if (shmq_send_in_place(q, zc_fill_fn, &f, 10000, 0) != SHMQ_OK || f.calls != 1) rc = 21;
    }
    shmq_close(q);
    return rc;
}

static void test_zerocopy_across_processes(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 4096);
    if (q == NULL) return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(zc_producer(name));
    int bad = 0;
    for (uint64_t seq = 0; seq < ZC_COUNT; seq++) {
        struct zc_read r = {.seq = seq};
        int status = shmq_receive_in_place(q, zc_read_fn, &r, 10000, 0);
        size_t want = (size_t)(seq * 37u % 4097u);
        if (status != SHMQ_OK || r.calls != 1 || r.len != want || r.bad_bytes != 0 ||
            r.info.id != seq) {
            fprintf(stderr, "[%s] message %llu: status %d, len %zu, %d bad bytes, id %llu\n",
                    current_test, (unsigned long long)seq, status, r.len, r.bad_bytes,
                    (unsigned long long)r.info.id);
            bad++;
            break;
        }
    }
    CHECK(bad == 0);
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

/* ----- gather sends: shmq_send_parts ----------------------------------------------------- */

#define PARTS_COUNT 60u
#define PARTS_SIZE 5000u

/* Message `seq` of the gather tests: its length, and where its parts are cut (`cuts[0..n]`,
 * ascending, each at most the length): 0 to 7 parts (empty ones too), on and off 8-, 64- and
 * 256-byte boundaries; every fourth message is under 200 bytes, and message 59 fills the
 * message size exactly. */
static size_t parts_len(uint64_t seq) {
    if (seq == PARTS_COUNT - 1) return PARTS_SIZE;
    return seq % 4u == 1u ? (size_t)(seq * 37u % 200u) /* small: joined before sending */
                          : (size_t)(seq * 977u % (PARTS_SIZE + 1u));
}

static size_t parts_cuts(uint64_t seq, size_t cuts[8]) {
    size_t len = parts_len(seq), n = (size_t)(seq % 8u);
    for (size_t i = 0; i < n; i++) {
        size_t c = (size_t)((seq * 61u + i * 263u) % (len + 1u));
        size_t j = i;
        while (j > 0 && cuts[j - 1] > c) { /* insertion keeps them ascending */
            cuts[j] = cuts[j - 1];
            j--;
        }
        cuts[j] = c;
    }
    return n;
}

/* Sends message `seq` as its parts, cut out of `whole` (the message's bytes). */
static int send_as_parts(shmq_queue *q, uint64_t seq, const uint8_t *whole, int timeout_ms) {
    size_t cuts[8], n = parts_cuts(seq, cuts), len = parts_len(seq);
    const void *parts[9];
    size_t lens[9], from = 0;
    size_t count = 0;
    if (len == 0 && n == 0) return shmq_send_parts(q, NULL, NULL, 0, timeout_ms, 0);
    for (size_t i = 0; i <= n; i++) {
        size_t to = i < n ? cuts[i] : len;
        lens[count] = to - from;
        parts[count] = to == from ? NULL : whole + from; /* an empty part may be NULL */
        count++;
        from = to;
    }
    return shmq_send_parts(q, parts, lens, count, timeout_ms, 0);
}

static int parts_producer(const char *name) {
    shmq_queue *q = NULL;
    if (shmq_connect(name, &q) != SHMQ_OK) return 10;
    static uint8_t whole[PARTS_SIZE];
    for (uint64_t seq = 0; seq < PARTS_COUNT; seq++) {
        for (size_t i = 0; i < parts_len(seq); i++) whole[i] = zc_byte(seq, i);
        if (send_as_parts(q, seq, whole, 10000) != SHMQ_OK) return 11;
    }
    shmq_close(q);
    return 0;
}

/* Another process sends every message in parts; each arrives joined, verified, in order. */
static void send_parts_across_processes(uint32_t flags) {
    char name[96];
    shmq_queue *q = make_queue_with(name, sizeof name, 8, PARTS_SIZE, flags);
    if (q == NULL) return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(parts_producer(name));
    static uint8_t buf[PARTS_SIZE];
    int bad = 0;
    for (uint64_t seq = 0; seq < PARTS_COUNT && bad == 0; seq++) {
        shmq_message_info info;
        int status = shmq_receive_message(q, buf, sizeof buf, &info, 10000);
        for (size_t i = 0; status == SHMQ_OK && i < info.len && i < parts_len(seq); i++)
            bad += buf[i] != zc_byte(seq, i);
        if (status != SHMQ_OK || info.len != parts_len(seq) || info.id != seq || bad != 0) {
            fprintf(stderr, "[%s] message %llu: status %d, len %zu, %d bad bytes\n",
                    current_test, (unsigned long long)seq, status, (size_t)info.len, bad);
            bad++;
        }
    }
    if (bad != 0) kill(pid, SIGKILL); /* it may be blocked on a full queue */
    CHECK(bad == 0);
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(bad != 0 || (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0));
    shmq_queue_stats stats = {.struct_size = sizeof stats};
    CHECK_STATUS(shmq_stats(q, &stats), SHMQ_OK);
    CHECK(stats.messages_received == PARTS_COUNT && stats.checksum_failures == 0);
    drop_queue(q, name);
}

static void test_send_parts_across_processes(void) { send_parts_across_processes(0); }

static void test_send_parts_across_processes_spsc(void) {
    send_parts_across_processes(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER);
}

static void test_send_parts_across_processes_no_checksum(void) {
    send_parts_across_processes(SHMQ_CREATE_NO_CHECKSUM);
}

static void test_send_parts_arguments(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 2, 16);
    if (q == NULL) return;
    uint8_t ten[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    uint8_t seven[7] = {2, 2, 2, 2, 2, 2, 2};
    const void *parts[3] = {ten, NULL, seven};
    size_t lens[3] = {10, 1, 7};
    CHECK_STATUS(shmq_send_parts(NULL, parts, lens, 1, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send_parts(q, NULL, lens, 1, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("parts");
    CHECK_STATUS(shmq_send_parts(q, parts, NULL, 1, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("lens");
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 3, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("parts[1]");
    lens[1] = 0; /* a NULL part of length 0 is allowed; 17 bytes are one too many */
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 3, 0, 0), SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK_LAST_ERROR_HAS("nothing was sent");
    /* Lengths whose sum wraps around are refused, not wrapped (no part is read). */
    size_t huge[2] = {SIZE_MAX, 2};
    CHECK_STATUS(shmq_send_parts(q, parts, huge, 2, 0, 0), SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK(shmq_len(q) == 0);
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 1, -7, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 1, 0, 99), SHMQ_ERR_INVALID_ARGUMENT);

    /* 10 + 0 + 6 bytes: exactly the message size; then an empty message, then full. */
    lens[2] = 6;
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 3, 0, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send_parts(q, NULL, NULL, 0, 0, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 1, 0, 0), SHMQ_ERR_FULL);
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 1, 20, 0), SHMQ_ERR_TIMEOUT);
    uint8_t buf[16];
    shmq_message_info info;
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, 0), SHMQ_OK);
    CHECK(info.len == 16 && info.id == 0 && memcmp(buf, ten, 10) == 0 &&
          memcmp(buf + 10, seven, 6) == 0);
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, 0), SHMQ_OK);
    CHECK(info.len == 0 && info.id == 1);
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    CHECK_STATUS(shmq_send_parts(q, parts, lens, 1, 0, 0), SHMQ_ERR_CLOSED);
    drop_queue(q, name);
}

/* ----- batches ---------------------------------------------------------------------------- */

/* Message `seq` of the batch tests: `batch_len(seq)` bytes of zc_byte(seq, i). */
static size_t batch_len(uint64_t seq) { return (size_t)(seq * 13u % 65u); }

static void batch_fill(uint8_t *dst, uint64_t seq) {
    for (size_t i = 0; i < batch_len(seq); i++) dst[i] = zc_byte(seq, i);
}

/* Counts the bytes of `data` (`len` long) that are not message `seq`'s. */
static int batch_bad_bytes(const uint8_t *data, size_t len, uint64_t seq) {
    if (len != batch_len(seq)) return 1;
    int bad = 0;
    for (size_t i = 0; i < len; i++) bad += data[i] != zc_byte(seq, i);
    return bad;
}

static void test_batch_round_trip(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 64);
    if (q == NULL) return;
    uint8_t data[12][64];
    const void *msgs[12];
    size_t lens[12];
    for (uint64_t i = 0; i < 12; i++) {
        batch_fill(data[i], i);
        lens[i] = batch_len(i);
        msgs[i] = lens[i] == 0 ? NULL : data[i]; /* message 0 is empty: NULL is allowed */
    }
    size_t sent = 777;
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 0, &sent, 0, 0), SHMQ_OK);
    CHECK(sent == 0);
    uint64_t before = now_ns();
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 5, &sent, 0, 0), SHMQ_OK);
    uint64_t after = now_ns();
    CHECK(sent == 5 && shmq_len(q) == 5);

    uint8_t buf[8 * 64];
    shmq_message_info infos[8];
    size_t count = 0;
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 8, &count, 0, 0), SHMQ_OK);
    CHECK(count == 5);
    for (size_t i = 0; i < count && i < 5; i++) {
        CHECK(infos[i].id == i); /* positions: the queue is fresh */
        CHECK(infos[i].len == batch_len(i) && infos[i].flags == 0);
        CHECK(infos[i].timestamp_ns == infos[0].timestamp_ns); /* one stamp per batch */
        CHECK(batch_bad_bytes(buf + i * 64, infos[i].len, i) == 0);
    }
    CHECK(infos[0].timestamp_ns >= before - 1000000 && infos[0].timestamp_ns <= after + 1000000);

    /* Twelve into eight free slots: as many as fit, in order, without waiting. */
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 12, &sent, 0, 0), SHMQ_OK);
    CHECK(sent == 8 && shmq_len(q) == 8);
    /* The rest, from where it stopped: nothing fits now. */
    size_t untouched = 777;
    CHECK_STATUS(shmq_send_batch(q, msgs + 8, lens + 8, 4, &untouched, 0, 0), SHMQ_ERR_FULL);
    CHECK(untouched == 777);
    /* At most max_messages, and at most what buf holds. */
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 3, &count, 0, 0), SHMQ_OK);
    CHECK(count == 3);
    for (size_t i = 0; i < count && i < 3; i++)
        CHECK(batch_bad_bytes(buf + i * 64, infos[i].len, i) == 0);
    CHECK_STATUS(shmq_receive_batch(q, buf, 2 * 64 + 10, infos, 8, &count, 0, 0), SHMQ_OK);
    CHECK(count == 2);
    for (size_t i = 0; i < count && i < 2; i++)
        CHECK(batch_bad_bytes(buf + i * 64, infos[i].len, 3 + i) == 0);
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, SHMQ_RECEIVE_BATCH_MAX, &count,
                                    0, 0),
                 SHMQ_OK);
    CHECK(count == 3);
    for (size_t i = 0; i < count && i < 3; i++)
        CHECK(batch_bad_bytes(buf + i * 64, infos[i].len, 5 + i) == 0);
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

static void test_batch_arguments(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 64);
    if (q == NULL) return;
    uint8_t small[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t big[65] = {0};
    const void *msgs[3] = {small, NULL, small};
    size_t lens[3] = {8, 8, 8};
    size_t sent = 777;
    CHECK_STATUS(shmq_send_batch(NULL, msgs, lens, 1, &sent, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 1, NULL, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("out_sent");
    CHECK_STATUS(shmq_send_batch(q, NULL, lens, 1, &sent, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("msgs");
    CHECK_STATUS(shmq_send_batch(q, msgs, NULL, 1, &sent, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("lens");
    /* A NULL message of non-zero length, or one too large: nothing of the batch is sent. */
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 3, &sent, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("msgs[1]");
    msgs[1] = big;
    lens[1] = sizeof big;
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 3, &sent, 0, 0), SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK_LAST_ERROR_HAS("message 1 is 65 bytes");
    CHECK(sent == 777 && shmq_len(q) == 0);
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 1, &sent, -7, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 1, &sent, 0, 99), SHMQ_ERR_INVALID_ARGUMENT);

    uint8_t buf[4 * 64];
    shmq_message_info infos[4];
    size_t count = 777;
    CHECK_STATUS(shmq_receive_batch(NULL, buf, sizeof buf, infos, 4, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive_batch(q, NULL, sizeof buf, infos, 4, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("buf");
    /* NULL with length 0, as for every data pointer: too small for a message. */
    CHECK_STATUS(shmq_receive_batch(q, NULL, 0, infos, 4, &count, 0, 0),
                 SHMQ_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, NULL, 4, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("infos");
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 4, NULL, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("out_count");
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 0, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive_batch(q, buf, 63, infos, 4, &count, 0, 0),
                 SHMQ_ERR_BUFFER_TOO_SMALL);
    /* Empty: at once, or after the timeout; the count is left alone. */
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 4, &count, 0, 0), SHMQ_ERR_EMPTY);
    uint64_t t0 = monotonic_ms();
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 4, &count, 50, 0),
                 SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - t0 >= 45);
    CHECK(count == 777);
    /* Full: at once, or after the timeout. */
    lens[1] = 8;
    msgs[1] = small;
    const void *four[4] = {small, small, small, small};
    size_t four_lens[4] = {8, 8, 8, 8};
    CHECK_STATUS(shmq_send_batch(q, four, four_lens, 4, &sent, 0, 0), SHMQ_OK);
    CHECK(sent == 4);
    sent = 777;
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 1, &sent, 0, 0), SHMQ_ERR_FULL);
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 1, &sent, 50, 0), SHMQ_ERR_TIMEOUT);
    CHECK(sent == 777);
    /* Shut down: sends are refused, receives drain, then SHMQ_ERR_CLOSED. */
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, 1, &sent, 0, 0), SHMQ_ERR_CLOSED);
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 4, &count, -1, 0), SHMQ_OK);
    CHECK(count == 4 && infos[3].len == 8 && memcmp(buf + 3 * 64, small, 8) == 0);
    CHECK_STATUS(shmq_receive_batch(q, buf, sizeof buf, infos, 4, &count, -1, 0),
                 SHMQ_ERR_CLOSED);
    drop_queue(q, name);
}

/* Another process sends BATCH_COUNT messages in batches of 1..7 (lengths and contents from
 * their sequence number); this one receives them in batches of up to 16 and checks every byte
 * and the order. The queue is small, so both sides wait for each other many times. */
#define BATCH_COUNT 5000

/* What a batch fill callback (shmq_send_batch_in_place) does: message `first + index` of the
 * batch pattern, each call checked to come in order. */
struct bsip_fill {
    uint64_t first;
    size_t calls;
    size_t refuse_at;  /* return refuse_len from this call instead (0: never) */
    int64_t refuse_len;
    size_t exit_at;    /* _exit inside this call, as a sender killed mid-fill (0: never) */
    int out_of_order;  /* calls whose index was not the number of calls before them */
};

static int64_t bsip_fill_fn(void *ctx, size_t index, uint8_t *slot, size_t capacity) {
    struct bsip_fill *f = ctx;
    if (index != f->calls || slot == NULL || capacity != 64) f->out_of_order++;
    f->calls++;
    if (f->exit_at != 0 && f->calls == f->exit_at) _exit(0);
    if (f->refuse_at != 0 && f->calls == f->refuse_at) return f->refuse_len;
    batch_fill(slot, f->first + index);
    return (int64_t)batch_len(f->first + index);
}

/* Sends the BATCH_COUNT messages with shmq_send_batch, or written in place with
 * shmq_send_batch_in_place. */
static int batch_producer(const char *name, int in_place) {
    shmq_queue *q = NULL;
    if (shmq_connect(name, &q) != SHMQ_OK) return 20;
    static uint8_t data[7][64];
    const void *msgs[7];
    size_t lens[7];
    uint64_t seq = 0;
    int rc = 0;
    while (seq < BATCH_COUNT && rc == 0) {
        size_t n = 1 + (size_t)(seq % 7u);
        if (n > BATCH_COUNT - seq) n = (size_t)(BATCH_COUNT - seq);
        size_t sent = 0;
        if (in_place) {
            struct bsip_fill f = {.first = seq};
            if (shmq_send_batch_in_place(q, bsip_fill_fn, &f, n, &sent, 10000, 0) != SHMQ_OK ||
                sent == 0 || sent > n || f.calls != sent || f.out_of_order != 0)
                rc = 22;
            seq += sent;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            batch_fill(data[i], seq + i);
            lens[i] = batch_len(seq + i);
            msgs[i] = data[i];
        }
        if (shmq_send_batch(q, msgs, lens, n, &sent, 10000, 0) != SHMQ_OK || sent == 0 ||
            sent > n)
            rc = 21;
        seq += sent;
    }
    shmq_close(q);
    return rc;
}

/* What a batch read callback saw. Message `next_seq` is expected next (id and content, as
 * from batch_fill); every message seen is checked. */
struct bip_read {
    uint64_t next_seq;
    size_t calls;
    size_t stop_at;      /* return non-zero from this call (0: never) */
    size_t exit_at;      /* _exit inside this call, as a receiver killed mid-read (0: never) */
    int bad;             /* messages with a wrong id, length or byte, or a NULL pointer */
    uint32_t flags[16];  /* info->flags of the first 16 calls */
};

static int bip_read_fn(void *ctx, const uint8_t *data, size_t len,
                       const shmq_message_info *info) {
    struct bip_read *r = ctx;
    if (data == NULL || info->len != len || info->id != r->next_seq ||
        batch_bad_bytes(data, len, r->next_seq) != 0)
        r->bad++;
    if (r->calls < 16) r->flags[r->calls] = info->flags;
    r->calls++;
    r->next_seq++;
    if (r->exit_at != 0 && r->calls == r->exit_at) _exit(r->bad == 0 ? 0 : 31);
    return r->stop_at != 0 && r->calls == r->stop_at;
}

/* How batch_across_processes moves messages: BATCH_RECV_IN_PLACE receives with
 * shmq_receive_batch_in_place (else shmq_receive_batch), BATCH_SEND_IN_PLACE sends with
 * shmq_send_batch_in_place (else shmq_send_batch). */
enum { BATCH_RECV_IN_PLACE = 1, BATCH_SEND_IN_PLACE = 2 };

/* Receives the messages of batch_producer in batches of up to 16, checking every byte and
 * the order. */
static void batch_across_processes(uint32_t create_flags, int modes) {
    int in_place = (modes & BATCH_RECV_IN_PLACE) != 0;
    char name[96];
    shmq_queue *q = make_queue_with(name, sizeof name, 8, 64, create_flags);
    if (q == NULL) return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(batch_producer(name, (modes & BATCH_SEND_IN_PLACE) != 0));
    static uint8_t buf[16 * 64];
    shmq_message_info infos[16];
    struct bip_read r = {0}; /* in place: the callback checks each message */
    uint64_t seq = 0;
    int bad = 0;
    while (seq < BATCH_COUNT && bad == 0) {
        size_t count = 0;
        int status =
            in_place ? shmq_receive_batch_in_place(q, bip_read_fn, &r, 16, &count, 10000, 0)
                     : shmq_receive_batch(q, buf, sizeof buf, infos, 16, &count, 10000, 0);
        if (status != SHMQ_OK || count == 0 || count > 16) {
            fprintf(stderr, "[%s] at %llu: status %d, count %zu\n", current_test,
                    (unsigned long long)seq, status, count);
            bad++;
            break;
        }
        for (size_t i = 0; i < count; i++, seq++) {
            if (!in_place &&
                (infos[i].id != seq || batch_bad_bytes(buf + i * 64, infos[i].len, seq) != 0)) {
                fprintf(stderr, "[%s] message %llu: id %llu, len %zu\n", current_test,
                        (unsigned long long)seq, (unsigned long long)infos[i].id, infos[i].len);
                bad++;
                break;
            }
        }
        if (in_place && (r.bad != 0 || r.next_seq != seq)) {
            fprintf(stderr, "[%s] up to %llu: %d bad, %llu read\n", current_test,
                    (unsigned long long)seq, r.bad, (unsigned long long)r.next_seq);
            bad++;
        }
    }
    CHECK(bad == 0 && seq == BATCH_COUNT);
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

static void test_batch_across_processes(void) { batch_across_processes(0, 0); }

static void test_batch_across_processes_spsc(void) {
    batch_across_processes(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER, 0);
}

static void test_batch_in_place_across_processes(void) {
    batch_across_processes(0, BATCH_RECV_IN_PLACE);
}

static void test_batch_in_place_across_processes_spsc(void) {
    batch_across_processes(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER, BATCH_RECV_IN_PLACE);
}

static void test_batch_send_in_place_across_processes(void) {
    batch_across_processes(0, BATCH_SEND_IN_PLACE);
}

static void test_batch_send_in_place_across_processes_spsc(void) {
    batch_across_processes(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER,
                           BATCH_SEND_IN_PLACE | BATCH_RECV_IN_PLACE);
}

/* ----- zero-copy batches: shmq_receive_batch_in_place ------------------------------------ */

/* The queue's statistics (zeros, and a failed check, if they cannot be read). */
static shmq_queue_stats stats_of(shmq_queue *q) {
    shmq_queue_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    return st;
}

/* Sends messages first..first+n of the batch pattern at once; returns how many were sent. */
static size_t bip_send(shmq_queue *q, uint64_t first, size_t n) {
    static uint8_t data[16][64];
    const void *msgs[16];
    size_t lens[16];
    for (size_t i = 0; i < n && i < 16; i++) {
        batch_fill(data[i], first + i);
        lens[i] = batch_len(first + i);
        msgs[i] = data[i];
    }
    size_t sent = 0;
    CHECK_STATUS(shmq_send_batch(q, msgs, lens, n, &sent, 0, 0), SHMQ_OK);
    return sent;
}

static void test_batch_in_place_round_trip(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 16, 64);
    if (q == NULL) return;
    CHECK(bip_send(q, 0, 12) == 12);
    /* At most max_messages. */
    struct bip_read r = {0};
    size_t count = 777;
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 5, &count, 0, 0), SHMQ_OK);
    CHECK(count == 5 && r.calls == 5 && r.bad == 0 && shmq_len(q) == 7);
    /* A callback returning non-zero ends the batch after its message. */
    r.calls = 0;
    r.stop_at = 3;
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 64, &count, 0, 0), SHMQ_OK);
    CHECK(count == 3 && r.calls == 3 && r.bad == 0 && shmq_len(q) == 4);
    /* What is queued, even when max_messages is far above it. */
    r.calls = 0;
    r.stop_at = 0;
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, SIZE_MAX, &count, 1000, 0),
                 SHMQ_OK);
    CHECK(count == 4 && r.calls == 4 && r.bad == 0 && r.next_seq == 12 && shmq_len(q) == 0);
    for (size_t i = 0; i < 4; i++) CHECK(r.flags[i] == 0);
    /* Empty: at once or after the timeout, the count left alone, the callback never called. */
    r.calls = 0;
    count = 777;
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, 0, 0),
                 SHMQ_ERR_EMPTY);
    uint64_t t0 = monotonic_ms();
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, 50, SHMQ_WAIT_SLICE),
                 SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - t0 >= 45);
    CHECK(count == 777 && r.calls == 0);
    /* The statistics count what the batches took. */
    CHECK(stats_of(q).messages_received == 12);
    drop_queue(q, name);
}

static int64_t bip_cancel_fill(void *ctx, uint8_t *slot, size_t capacity) {
    (void)ctx;
    (void)slot;
    (void)capacity;
    return -1; /* cancelled: the slot goes through the queue poisoned */
}

static void test_batch_in_place_errors(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 64);
    if (q == NULL) return;
    struct bip_read r = {0};
    size_t count = 777;
    CHECK_STATUS(shmq_receive_batch_in_place(NULL, bip_read_fn, &r, 4, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive_batch_in_place(q, NULL, &r, 4, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("read");
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 4, NULL, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("out_count");
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 0, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("max_messages");
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 4, &count, -3, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 4, &count, 0, 4),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(count == 777 && r.calls == 0);

    /* Two good messages, a poisoned one, one good: the batch ends at the poisoned one with
     * SHMQ_ERR_CORRUPTED_DATA and the count of those read before it; the next goes on. */
    CHECK(bip_send(q, 0, 2) == 2);
    CHECK_STATUS(shmq_send_in_place(q, bip_cancel_fill, NULL, 0, 0), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(bip_send(q, 3, 1) == 1);
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, 0, 0),
                 SHMQ_ERR_CORRUPTED_DATA);
    CHECK(count == 2 && r.calls == 2 && r.bad == 0);
    r.next_seq = 3;
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, 0, 0), SHMQ_OK);
    CHECK(count == 1 && r.calls == 3 && r.bad == 0 && shmq_len(q) == 0);

    /* Shut down: what is queued drains, then SHMQ_ERR_CLOSED, even when waiting for ever. */
    CHECK(bip_send(q, 4, 2) == 2);
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    r.calls = 0;
    r.next_seq = 4;
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, -1, 0), SHMQ_OK);
    CHECK(count == 2 && r.calls == 2 && r.bad == 0);
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, -1, 0),
                 SHMQ_ERR_CLOSED);
    drop_queue(q, name);
}

/* In a child: a batch read in place whose callback exits in its third call (0 if the two
 * before it were as sent). */
static int child_dies_in_third_read(const char *name) {
    shmq_queue *c = NULL;
    if (shmq_connect(name, &c) != SHMQ_OK) return 20;
    struct bip_read r = {.exit_at = 3};
    size_t count = 0;
    shmq_receive_batch_in_place(c, bip_read_fn, &r, 16, &count, 0, 0);
    return 30; /* not reached: the callback exits on the third message */
}

/* A receiver dies inside the read callback of its third message: the two before it were
 * released and are not delivered again; the third is, flagged SHMQ_MESSAGE_REDELIVERED, and
 * the rest follow unflagged. */
static void batch_in_place_receiver_dies(uint32_t create_flags) {
    char name[96];
    shmq_queue *q = make_queue_with(name, sizeof name, 16, 64, create_flags);
    if (q == NULL) return;
    CHECK(bip_send(q, 0, 6) == 6);
    CHECK(in_child(child_dies_in_third_read, name) == 0);
    /* Messages 2..5 exactly once each, in any order; 2 alone flagged. */
    int seen[6] = {0};
    int received = 0, bad = 0;
    while (received < 4) {
        shmq_message_info info;
        uint8_t buf[64];
        int status = shmq_receive_message(q, buf, sizeof buf, &info, 1000);
        if (status != SHMQ_OK) {
            fprintf(stderr, "[%s] after %d: status %d\n", current_test, received, status);
            bad++;
            break;
        }
        received++;
        uint64_t id = info.id;
        int flagged = (info.flags & SHMQ_MESSAGE_REDELIVERED) != 0;
        if (id < 2 || id > 5 || seen[id]++ || flagged != (id == 2) ||
            batch_bad_bytes(buf, info.len, id) != 0) {
            fprintf(stderr, "[%s] message id %llu, flags %u, len %zu\n", current_test,
                    (unsigned long long)id, info.flags, info.len);
            bad++;
        }
    }
    CHECK(bad == 0 && received == 4);
    CHECK(shmq_len(q) == 0);
    CHECK(stats_of(q).redelivered == 1);
    drop_queue(q, name);
}

static void test_batch_in_place_receiver_dies(void) { batch_in_place_receiver_dies(0); }

static void test_batch_in_place_receiver_dies_spsc(void) {
    batch_in_place_receiver_dies(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER);
}

/* ----- zero-copy batches: shmq_send_batch_in_place ---------------------------------------- */

/* Receives one message and checks it is message `seq` of the batch pattern. */
static void expect_batch_message_within(shmq_queue *q, uint64_t seq, int timeout_ms) {
    uint8_t buf[64];
    shmq_message_info info;
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, timeout_ms), SHMQ_OK);
    CHECK(batch_bad_bytes(buf, info.len, seq) == 0);
}

static void expect_batch_message(shmq_queue *q, uint64_t seq) {
    expect_batch_message_within(q, seq, 0);
}

static void test_batch_send_in_place_round_trip(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 64);
    if (q == NULL) return;
    /* Nothing to send: OK, 0, the callback never called. */
    struct bsip_fill f = {0};
    size_t count = 777;
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 0, &count, 0, 0), SHMQ_OK);
    CHECK(count == 0 && f.calls == 0);
    /* As many as fit, the callback called once for each, in order. */
    CHECK(bip_send(q, 0, 3) == 3);
    f.first = 3;
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 12, &count, 0, 0), SHMQ_OK);
    CHECK(count == 5 && f.calls == 5 && f.out_of_order == 0 && shmq_len(q) == 8);
    /* Full: at once or after the timeout, the count left alone, the callback never called. */
    count = 777;
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 2, &count, 0, 0), SHMQ_ERR_FULL);
    uint64_t t0 = monotonic_ms();
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 2, &count, 50, SHMQ_WAIT_SLICE),
                 SHMQ_ERR_TIMEOUT);
    CHECK(monotonic_ms() - t0 >= 45);
    CHECK(count == 777 && f.calls == 5);
    /* Every byte arrives, read by either receive. */
    struct bip_read r = {0};
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, 0, 0), SHMQ_OK);
    CHECK(count == 8 && r.bad == 0);
    /* No upper limit on count: what fits (messages 8..15, at positions 8..15). */
    f = (struct bsip_fill){.first = 8};
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, SIZE_MAX, &count, 0, 0), SHMQ_OK);
    CHECK(count == 8 && f.calls == 8 && f.out_of_order == 0 && shmq_len(q) == 8);
    r = (struct bip_read){.next_seq = 8};
    CHECK_STATUS(shmq_receive_batch_in_place(q, bip_read_fn, &r, 8, &count, 0, 0), SHMQ_OK);
    CHECK(count == 8 && r.bad == 0);
    shmq_queue_stats st = stats_of(q);
    CHECK(st.messages_sent == 16 && st.messages_received == 16);
    CHECK(st.bytes_sent == st.bytes_received && st.corrupted == 0);
    drop_queue(q, name);
}

static void test_batch_send_in_place_errors(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 64);
    if (q == NULL) return;
    struct bsip_fill f = {0};
    size_t count = 777;
    CHECK_STATUS(shmq_send_batch_in_place(NULL, bsip_fill_fn, &f, 2, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send_batch_in_place(q, NULL, &f, 2, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("fill");
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 2, NULL, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("out_count");
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 2, &count, -3, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 2, &count, 0, 4),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(count == 777 && f.calls == 0 && shmq_len(q) == 0);

    /* A cancel (negative) in the second call: one sent, the second slot poisoned, no fill
     * called after it. The batch had claimed the four positions (the first alone, then a run
     * of three with one tail move): the last two are given up. A length beyond the capacity
     * in the third call: two more sent, the third slot poisoned, the fourth given up. */
    f = (struct bsip_fill){.first = 0, .refuse_at = 2, .refuse_len = -1};
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 4, &count, 0, 0),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("for message 1 (cancelled)");
    CHECK(count == 1 && f.calls == 2 && shmq_len(q) == 4);
    f = (struct bsip_fill){.first = 1, .refuse_at = 3, .refuse_len = 65};
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 4, &count, 0, 0),
                 SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK_LAST_ERROR_HAS("fill returned length 65 for message 2");
    CHECK(count == 2 && f.calls == 3 && f.out_of_order == 0 && shmq_len(q) == 8);
    /* Message 0, a poisoned slot, messages 1 and 2, a poisoned slot: each poisoned one is
     * dropped by one receive, the positions given up are skipped without a word (by receives
     * that do not wait), and the queue goes on. */
    uint8_t buf[64];
    size_t len = 0;
    expect_batch_message(q, 0);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_CORRUPTED_DATA);
    expect_batch_message(q, 1);
    expect_batch_message(q, 2);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_CORRUPTED_DATA);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_EMPTY);
    CHECK(shmq_len(q) == 0);
    CHECK(stats_of(q).corrupted == 2 && stats_of(q).abandoned == 3);

    /* Shut down: SHMQ_ERR_CLOSED, the callback never called. */
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    f = (struct bsip_fill){0};
    CHECK_STATUS(shmq_send_batch_in_place(q, bsip_fill_fn, &f, 2, &count, -1, 0),
                 SHMQ_ERR_CLOSED);
    CHECK(f.calls == 0);
    drop_queue(q, name);
}

/* In a child: a batch of 5 written in place whose callback exits in its third call. */
static int child_dies_in_third_fill(const char *name) {
    shmq_queue *c = NULL;
    if (shmq_connect(name, &c) != SHMQ_OK) return 20;
    struct bsip_fill f = {.exit_at = 3};
    size_t count = 0;
    shmq_send_batch_in_place(c, bsip_fill_fn, &f, 5, &count, 0, 0);
    return 30; /* not reached: the callback exits in its third call */
}

/* A sender dies inside the fill callback of its third message: the two before it are
 * delivered, and the queue goes on (its position, and on a multi-producer queue the two its
 * run had claimed after it, are skipped once the death is seen; on a single-producer queue
 * the position is written again by the next sender). */
static void batch_send_in_place_sender_dies(uint32_t create_flags) {
    char name[96];
    shmq_queue *q = make_queue_with(name, sizeof name, 16, 64, create_flags);
    if (q == NULL) return;
    CHECK(in_child(child_dies_in_third_fill, name) == 0);
    CHECK(bip_send(q, 7, 1) == 1);
    expect_batch_message(q, 0);
    expect_batch_message(q, 1);
    expect_batch_message_within(q, 7, 10000);
    uint8_t buf[64];
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_EMPTY);
    CHECK(stats_of(q).abandoned ==
          ((create_flags & SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER) ? 0u : 3u));
    drop_queue(q, name);
}

static void test_batch_send_in_place_sender_dies(void) { batch_send_in_place_sender_dies(0); }

static void test_batch_send_in_place_sender_dies_spsc(void) {
    batch_send_in_place_sender_dies(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER);
}

/* ----- single-producer/single-consumer queues --------------------------------------------- */

/* Creates a single-producer/single-consumer queue; NULL on failure. */
static shmq_queue *make_spsc_queue(char *name, size_t name_len, uint32_t cap, uint32_t size) {
    return make_queue_with(name, name_len, cap, size, SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER);
}

/* Receives one message on `q` at once and checks that it is `want`. */
static void expect_message(shmq_queue *q, const char *want) {
    char buf[64];
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_OK);
    CHECK(len == strlen(want) && memcmp(buf, want, len) == 0);
}

static void test_spsc_flag_and_getter(void) {
    char name[96], plain_name[96];
    shmq_queue *q = make_spsc_queue(name, sizeof name, 4, 32);
    shmq_queue *plain = make_queue(plain_name, sizeof plain_name, 4, 32);
    if (q == NULL || plain == NULL) return;
    CHECK(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER == 8u);
    CHECK(shmq_is_single_producer_single_consumer(q) == 1);
    CHECK(shmq_is_single_producer_single_consumer(plain) == 0);
    /* A connected handle sees the mode the creator chose. */
    shmq_queue *other = NULL;
    CHECK_STATUS(shmq_connect(name, &other), SHMQ_OK);
    CHECK(other != NULL && shmq_is_single_producer_single_consumer(other) == 1);
    shmq_close(other);

    /* OPEN_EXISTING connects only to a queue of the same kind. */
    shmq_queue *again = NULL;
    CHECK_STATUS(shmq_create_with(name, 4, 32, 0, SHMQ_CREATE_OPEN_EXISTING, &again),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_LAST_ERROR_HAS("single-producer/single-consumer");
    CHECK(again == NULL);
    CHECK_STATUS(shmq_create_with(plain_name, 4, 32, 0,
                                  SHMQ_CREATE_OPEN_EXISTING |
                                      SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER,
                                  &again),
                 SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(again == NULL);
    CHECK_STATUS(shmq_create_with(name, 4, 32, 0,
                                  SHMQ_CREATE_OPEN_EXISTING |
                                      SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER,
                                  &again),
                 SHMQ_OK);
    CHECK(again != NULL && shmq_is_single_producer_single_consumer(again) == 1);
    shmq_close(again);

    /* REPLACE with the flag turns a default queue into a single-producer one. */
    shmq_queue *fresh = NULL;
    CHECK_STATUS(shmq_create_with(plain_name, 4, 32, 0,
                                  SHMQ_CREATE_REPLACE | SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER,
                                  &fresh),
                 SHMQ_OK);
    CHECK(fresh != NULL && shmq_is_single_producer_single_consumer(fresh) == 1);
    CHECK(shmq_is_single_producer_single_consumer(plain) == 0); /* the old one is unchanged */
    shmq_close(plain);

    /* One handle may hold both roles: messages come back in order, with their metadata. */
    CHECK_STATUS(shmq_send(q, "one", 3, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send_message(q, 77, 88, "two", 3, -1), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "three", 5, 1000), SHMQ_OK);
    CHECK(shmq_len(q) == 3);
    expect_message(q, "one");
    char buf[32];
    shmq_message_info info;
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, 0), SHMQ_OK);
    CHECK(info.id == 77 && info.timestamp_ns == 88 && info.len == 3 && info.flags == 0);
    expect_message(q, "three");
    /* Full, empty and timeouts behave as on any queue. */
    for (int i = 0; i < 4; i++) CHECK_STATUS(shmq_send(q, "f", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "f", 1, 0), SHMQ_ERR_FULL);
    CHECK_STATUS(shmq_send(q, "f", 1, 20), SHMQ_ERR_TIMEOUT);
    for (int i = 0; i < 4; i++) expect_message(q, "f");
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_EMPTY);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 20), SHMQ_ERR_TIMEOUT);
    /* Shutdown and drain. */
    CHECK_STATUS(shmq_send(q, "last", 4, 0), SHMQ_OK);
    CHECK_STATUS(shmq_shutdown(q), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "late", 4, 0), SHMQ_ERR_CLOSED);
    expect_message(q, "last");
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, -1), SHMQ_ERR_CLOSED);
    drop_queue(q, name);
    drop_queue(fresh, plain_name);
}

static void test_spsc_role_taken(void) {
    char name[96];
    shmq_queue *q = make_spsc_queue(name, sizeof name, 8, 32);
    if (q == NULL) return;
    shmq_queue *other = NULL;
    CHECK_STATUS(shmq_connect(name, &other), SHMQ_OK);
    if (other == NULL) return;

    /* `q` takes the sending role with its first send. */
    CHECK_STATUS(shmq_send(q, "a", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "b", 1, 0), SHMQ_OK);

    /* A second handle's sends are refused at once (a waiting send too), nothing is sent. */
    CHECK_STATUS(shmq_send(other, "x", 1, 0), SHMQ_ERR_ROLE_TAKEN);
    CHECK_LAST_ERROR_HAS("shmq_send: queue '");
    CHECK_LAST_ERROR_HAS(name);
    CHECK_LAST_ERROR_HAS("sending role");
    CHECK_LAST_ERROR_HAS("live participant");
    /* The name is said once (the error already carries it). */
    const char *first = strstr(shmq_last_error(), name);
    CHECK(first != NULL && strstr(first + strlen(name), name) == NULL);
    CHECK_STATUS(shmq_send(other, "x", 1, 10000), SHMQ_ERR_ROLE_TAKEN); /* not TIMEOUT */
    CHECK_STATUS(shmq_send_message_ex(other, 1, 2, "x", 1, -1, SHMQ_WAIT_SLICE),
                 SHMQ_ERR_ROLE_TAKEN);
    struct zc_fill f = {1, 1, 1, 0, 0};
    CHECK_STATUS(shmq_send_in_place(other, zc_fill_fn, &f, 0, 0), SHMQ_ERR_ROLE_TAKEN);
    CHECK_LAST_ERROR_HAS("shmq_send_in_place");
    CHECK(f.calls == 0);
    CHECK(shmq_len(other) == 2);

    /* `other` takes the receiving role; now `q` may not receive. */
    expect_message(other, "a");
    char buf[32];
    size_t len = 12345;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 10000), SHMQ_ERR_ROLE_TAKEN);
    CHECK_LAST_ERROR_HAS("receiving role");
    CHECK(len == 12345); /* outputs untouched */
    shmq_message_info info;
    memset(&info, 0x5A, sizeof info);
    CHECK_STATUS(shmq_receive_message(q, buf, sizeof buf, &info, 0), SHMQ_ERR_ROLE_TAKEN);
    CHECK(info.len == (size_t)0x5A5A5A5A5A5A5A5Au);
    struct zc_read r = {.seq = 0};
    CHECK_STATUS(shmq_receive_in_place(q, zc_read_fn, &r, 0, 0), SHMQ_ERR_ROLE_TAKEN);
    CHECK(r.calls == 0);
    CHECK(shmq_len(q) == 1);
    /* Calls that take no role still work on either handle. */
    shmq_queue_stats st;
    st.struct_size = (uint32_t)sizeof st;
    CHECK_STATUS(shmq_stats(other, &st), SHMQ_OK);
    CHECK(st.messages_sent == 2 && st.messages_received == 1 && st.depth == 1);

    /* Closing the holder frees its role: `other` now sends; nothing was lost or doubled. */
    shmq_close(q);
    CHECK_STATUS(shmq_send(other, "c", 1, 0), SHMQ_OK);
    expect_message(other, "b");
    expect_message(other, "c");
    CHECK_STATUS(shmq_receive(other, buf, sizeof buf, &len, 0), SHMQ_ERR_EMPTY);

    /* A new handle finds both roles held by `other`. */
    shmq_queue *third = NULL;
    CHECK_STATUS(shmq_connect(name, &third), SHMQ_OK);
    CHECK_STATUS(shmq_send(third, "y", 1, 0), SHMQ_ERR_ROLE_TAKEN);
    CHECK_STATUS(shmq_receive(third, buf, sizeof buf, &len, 0), SHMQ_ERR_ROLE_TAKEN);
    shmq_close(other);
    CHECK_STATUS(shmq_send(third, "z", 1, 0), SHMQ_OK);
    expect_message(third, "z");
    drop_queue(third, name);
}

/* A child that connects to `name`, must be refused the sending role, tells the parent so
 * on `ready`, waits for "go" on `go`, then sends "c1".."c<count>" and closes (or, if
 * `vanish`, sends them and exits without closing: its role is then taken over). */
static int spsc_child(const char *name, int ready, int go, int count, int vanish) {
    shmq_queue *q = NULL;
    if (shmq_connect(name, &q) != SHMQ_OK) return 10;
    if (!vanish) {
        if (shmq_send(q, "early", 5, 0) != SHMQ_ERR_ROLE_TAKEN) return 11;
        if (strstr(shmq_last_error(), "sending role") == NULL) return 12;
        if (write(ready, "r", 1) != 1) return 13;
        char c;
        if (read(go, &c, 1) != 1) return 14;
    }
    for (int i = 1; i <= count; i++) {
        char text[16];
        int n = snprintf(text, sizeof text, "c%d", i);
        if (shmq_send(q, text, (size_t)n, 10000) != SHMQ_OK) return 15;
    }
    if (vanish) _exit(0); /* no shmq_close: the sending role stays with a dead process */
    shmq_close(q);
    return 0;
}

static void test_spsc_roles_across_processes(void) {
    enum { COUNT = 200 };
    char name[96];
    shmq_queue *tx = make_spsc_queue(name, sizeof name, 16, 32);
    if (tx == NULL) return;
    shmq_queue *rx = NULL;
    CHECK_STATUS(shmq_connect(name, &rx), SHMQ_OK);
    CHECK_STATUS(shmq_send(tx, "p0", 2, 0), SHMQ_OK); /* this process holds the sending role */
    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(spsc_child(name, ready[1], go[0], COUNT, 0));
    char c = 0;
    CHECK(read(ready[0], &c, 1) == 1 && c == 'r'); /* the child was refused */
    shmq_close(tx);                                 /* frees the role */
    CHECK(write(go[1], "g", 1) == 1);
    /* The receiver gets p0, then every child message once, in order. */
    char buf[32];
    size_t len = 0;
    CHECK_STATUS(shmq_receive(rx, buf, sizeof buf, &len, 10000), SHMQ_OK);
    CHECK(len == 2 && memcmp(buf, "p0", 2) == 0);
    int in_order = 0;
    for (int i = 1; i <= COUNT; i++) {
        char want[16];
        int n = snprintf(want, sizeof want, "c%d", i);
        if (shmq_receive(rx, buf, sizeof buf, &len, 10000) != SHMQ_OK) break;
        if (len != (size_t)n || memcmp(buf, want, len) != 0) break;
        in_order++;
    }
    CHECK(in_order == COUNT);
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);

    /* A holder that dies without closing: its role is taken over by the next sender. */
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(spsc_child(name, -1, -1, 3, 1));
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    shmq_queue *next = NULL;
    CHECK_STATUS(shmq_connect(name, &next), SHMQ_OK);
    CHECK_STATUS(shmq_send(next, "after", 5, 0), SHMQ_OK);
    expect_message(rx, "c1");
    expect_message(rx, "c2");
    expect_message(rx, "c3");
    expect_message(rx, "after");
    CHECK(shmq_len(rx) == 0);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(go[i]);
    }
    shmq_close(next);
    drop_queue(rx, name);
}

/* ----- calls made from inside callbacks --------------------------------------------------- */

/* What a callback's nested calls on its own queue returned. */
struct nested {
    shmq_queue *q;
    int same_side;          /* a call on the side the outer call holds */
    char same_error[512];   /* its last error */
    int other_side;         /* a call on the other side */
    int stats;              /* shmq_stats */
    int reply;              /* whether a read sends a reply (the other side) */
};

static void nested_stats(struct nested *n) {
    shmq_queue_stats st;
    st.struct_size = sizeof st;
    n->stats = shmq_stats(n->q, &st);
}

static void nested_read(void *ctx, const uint8_t *data, size_t len, const shmq_message_info *info) {
    (void)data, (void)len, (void)info;
    struct nested *n = ctx;
    char buf[32];
    size_t got = 0;
    n->same_side = shmq_receive(n->q, buf, sizeof buf, &got, 0);
    snprintf(n->same_error, sizeof n->same_error, "%s", shmq_last_error());
    n->other_side = n->reply ? shmq_send(n->q, "reply", 5, 0) : SHMQ_OK;
    nested_stats(n);
}

static int nested_batch_read(void *ctx, const uint8_t *data, size_t len,
                             const shmq_message_info *info) {
    nested_read(ctx, data, len, info);
    return 0;
}

static int64_t nested_fill(void *ctx, uint8_t *slot, size_t capacity) {
    (void)capacity;
    struct nested *n = ctx;
    n->same_side = shmq_send(n->q, "inner", 5, 0);
    snprintf(n->same_error, sizeof n->same_error, "%s", shmq_last_error());
    char buf[32];
    size_t got = 0;
    n->other_side = shmq_receive(n->q, buf, sizeof buf, &got, 0);
    nested_stats(n);
    memcpy(slot, "outer", 5);
    return 5;
}

static int64_t nested_batch_fill(void *ctx, size_t index, uint8_t *slot, size_t capacity) {
    (void)index;
    return nested_fill(ctx, slot, capacity);
}

/* On a single-producer/single-consumer queue the outer call holds its side until its callback
 * returns: a nested call on that side of the same handle is refused (it used to wait for ever,
 * or claim the outer call's own slot: a message delivered twice, or one overwritten), while
 * the other side and the statistics work. `warm`: this thread already owns both sides' fast
 * path (the outer call then takes it; else the slow path). */
static void nested_calls_on_spsc(int warm) {
    char name[96];
    shmq_queue *q = make_spsc_queue(name, sizeof name, 8, 32);
    if (q == NULL) return;
    alarm(60); /* a deadlock fails the suite rather than hang it */
    if (warm) {
        CHECK_STATUS(shmq_send(q, "warm", 4, 0), SHMQ_OK);
        expect_message(q, "warm");
    }
    struct nested n = {.q = q, .reply = 1};
    CHECK_STATUS(shmq_send(q, "m1", 2, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "m2", 2, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive_in_place(q, nested_read, &n, 0, 0), SHMQ_OK);
    CHECK(n.same_side == SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(strstr(n.same_error, "inside a callback") != NULL);
    CHECK(n.other_side == SHMQ_OK && n.stats == SHMQ_OK);
    expect_message(q, "m2"); /* m1 went to the outer call only */
    expect_message(q, "reply");

    memset(&n, 0, sizeof n);
    n.q = q;
    CHECK_STATUS(shmq_send(q, "m3", 2, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "m4", 2, 0), SHMQ_OK);
    size_t count = 0;
    CHECK_STATUS(shmq_receive_batch_in_place(q, nested_batch_read, &n, 8, &count, 0, 0), SHMQ_OK);
    CHECK(count == 2 && n.same_side == SHMQ_ERR_INVALID_ARGUMENT && n.stats == SHMQ_OK);
    CHECK(shmq_len(q) == 0);

    memset(&n, 0, sizeof n);
    n.q = q;
    CHECK_STATUS(shmq_send(q, "x", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send_in_place(q, nested_fill, &n, 0, 0), SHMQ_OK);
    CHECK(n.same_side == SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(strstr(n.same_error, "inside a callback") != NULL);
    CHECK(n.other_side == SHMQ_OK && n.stats == SHMQ_OK); /* it received "x" */
    expect_message(q, "outer");
    CHECK_STATUS(shmq_send_batch_in_place(q, nested_batch_fill, &n, 2, &count, 0, 0), SHMQ_OK);
    CHECK(count == 2 && n.same_side == SHMQ_ERR_INVALID_ARGUMENT && n.stats == SHMQ_OK);
    /* The second fill's receive may take the batch's first message, published before it. */
    CHECK(n.other_side == SHMQ_OK || n.other_side == SHMQ_ERR_EMPTY);
    CHECK(shmq_len(q) == (n.other_side == SHMQ_OK ? 1u : 2u));
    while (shmq_len(q) > 0) expect_message(q, "outer");
    alarm(0);
    drop_queue(q, name);
}

static void test_spsc_nested_calls(void) {
    nested_calls_on_spsc(0);
    nested_calls_on_spsc(1);
}

/* On the default queue a callback may receive and send on its own handle. */
static void test_nested_calls(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 8, 32);
    if (q == NULL) return;
    struct nested n = {.q = q, .reply = 1};
    CHECK_STATUS(shmq_send(q, "m1", 2, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "m2", 2, 0), SHMQ_OK);
    CHECK_STATUS(shmq_receive_in_place(q, nested_read, &n, 0, 0), SHMQ_OK);
    CHECK(n.same_side == SHMQ_OK && n.other_side == SHMQ_OK && n.stats == SHMQ_OK);
    expect_message(q, "reply"); /* the nested receive took m2 */
    CHECK_STATUS(shmq_send_in_place(q, nested_fill, &n, 0, 0), SHMQ_OK);
    /* The nested send went after the outer one's position, which is not published while its
     * fill runs: the nested receive finds the head in progress. */
    CHECK(n.same_side == SHMQ_OK && n.other_side == SHMQ_ERR_EMPTY && n.stats == SHMQ_OK);
    expect_message(q, "outer");
    expect_message(q, "inner");
    drop_queue(q, name);
}

/* A thread inside a long callback on a single-producer handle's receiving side. */
struct holder {
    shmq_queue *q;
    atomic_int inside;
    atomic_int release;
};

static void holding_read(void *ctx, const uint8_t *data, size_t len,
                         const shmq_message_info *info) {
    (void)data, (void)len, (void)info;
    struct holder *h = ctx;
    atomic_store(&h->inside, 1);
    /* Until the other thread is done (bounded: a regression must fail, not hang). */
    uint64_t give_up = monotonic_ms() + 10000;
    while (!atomic_load(&h->release) && monotonic_ms() < give_up) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void *holding_thread(void *arg) {
    struct holder *h = arg;
    CHECK_STATUS(shmq_receive_in_place(h->q, holding_read, h, -1, 0), SHMQ_OK);
    return NULL;
}

/* Another thread sharing the handle meanwhile: a receive that may not wait does not wait for
 * the holder, and one with a timeout times out (both used to wait until the callback
 * returned), while a statistics call returns at once. The holder's callback only returns once
 * these calls have, so a call that waited would see "b" instead. */
static void test_spsc_shared_handle_waits_within_its_timeout(void) {
    char name[96];
    shmq_queue *q = make_spsc_queue(name, sizeof name, 8, 32);
    if (q == NULL) return;
    CHECK_STATUS(shmq_send(q, "a", 1, 0), SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "b", 1, 0), SHMQ_OK);
    struct holder h = {.q = q};
    atomic_init(&h.inside, 0);
    atomic_init(&h.release, 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, holding_thread, &h) == 0);
    while (!atomic_load(&h.inside)) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    char buf[32];
    size_t len = 0;
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 0), SHMQ_ERR_EMPTY);
    CHECK_STATUS(shmq_receive(q, buf, sizeof buf, &len, 20), SHMQ_ERR_TIMEOUT);
    shmq_queue_stats st;
    st.struct_size = sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(atomic_load(&h.release) == 0); /* still inside */
    atomic_store(&h.release, 1);
    pthread_join(t, NULL);
    expect_message(q, "b");
    drop_queue(q, name);
}

/* Threads sharing a single-producer handle, sending without waiting: one that finds the side
 * taken by the other's send waits for it (a few instructions) rather than report a full queue
 * (a regression of the change above reported FULL for most of them). */
struct sender_thread {
    shmq_queue *q;
    int refused;
};

static void *send_without_waiting(void *arg) {
    struct sender_thread *t = arg;
    for (int i = 0; i < 1000; i++) {
        if (shmq_send(t->q, "m", 1, 0) != SHMQ_OK) t->refused++;
    }
    return NULL;
}

static void test_spsc_threads_sending_without_waiting_take_turns(void) {
    char name[96];
    shmq_queue *q = make_spsc_queue(name, sizeof name, 4096, 8);
    if (q == NULL) return;
    struct sender_thread a = {.q = q}, b = {.q = q};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, send_without_waiting, &a) == 0);
    CHECK(pthread_create(&tb, NULL, send_without_waiting, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.refused == 0 && b.refused == 0);
    CHECK(shmq_len(q) == 2000);
    shmq_queue_stats st;
    st.struct_size = sizeof st;
    CHECK_STATUS(shmq_stats(q, &st), SHMQ_OK);
    CHECK(st.send_full == 0 && st.peak_depth <= 2000);
    drop_queue(q, name);
}

/* A call made from inside the callback of a call with SHMQ_WAIT_SLICE, without the flag, counts
 * its own timeout (the flag used to stay set for every call the callback made). */
struct nested_wait {
    shmq_queue *other;
    int status;
};

static void nested_wait_read(void *ctx, const uint8_t *data, size_t len,
                             const shmq_message_info *info) {
    (void)data, (void)len, (void)info;
    struct nested_wait *w = ctx;
    char buf[8];
    size_t got = 0;
    w->status = shmq_receive(w->other, buf, sizeof buf, &got, 1);
}

static void test_wait_slice_flag_stays_with_its_call(void) {
    char name[96], other_name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 32);
    shmq_queue *other = make_queue(other_name, sizeof other_name, 4, 32);
    if (q == NULL || other == NULL) return;
    CHECK_STATUS(shmq_send(q, "x", 1, 0), SHMQ_OK);
    struct nested_wait w = {.other = other};
    CHECK_STATUS(shmq_receive_in_place(q, nested_wait_read, &w, 100, SHMQ_WAIT_SLICE), SHMQ_OK);
    CHECK(w.status == SHMQ_ERR_TIMEOUT);
    shmq_queue_stats st;
    st.struct_size = sizeof st;
    CHECK_STATUS(shmq_stats(other, &st), SHMQ_OK);
    CHECK(st.timeouts == 1);
    drop_queue(q, name);
    drop_queue(other, other_name);
}

/* ----- handles across fork() --------------------------------------------------------------- */

static shmq_queue *inherited_queue; /* the parent's handle, as the forked child sees it */

/* In a child: the parent's handle sends and receives nothing (it carries the parent's
 * identity), closing it leaves the parent's roles alone, and a handle of its own works.
 * Exit status: 0 if all of that held, else the number of the first check that failed. */
static int child_with_inherited_handle(const char *name) {
    char buf[32];
    size_t len = 0;
    if (shmq_send(inherited_queue, "child", 5, 0) != SHMQ_ERR_INVALID_ARGUMENT) return 1;
    if (strstr(shmq_last_error(), "fork") == NULL) return 2;
    if (shmq_receive(inherited_queue, buf, sizeof buf, &len, 0) != SHMQ_ERR_INVALID_ARGUMENT)
        return 3;
    struct zc_fill fill;
    memset(&fill, 0, sizeof fill);
    if (shmq_send_in_place(inherited_queue, zc_fill_fn, &fill, 0, 0) != SHMQ_ERR_INVALID_ARGUMENT ||
        fill.calls != 0)
        return 4;
    shmq_close(inherited_queue);
    shmq_queue *own = NULL;
    if (shmq_connect(name, &own) != SHMQ_OK) return 5;
    /* The parent holds the sending role (a single-producer queue) or not (default mode). */
    shmq_status s = shmq_send(own, "from child", 10, 0);
    int spsc = shmq_is_single_producer_single_consumer(own);
    if (spsc ? s != SHMQ_ERR_ROLE_TAKEN : s != SHMQ_OK) return 6;
    shmq_close(own);
    return 0;
}

static void handle_across_fork(uint32_t flags) {
    char name[96];
    shmq_queue *q = make_queue_with(name, sizeof name, 8, 32, flags);
    if (q == NULL) return;
    CHECK_STATUS(shmq_send(q, "parent", 6, 0), SHMQ_OK); /* takes the sending role (SPSC) */
    inherited_queue = q;
    CHECK(in_child(child_with_inherited_handle, name) == 0);
    /* The child's close of its copy left this handle whole: it still holds its role (a new
     * handle is refused it), and sends and receives. */
    shmq_queue *other = NULL;
    CHECK_STATUS(shmq_connect(name, &other), SHMQ_OK);
    if ((flags & SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER) != 0) {
        CHECK_STATUS(shmq_send(other, "other", 5, 0), SHMQ_ERR_ROLE_TAKEN);
    } else {
        expect_message(other, "parent");
        expect_message(other, "from child");
    }
    shmq_close(other);
    CHECK_STATUS(shmq_send(q, "again", 5, 0), SHMQ_OK);
    if ((flags & SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER) != 0) expect_message(q, "parent");
    expect_message(q, "again");
    CHECK(shmq_len(q) == 0);
    drop_queue(q, name);
}

/* In a child: reopens the inherited handle (a participant of its own on the same segment,
 * whatever its name now names), takes the parent's message and answers. */
static int child_reopens(const char *name) {
    (void)name;
    shmq_queue *own = NULL;
    if (shmq_reopen(inherited_queue, &own) != SHMQ_OK) return 1;
    shmq_close(inherited_queue);
    char buf[32];
    size_t len = 0;
    if (shmq_receive(own, buf, sizeof buf, &len, 1000) != SHMQ_OK) return 2;
    if (len != 2 || memcmp(buf, "m1", 2) != 0) return 3;
    if (shmq_send(own, "m2", 2, 0) != SHMQ_OK) return 4;
    shmq_close(own);
    return 0;
}

/* The pattern "create, unlink the name, fork the workers": a child reaches the queue through
 * the handle it inherited, not by name (which now names nothing, or another queue). */
static void test_reopen_in_a_child_after_unlink(void) {
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 32);
    if (q == NULL) return;
    shmq_queue *out = NULL;
    CHECK_STATUS(shmq_reopen(NULL, &out), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_reopen(q, NULL), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(shmq_send(q, "m1", 2, 0), SHMQ_OK);
    CHECK_STATUS(shmq_unlink(name), SHMQ_OK);
    shmq_queue *decoy = NULL; /* another queue under the same name */
    CHECK_STATUS(shmq_create(name, 4, 32, &decoy), SHMQ_OK);
    inherited_queue = q;
    CHECK(in_child(child_reopens, name) == 0);
    expect_message(q, "m2");
    CHECK(shmq_len(q) == 0 && shmq_len(decoy) == 0);
    shmq_close(q);
    drop_queue(decoy, name);
}

/* In a child: a seccomp filter makes membarrier fail (as a sandbox or an old kernel would),
 * then the child joins the queue and waits once on it, empty, without polling. Forked, it
 * inherits the parent's membarrier registration, the kernel's and the library's cached one:
 * the library asks again in a forked child, so joining flags the queue at once (before, only
 * its first sleep's failing heavy fence did). 0 if flagged after joining and after the wait,
 * 2 if the kernel refused the filter. */
static int child_without_membarrier(const char *name) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0), /* the system call's number */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
        return 2;
    shmq_queue *q = NULL;
    if (shmq_connect(name, &q) != SHMQ_OK) return 3;
    if (shmq_uses_real_fences(q) != 1) return 6;
    char buf[32];
    size_t len = 0;
    if (shmq_set_spin_limit(q, 0) != SHMQ_OK ||
        shmq_receive(q, buf, sizeof buf, &len, 1) != SHMQ_ERR_TIMEOUT)
        return 5;
    int flagged = shmq_uses_real_fences(q);
    shmq_close(q);
    return flagged == 1 ? 0 : 4;
}

/* shmq_uses_real_fences: off on a fresh queue (where this process can call membarrier), on
 * for every handle once a process that cannot has joined, and -1 for NULL. */
static void test_real_fences_flag(void) {
    CHECK(shmq_uses_real_fences(NULL) == -1);
    CHECK_LAST_ERROR_HAS("shmq_uses_real_fences: invalid argument: 'q' is NULL");
    char name[96];
    shmq_queue *q = make_queue(name, sizeof name, 4, 32);
    if (q == NULL) return;
    int before = shmq_uses_real_fences(q);
    CHECK(before == 0 || before == 1);
    int child = in_child(child_without_membarrier, name);
    if (child == 2) {
        printf("  (the kernel refused the seccomp filter: only NULL checked)\n");
    } else {
        CHECK(child == 0);
        CHECK(shmq_uses_real_fences(q) == 1);
        /* Messages still go through, on real fences. */
        CHECK_STATUS(shmq_send(q, "m1", 2, 0), SHMQ_OK);
        expect_message(q, "m1");
    }
    drop_queue(q, name);
}

/* A reader that forks: the child holds on inside the callback until the parent has gone on
 * with the queue, then returns into its copy of the call. */
struct forking_reader {
    int is_child;
    int go[2]; /* the parent writes a byte once it has gone on */
};

static void forking_read(void *ctx, const uint8_t *data, size_t len,
                         const shmq_message_info *info) {
    (void)data, (void)len, (void)info;
    struct forking_reader *f = ctx;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        f->is_child = 1;
        char byte;
        while (read(f->go[0], &byte, 1) < 0 && errno == EINTR) {
        }
    }
}

/* The child of a fork inside a zero-copy callback returns into its copy of the call: that copy
 * must fail without releasing the parent's slot a second time (it used to: on the default
 * queue a later message was lost, on a single-producer queue one was delivered twice). */
static void fork_inside_a_callback(uint32_t flags) {
    char name[96];
    shmq_queue *q = make_queue_with(name, sizeof name, 4, 32, flags);
    if (q == NULL) return;
    struct forking_reader f = {0};
    CHECK(pipe(f.go) == 0);
    CHECK_STATUS(shmq_send(q, "m1", 2, 0), SHMQ_OK);
    shmq_status st = shmq_receive_in_place(q, forking_read, &f, 0, 0);
    if (f.is_child) _exit(st == SHMQ_ERR_INVALID_ARGUMENT ? 0 : 1);
    CHECK_STATUS(st, SHMQ_OK);
    CHECK_STATUS(shmq_send(q, "m2", 2, 0), SHMQ_OK);
    expect_message(q, "m2");
    CHECK_STATUS(shmq_send(q, "m3", 2, 0), SHMQ_OK);
    CHECK(write(f.go[1], "x", 1) == 1); /* the child returns from the callback now */
    int status = 0;
    CHECK(wait(&status) > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    expect_message(q, "m3");
    CHECK(shmq_len(q) == 0);
    close(f.go[0]);
    close(f.go[1]);
    drop_queue(q, name);
}

static void test_fork_inside_a_callback(void) {
    fork_inside_a_callback(0);
    fork_inside_a_callback(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER);
}

static void test_handle_across_fork(void) { handle_across_fork(0); }

static void test_handle_across_fork_spsc(void) {
    handle_across_fork(SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER);
}

/* ----- main ------------------------------------------------------------------------------- */

struct test {
    const char *name;
    void (*run)(void);
};

static const struct test tests[] = {
    {"version", test_version},
    {"checksum_implementation", test_checksum_implementation},
    {"status_codes", test_status_codes},
    {"basics", test_basics},
    {"stats", test_stats},
    {"null_arguments", test_null_arguments},
    {"spin_limit", test_spin_limit},
    {"invalid_arguments", test_invalid_arguments},
    {"create_options", test_create_options},
    {"full_empty_timeout", test_full_empty_timeout},
    {"buffer_too_small", test_buffer_too_small},
    {"shutdown_and_drain", test_shutdown_and_drain},
    {"corrupted_and_incompatible", test_corrupted_and_incompatible},
    {"permission_denied", test_permission_denied},
    {"creation_and_access_failed", test_creation_and_access_failed},
    {"threads", test_threads},
    {"zerocopy_round_trip", test_zerocopy_round_trip},
    {"zerocopy_bad_fill", test_zerocopy_bad_fill},
    {"zerocopy_arguments", test_zerocopy_arguments},
    {"zerocopy_timeouts_and_shutdown", test_zerocopy_timeouts_and_shutdown},
    {"zerocopy_across_processes", test_zerocopy_across_processes},
    {"batch_round_trip", test_batch_round_trip},
    {"batch_arguments", test_batch_arguments},
    {"send_parts_arguments", test_send_parts_arguments},
    {"send_parts_across_processes", test_send_parts_across_processes},
    {"send_parts_across_processes_spsc", test_send_parts_across_processes_spsc},
    {"send_parts_across_processes_no_checksum", test_send_parts_across_processes_no_checksum},
    {"batch_across_processes", test_batch_across_processes},
    {"batch_across_processes_spsc", test_batch_across_processes_spsc},
    {"batch_in_place_round_trip", test_batch_in_place_round_trip},
    {"batch_in_place_errors", test_batch_in_place_errors},
    {"batch_in_place_across_processes", test_batch_in_place_across_processes},
    {"batch_in_place_across_processes_spsc", test_batch_in_place_across_processes_spsc},
    {"batch_in_place_receiver_dies", test_batch_in_place_receiver_dies},
    {"batch_in_place_receiver_dies_spsc", test_batch_in_place_receiver_dies_spsc},
    {"batch_send_in_place_round_trip", test_batch_send_in_place_round_trip},
    {"batch_send_in_place_errors", test_batch_send_in_place_errors},
    {"batch_send_in_place_across_processes", test_batch_send_in_place_across_processes},
    {"batch_send_in_place_across_processes_spsc", test_batch_send_in_place_across_processes_spsc},
    {"batch_send_in_place_sender_dies", test_batch_send_in_place_sender_dies},
    {"batch_send_in_place_sender_dies_spsc", test_batch_send_in_place_sender_dies_spsc},
    {"spsc_flag_and_getter", test_spsc_flag_and_getter},
    {"spsc_role_taken", test_spsc_role_taken},
    {"spsc_roles_across_processes", test_spsc_roles_across_processes},
    {"nested_calls", test_nested_calls},
    {"spsc_nested_calls", test_spsc_nested_calls},
    {"spsc_shared_handle_waits_within_its_timeout", test_spsc_shared_handle_waits_within_its_timeout},
    {"spsc_threads_sending_without_waiting_take_turns",
     test_spsc_threads_sending_without_waiting_take_turns},
    {"wait_slice_flag_stays_with_its_call", test_wait_slice_flag_stays_with_its_call},
    {"handle_across_fork", test_handle_across_fork},
    {"handle_across_fork_spsc", test_handle_across_fork_spsc},
    {"fork_inside_a_callback", test_fork_inside_a_callback},
    {"real_fences_flag", test_real_fences_flag},
    {"reopen_in_a_child_after_unlink", test_reopen_in_a_child_after_unlink},
};

int main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) {
            snprintf(prefix, sizeof prefix, "%s", argv[++i]);
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        }
    }
    if (strcmp(prefix, "ctest") == 0) {
        snprintf(prefix, sizeof prefix, "ctest%ld", (long)getpid());
    }
#if defined(__SANITIZE_ADDRESS__)
    printf("sanitizers: address+undefined\n");
#else
    printf("sanitizers: none\n");
#endif
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (only != NULL && strcmp(only, tests[i].name) != 0) continue;
        current_test = tests[i].name;
        int before = checks_failed;
        tests[i].run();
        if (checks_failed == before) {
            printf("test %s ... ok\n", tests[i].name);
            passed++;
        } else {
            printf("test %s ... FAILED\n", tests[i].name);
            failed++;
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
