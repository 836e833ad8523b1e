/*
 * Pipeline stage 2 of 3 (C): takes records from queue A, transforms them, sends them on
 * to queue B, and shuts B down once A is shut down and drained.
 *
 * In:  message id i, text "rec <i> <v>"                  (examples/pipeline_source.rs)
 * Out: same id and timestamp, text "rec <i> <v> <t> rust>c" with t = 3 * v + 7
 *      (checked by bindings/python/examples/pipeline_sink.py)
 *
 * usage: pipeline_transform --in A --out B [--capacity N]
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

static const char *arg(int argc, char **argv, const char *name, const char *fallback) {
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return argv[i + 1];
        }
    }
    return fallback;
}

static int fail(const char *what, shmq_status status) {
    fprintf(stderr, "[c transform] %s failed: %s (%s)\n", what, shmq_status_str(status),
            shmq_last_error());
    return 1;
}

/* The source stage may still be creating queue A: retry for up to 10 s. */
static shmq_status connect_retry(const char *name, shmq_queue **out) {
    const struct timespec pause = {0, 50 * 1000 * 1000};
    shmq_status status = SHMQ_ERR_NOT_FOUND;
    for (int attempt = 0; attempt < 200; attempt++) {
        status = shmq_connect(name, out);
        if (status != SHMQ_ERR_NOT_FOUND) {
            break;
        }
        nanosleep(&pause, NULL);
    }
    return status;
}

int main(int argc, char **argv) {
    const char *in_name = arg(argc, argv, "--in", "pipeline_a");
    const char *out_name = arg(argc, argv, "--out", "pipeline_b");
    long capacity = strtol(arg(argc, argv, "--capacity", "64"), NULL, 10);
    if (capacity <= 0 || capacity > 1000000) {
        fprintf(stderr, "[c transform] bad --capacity\n");
        return 2;
    }

    shmq_queue *in = NULL;
    shmq_queue *out = NULL;
    shmq_status status = connect_retry(in_name, &in);
    if (status != SHMQ_OK) {
        return fail("connect to input queue", status);
    }
    /* This stage owns queue B: a stale queue of the same name is replaced. */
    status = shmq_create_with(out_name, (uint32_t)capacity, 128, 0, SHMQ_CREATE_REPLACE, &out);
    if (status != SHMQ_OK) {
        shmq_close(in);
        return fail("create output queue", status);
    }
    printf("[c transform] %s -> %s (PID: %ld)\n", in_name, out_name, (long)getpid());
    fflush(stdout);

    char buf[128];
    char line[160];
    uint64_t count = 0;
    int rc = 0;
    for (;;) {
        shmq_message_info info;
        status = shmq_receive_message(in, buf, sizeof buf - 1, &info, -1);
        if (status == SHMQ_ERR_CLOSED) {
            break; /* shut down and drained */
        }
        if (status != SHMQ_OK) {
            rc = fail("receive", status);
            break;
        }
        buf[info.len] = '\0';
        uint64_t i = 0;
        uint64_t v = 0;
        if (sscanf(buf, "rec %" SCNu64 " %" SCNu64, &i, &v) != 2 || i != info.id) {
            fprintf(stderr, "[c transform] malformed record %" PRIu64 ": '%s'\n", info.id, buf);
            rc = 1;
            break;
        }
        int n = snprintf(line, sizeof line, "rec %" PRIu64 " %" PRIu64 " %" PRIu64 " rust>c", i,
                         v, 3 * v + 7);
        if (n < 0 || (size_t)n >= sizeof line) {
            fprintf(stderr, "[c transform] record %" PRIu64 " does not fit\n", i);
            rc = 1;
            break;
        }
        status = shmq_send_message(out, info.id, info.timestamp_ns, line, (size_t)n, -1);
        if (status != SHMQ_OK) {
            rc = fail("send", status);
            break;
        }
        count++;
    }
    /* Tell the sink that no more records come, even after a failure (it then reports
       what is missing rather than waiting forever). */
    status = shmq_shutdown(out);
    if (status != SHMQ_OK && rc == 0) {
        rc = fail("shutdown", status);
    }
    printf("[c transform] transformed %" PRIu64 " records from %s into %s; %s shut down\n", count,
           in_name, out_name, out_name);
    shmq_close(in);
    shmq_close(out);
    return rc;
}
