/* An ordinary C program, built with clang and wasi-libc: nothing in it knows about Mica.
 *
 * It prints its arguments and an environment variable, sleeps, takes random bytes from the
 * system, keeps a line on stdout unfinished until exit (C's stdio flushes it then), and exits
 * with the status its first argument asks for ("fail" ends with 3). */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    printf("hello from C: %d argument(s)\n", argc - 1);
    for (int i = 1; i < argc; i++) {
        printf("arg %d: %s\n", i, argv[i]);
    }
    const char *greeting = getenv("GREETING");
    printf("GREETING=%s\n", greeting ? greeting : "(not set)");

    int64_t start = now_ns();
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    nanosleep(&ten_ms, NULL);
    printf("slept at least 10 ms: %s\n", now_ns() - start >= 10 * 1000 * 1000 ? "yes" : "no");

    unsigned char bytes[32];
    if (getentropy(bytes, sizeof bytes) != 0) {
        fprintf(stderr, "getentropy failed\n");
        return 1;
    }
    int zero = 0;
    for (size_t i = 0; i < sizeof bytes; i++) {
        zero += bytes[i] == 0;
    }
    printf("random: %zu bytes, %d of them zero\n", sizeof bytes, zero);

    if (argc > 1 && strcmp(argv[1], "fail") == 0) {
        fprintf(stderr, "failing on purpose\n");
        return 3;
    }
    /* No newline: stdio holds this until exit flushes it. */
    printf("flushed at exit");
    return 0;
}
