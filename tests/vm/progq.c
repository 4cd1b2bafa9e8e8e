/* progq: the cgroup BPF programs attached to one group, as the kernel lists
 * them, for the VM tier's network scenarios (a check that does not go
 * through reeve's own query code).
 *
 *   progq CGROUP_DIR egress|ingress
 *
 * prints one line "count=N ids=ID,ID names=NAME,NAME" for the programs
 * attached to the group itself (BPF_PROG_QUERY without inherited ones),
 * each name read with BPF_OBJ_GET_INFO_BY_FD. */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_PROGS 64

static long bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

int main(int argc, char **argv)
{
	__u32 ids[MAX_PROGS];
	union bpf_attr attr;
	int cg, type, i;
	__u32 n;

	if (argc != 3 || (strcmp(argv[2], "egress") && strcmp(argv[2], "ingress"))) {
		fprintf(stderr, "usage: progq CGROUP_DIR egress|ingress\n");
		return 2;
	}
	type = strcmp(argv[2], "egress") ? BPF_CGROUP_INET_INGRESS : BPF_CGROUP_INET_EGRESS;
	cg = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg < 0) {
		perror("progq: open");
		return 1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.query.target_fd = (__u32)cg;
	attr.query.attach_type = (__u32)type;
	attr.query.prog_ids = (__u64)(unsigned long)ids;
	attr.query.prog_cnt = MAX_PROGS;
	if (bpf(BPF_PROG_QUERY, &attr) < 0) {
		perror("progq: BPF_PROG_QUERY");
		return 1;
	}
	n = attr.query.prog_cnt;
	printf("count=%u ids=", n);
	for (i = 0; i < (int)n; i++)
		printf("%s%u", i ? "," : "", ids[i]);
	printf(" names=");
	for (i = 0; i < (int)n; i++) {
		struct bpf_prog_info info;
		int fd;

		memset(&attr, 0, sizeof(attr));
		attr.prog_id = ids[i];
		fd = (int)bpf(BPF_PROG_GET_FD_BY_ID, &attr);
		if (fd < 0) {
			fprintf(stderr, "progq: BPF_PROG_GET_FD_BY_ID %u: %s\n", ids[i], strerror(errno));
			return 1;
		}
		memset(&info, 0, sizeof(info));
		memset(&attr, 0, sizeof(attr));
		attr.info.bpf_fd = (__u32)fd;
		attr.info.info_len = sizeof(info);
		attr.info.info = (__u64)(unsigned long)&info;
		if (bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0) {
			fprintf(stderr, "progq: BPF_OBJ_GET_INFO_BY_FD %u: %s\n", ids[i], strerror(errno));
			return 1;
		}
		printf("%s%.*s", i ? "," : "", (int)sizeof(info.name), info.name);
		close(fd);
	}
	printf("\n");
	return 0;
}
