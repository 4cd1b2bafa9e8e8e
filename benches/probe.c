/* The placement probe of the govern benchmark: reads /proc/self/cgroup
 * until a line names the group it waits for, then prints the
 * CLOCK_MONOTONIC time (ns) of the read that first saw it and exits 0;
 * prints "timeout" and exits 1 when the group never shows.
 *
 * It also prints the time of its first read: a placement made before the
 * probe could look shows as that time, the floor of what it can measure.
 *
 * usage: probe NEEDLE POLL_US TIMEOUT_MS
 * The bench pairs the printed time with the kernel's timestamp of the
 * probe's exec event (also CLOCK_MONOTONIC), so the latency is measured
 * from the event both daemons act on to the moment the process can see
 * itself placed. Built static so exec costs the same for every run. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: probe NEEDLE POLL_US TIMEOUT_MS\n");
        return 2;
    }
    const char *needle = argv[1];
    long poll_us = atol(argv[2]);
    long long deadline = now_ns() + atoll(argv[3]) * 1000000LL;
    char buf[4096];
    long long first = 0;
    for (;;) {
        int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            perror("open /proc/self/cgroup");
            return 2;
        }
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        long long t = now_ns();
        if (!first)
            first = t;
        buf[n > 0 ? n : 0] = 0;
        if (strstr(buf, needle)) {
            printf("%lld %lld\n", t, first);
            return 0;
        }
        if (t > deadline) {
            printf("timeout\n");
            return 1;
        }
        if (poll_us > 0) {
            struct timespec d = {poll_us / 1000000, (poll_us % 1000000) * 1000};
            nanosleep(&d, NULL);
        }
    }
}
