/* alloc MB: allocate MB megabytes, touch every page, then sleep until killed.
 * The VM tier runs it under a memory.max smaller than MB to provoke the
 * kernel's OOM killer inside a job group. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char *end;
	long mb, i;

	if (argc != 2) {
		fprintf(stderr, "usage: alloc MB\n");
		return 2;
	}
	errno = 0;
	mb = strtol(argv[1], &end, 10);
	if (errno || *end || mb <= 0) {
		fprintf(stderr, "alloc: '%s' is not a positive number of megabytes\n", argv[1]);
		return 2;
	}
	for (i = 0; i < mb; i++) {
		/* 1 MiB is above malloc's mmap threshold: each chunk is fresh
		 * anonymous memory, charged to the cgroup once touched. */
		char *p = malloc(1 << 20);

		if (!p) {
			fprintf(stderr, "alloc: malloc failed after %ld MB\n", i);
			return 1;
		}
		memset(p, 0x5a, 1 << 20);
	}
	printf("alloc: %ld MB allocated and touched\n", mb);
	fflush(stdout);
	for (;;)
		pause();
}
