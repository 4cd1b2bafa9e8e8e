/*
 * A reeve heartbeat sender in C: the wire format of docs/PROTOCOL.md, no
 * library but libc.
 *
 *   cc -O2 -o beat beat.c
 *   ./beat SOCKET [STATUS [COUNT [INTERVAL_MS]]]
 *
 * Sends COUNT beats (default 1) for this process, INTERVAL_MS apart
 * (default 1000), with STATUS ok (default), degraded, critical or stopping.
 * The frame's pid is getpid(): reeve checks it against the kernel's
 * credentials, so a process can only beat for itself. Nonces start at a
 * random point and go up by one per beat. Exits 0 when every beat was
 * sent, 1 otherwise (the error is one line on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FRAME_LEN 64

static void put_u16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }

static int status_code(const char *s)
{
    static const char *names[] = {"ok", "degraded", "critical", "stopping"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* Writes one frame: magic, version 1, status, pid, nonce, wall-clock ns. */
static void encode(uint8_t f[FRAME_LEN], int status, uint32_t pid, uint64_t nonce)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(f, 0, FRAME_LEN);
    memcpy(f, "RVHB", 4);
    put_u16(f + 4, 1);
    f[6] = (uint8_t)status;
    put_u32(f + 8, pid);
    put_u64(f + 16, nonce);
    put_u64(f + 24, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    /* f[32..64]: payload, opaque to reeve; zero here. */
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET [STATUS [COUNT [INTERVAL_MS]]]\n", argv[0]);
        return 2;
    }
    int status = status_code(argc > 2 ? argv[2] : "ok");
    long count = argc > 3 ? strtol(argv[3], NULL, 10) : 1;
    long interval_ms = argc > 4 ? strtol(argv[4], NULL, 10) : 1000;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (status < 0 || count < 1 || interval_ms < 0 ||
        strlen(argv[1]) >= sizeof addr.sun_path) {
        fprintf(stderr, "beat: bad status, count, interval or socket path\n");
        return 2;
    }
    strcpy(addr.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "beat: socket: %s\n", strerror(errno));
        return 1;
    }
    uint64_t nonce;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) {
        fprintf(stderr, "beat: getrandom: %s\n", strerror(errno));
        return 1;
    }
    nonce >>= 2; /* far from a wrap; reeve handles one anyway */
    for (long i = 0; i < count; i++) {
        uint8_t f[FRAME_LEN];
        encode(f, status, (uint32_t)getpid(), ++nonce);
        if (sendto(fd, f, sizeof f, MSG_DONTWAIT, (struct sockaddr *)&addr, sizeof addr) != FRAME_LEN) {
            fprintf(stderr, "%s: cannot send a beat: %s\n", argv[1], strerror(errno));
            return 1;
        }
        if (i + 1 < count) {
            struct timespec d = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
            nanosleep(&d, NULL);
        }
    }
    close(fd);
    return 0;
}
