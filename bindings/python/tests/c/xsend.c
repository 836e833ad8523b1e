/*
 * Test peer for the cross-language tests: one C producer among several on an existing
 * queue. Sends ids FIRST .. FIRST+COUNT-1, each with the text "c <id>", waiting for room.
 *
 * usage: xsend QUEUE FIRST COUNT
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "shmq.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s QUEUE FIRST COUNT\n", argv[0]);
        return 2;
    }
    uint64_t first = strtoull(argv[2], NULL, 10);
    uint64_t count = strtoull(argv[3], NULL, 10);
    shmq_queue *q = NULL;
    shmq_status s = shmq_connect(argv[1], &q);
    if (s != SHMQ_OK) {
        fprintf(stderr, "xsend: connect: %s\n", shmq_last_error());
        return 1;
    }
    char text[64];
    for (uint64_t id = first; id < first + count; id++) {
        int n = snprintf(text, sizeof text, "c %" PRIu64, id);
        s = shmq_send_message(q, id, 0, text, (size_t)n, -1);
        if (s != SHMQ_OK) {
            fprintf(stderr, "xsend: send %" PRIu64 ": %s\n", id, shmq_last_error());
            shmq_close(q);
            return 1;
        }
    }
    printf("[xsend] sent %" PRIu64 " messages\n", count);
    shmq_close(q);
    return 0;
}
