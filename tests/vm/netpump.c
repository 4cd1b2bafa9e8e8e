/* netpump: a TCP transfer over 127.0.0.1 for the VM tier's network limits.
 *
 *   netpump sink PORT      accept one connection, read it to the end, print
 *                          "bytes=N ms=T rate=R first=F last=L" (T from the
 *                          first byte to the end, R = N * 1000 / T bytes per
 *                          second, F and L those moments in CLOCK_MONOTONIC
 *                          ms, comparable across processes)
 *   netpump send PORT SECS [GOFILE]
 *                          connect, write for SECS seconds, close; with
 *                          GOFILE, first wait (up to 20 s) until that file
 *                          exists, so a supervisor can place the process
 *                          before its socket is opened (a socket is
 *                          charged to the group it was opened in)
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

static int send_for(int port, int secs, const char *gofile)
{
	static char buf[1 << 16];
	struct sockaddr_in a = loopback(port);
	long long end, bytes = 0, give_up = now_ms() + 20000;
	ssize_t n;
	int s;

	while (gofile && access(gofile, F_OK) != 0) {
		if (now_ms() > give_up) {
			fprintf(stderr, "netpump send: %s did not appear within 20 s\n", gofile);
			return 1;
		}
		usleep(10000);
	}
	end = now_ms() + secs * 1000LL;
	s = socket(AF_INET, SOCK_STREAM, 0);
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
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "send") && atoi(argv[3]) > 0)
		return send_for(atoi(argv[2]), atoi(argv[3]), argc == 5 ? argv[4] : NULL);
	fprintf(stderr, "usage: netpump sink PORT | netpump send PORT SECS [GOFILE]\n");
	return 2;
}
