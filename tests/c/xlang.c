/*
 * One role of the cross-language test (tests/c_abi.rs): C processes beside Rust processes
 * on one queue.
 *
 *   xlang produce NAME FIRST COUNT   sends ids FIRST .. FIRST+COUNT-1, payload "msg <id>"
 *   xlang consume NAME               receives until the queue is shut down and drained,
 *                                    printing "got <id>" for each message
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmq.h"

static shmq_queue *connect_or_die(const char *name) {
    shmq_queue *q = NULL;
    for (int attempt = 0; attempt < 200; attempt++) {
        shmq_status s = shmq_connect(name, &q);
        if (s == SHMQ_OK) return q;
        if (s != SHMQ_ERR_NOT_FOUND) break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "xlang: cannot connect to %s: %s\n", name, shmq_last_error());
    exit(1);
}

static int produce(const char *name, uint64_t first, uint64_t count) {
    shmq_queue *q = connect_or_die(name);
    for (uint64_t id = first; id < first + count; id++) {
        char text[48];
        int len = snprintf(text, sizeof text, "msg %llu", (unsigned long long)id);
        shmq_status s = shmq_send_message(q, id, 0, text, (size_t)len, -1);
        if (s != SHMQ_OK) {
            fprintf(stderr, "xlang: send %llu: %s\n", (unsigned long long)id, shmq_last_error());
            shmq_close(q);
            return 1;
        }
    }
    printf("sent %llu\n", (unsigned long long)count);
    shmq_close(q);
    return 0;
}

static int consume(const char *name) {
    shmq_queue *q = connect_or_die(name);
    size_t cap = shmq_message_size(q);
    char *buf = malloc(cap);
    int rc = 0;
    for (;;) {
        shmq_message_info info;
        shmq_status s = shmq_receive_message(q, buf, cap, &info, -1);
        if (s == SHMQ_ERR_CLOSED) break;
        if (s != SHMQ_OK) {
            fprintf(stderr, "xlang: receive: %s\n", shmq_last_error());
            rc = 1;
            break;
        }
        char expected[48];
        int len = snprintf(expected, sizeof expected, "msg %llu", (unsigned long long)info.id);
        if (info.len != (size_t)len || memcmp(buf, expected, info.len) != 0) {
            fprintf(stderr, "xlang: message %llu has the wrong payload\n",
                    (unsigned long long)info.id);
            rc = 1;
        }
        printf("got %llu\n", (unsigned long long)info.id);
    }
    free(buf);
    shmq_close(q);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "produce") == 0) {
        return produce(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    }
    if (argc == 3 && strcmp(argv[1], "consume") == 0) {
        return consume(argv[2]);
    }
    fprintf(stderr, "usage: xlang produce NAME FIRST COUNT | xlang consume NAME\n");
    return 2;
}
