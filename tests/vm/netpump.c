/* netpump: a TCP transfer over 127.0.0.1 for the VM tier's network limits.
 *
 *   netpump sink PORT      accept one connection, read it to the end, print
 *                          "bytes=N ms=T rate=R first=F last=L" (T from the
 *                          first byte to the end, R = N * 1000 / T bytes per
 *                          second, F and L those moments in CLOCK_MONOTONIC
 *                          ms, comparable across processes)
 *   netpump send PORT SECS connect, write for SECS seconds, close
 *
 * The sink measures at the receiving end, so bytes waiting in socket
 * buffers are not counted as moved. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((unsigned short)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int sink(int port)
{
	static char buf[1 << 16];
	struct sockaddr_in a = loopback(port);
	long long bytes = 0, first = 0, last;
	int one = 1, s, c;
	ssize_t n;

	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 1) < 0) {
		perror("netpump sink: listen");
		return 1;
	}
	/* Ready: the caller may start the sender. */
	printf("listening\n");
	fflush(stdout);
	c = accept(s, NULL, NULL);
	if (c < 0) {
		perror("netpump sink: accept");
		return 1;
	}
	for (;;) {
		n = read(c, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("netpump sink: read");
			return 1;
		}
		if (n == 0)
			break;
		if (!bytes)
			first = now_ms();
		bytes += n;
	}
	last = now_ms();
	if (!bytes || last <= first) {
		fprintf(stderr, "netpump sink: received %lld bytes, too few to measure\n", bytes);
		return 1;
	}
	printf("bytes=%lld ms=%lld rate=%lld first=%lld last=%lld\n", bytes, last - first,
	       bytes * 1000 / (last - first), first, last);
	return 0;
}

static int send_for(int port, int secs)
{
	static char buf[1 << 16];
	struct sockaddr_in a = loopback(port);
	long long end = now_ms() + secs * 1000LL, bytes = 0;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t n;

	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("netpump send: connect");
		return 1;
	}
	while (now_ms() < end) {
		n = write(s, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("netpump send: write");
			return 1;
		}
		bytes += n;
	}
	if (close(s) < 0) {
		perror("netpump send: close");
		return 1;
	}
	fprintf(stderr, "netpump send: wrote %lld bytes in %d s\n", bytes, secs);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && !strcmp(argv[1], "sink"))
		return sink(atoi(argv[2]));
	if (argc == 4 && !strcmp(argv[1], "send") && atoi(argv[3]) > 0)
		return send_for(atoi(argv[2]), atoi(argv[3]));
	fprintf(stderr, "usage: netpump sink PORT | netpump send PORT SECS\n");
	return 2;
}
