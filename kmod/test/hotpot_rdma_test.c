// SPDX-License-Identifier: MIT
/*
 * hotpot_rdma_test: drives /dev/hotpot-rdma between two nodes (two qemu guests linked by Soft-RoCE in CI).
 *
 *   hotpot_rdma_test server PORT
 *   hotpot_rdma_test client PEER_IPV4 PORT [ITERS] [RDMA_LINK_TO_DELETE]
 *
 * The server registers a 64-page region of a memfd (its "page file") for remote READ and serves a TCP port: the
 * QP numbers, GIDs and rkey are exchanged over that TCP link, it answers 4 KiB TCP page fetches (the baseline)
 * and echoes RDMA SEND messages. The client checks argument validation, reads the pages one-sidedly and checks
 * every byte, measures READ vs TCP fetch latency, and ends by making the server vanish mid-read. Each side
 * prints "ok"/"FAIL" lines and "<role>: N passed, N failed"; exit status 0 only when nothing failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../hotpot_rdma_uapi.h"

#define PAGE 4096u
#define NPAGES 64u
#define MAGIC 0x48505244u /* "HPRD" */
#define COUNTERS "/sys/class/misc/hotpot-rdma/counters/"

static const char *role = "?";
static int passed, failed;

static void check(int ok, const char *name, const char *fmt, ...)
{
	if (ok) {
		passed++;
		printf("ok   %s\n", name);
	} else {
		va_list ap;

		failed++;
		printf("FAIL %s: ", name);
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
	}
	fflush(stdout);
}

/* An ioctl expected to fail with `want`. */
static void expect_errno(int fd, unsigned long cmd, void *arg, int want, const char *name)
{
	int r = ioctl(fd, cmd, arg);
	int e = errno;

	check(r == -1 && e == want, name, "got %d (%s), want %s", r, r == -1 ? strerror(e) : "success", strerror(want));
}

static void die(const char *what)
{
	printf("FAIL %s: %s: %s\n%s: %d passed, %d failed\n", role, what, strerror(errno), role, passed, failed + 1);
	exit(1);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static uint8_t pattern(uint32_t page, uint32_t byte) { return (uint8_t)(page * 31u + byte * 7u + (byte >> 9) + 1u); }

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			die("tcp write");
		}
		c += w;
		n -= (size_t)w;
	}
}

/* 0 on EOF before any byte, 1 when filled. */
static int read_all(int fd, void *p, size_t n)
{
	char *c = p;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, c + got, n - got);

		if (r == 0 && got == 0)
			return 0;
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			die("tcp read");
		}
		got += (size_t)r;
	}
	return 1;
}

/* ---- what the peers tell each other over TCP ---- */

struct qp_info {
	uint32_t qpn, psn;
	uint8_t gid[16];
};

struct hello {
	uint32_t magic, npages, rkey, nqps;
	uint64_t region_len;
	struct qp_info qp[2];
};

struct session {
	int fd;
	struct hotpot_rdma_bind bind;
	uint32_t qp[2];
	struct qp_info local[2];
};

static void session_open(struct session *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = open(HOTPOT_RDMA_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		die("open " HOTPOT_RDMA_DEVICE_PATH);
	if (ioctl(s->fd, HOTPOT_RDMA_IOC_BIND, &s->bind))
		die("bind");
}

static void session_create_qps(struct session *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct hotpot_rdma_create_qp c = { 0 };

		if (ioctl(s->fd, HOTPOT_RDMA_IOC_CREATE_QP, &c))
			die("create qp");
		s->qp[i] = c.qp_id;
		s->local[i].qpn = c.qpn;
		s->local[i].psn = c.psn;
		memcpy(s->local[i].gid, s->bind.gid, 16);
	}
}

static void session_connect(struct session *s, const struct qp_info *remote, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct hotpot_rdma_connect c = { .qp_id = s->qp[i], .remote_qpn = remote[i].qpn, .remote_psn = remote[i].psn };

		memcpy(c.remote_gid, remote[i].gid, 16);
		if (ioctl(s->fd, HOTPOT_RDMA_IOC_CONNECT_QP, &c))
			die("connect qp");
	}
}

static int reap(int fd, struct hotpot_rdma_completion *c, unsigned max, int timeout_ms)
{
	struct hotpot_rdma_reap r = { .entries = (uintptr_t)c, .max_entries = max, .timeout_ms = timeout_ms };

	if (ioctl(fd, HOTPOT_RDMA_IOC_REAP, &r))
		return -1;
	return (int)r.count;
}

static int post_read(int fd, uint32_t qp, uint32_t mr, uint64_t local_off, uint64_t remote, uint32_t rkey,
		     uint32_t len, uint64_t wr_id)
{
	struct hotpot_rdma_post_read p = { .wr_id = wr_id, .qp_id = qp, .mr_id = mr, .local_offset = local_off,
					   .remote_addr = remote, .rkey = rkey, .length = len };

	return ioctl(fd, HOTPOT_RDMA_IOC_POST_READ, &p);
}

static int post_msg(int fd, unsigned long cmd, uint32_t qp, void *buf, uint32_t len, uint64_t wr_id)
{
	struct hotpot_rdma_post_msg p = { .wr_id = wr_id, .addr = (uintptr_t)buf, .qp_id = qp, .length = len };

	return ioctl(fd, cmd, &p);
}

static int memfd_region(size_t len, uint8_t **map)
{
	int fd = memfd_create("hotpot-rdma-test", MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)len))
		die("memfd");
	*map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*map == MAP_FAILED)
		die("mmap");
	return fd;
}

static uint32_t reg_mr(int fd, void *addr, size_t len, int file_fd, uint32_t access, uint32_t *rkey)
{
	struct hotpot_rdma_reg_mr r = { .addr = (uintptr_t)addr, .length = len, .fd = file_fd, .access = access };

	if (ioctl(fd, HOTPOT_RDMA_IOC_REG_MR, &r))
		die("register region");
	if (rkey)
		*rkey = r.rkey;
	return r.mr_id;
}

static long counter(const char *name)
{
	char path[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), COUNTERS "%s", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[(int)(p * (n - 1))];
}

/* ---- server ---- */

#define SERVER_RECVS 8

static int run_server(int port)
{
	struct session s;
	struct hello h = { .magic = MAGIC, .npages = NPAGES, .nqps = 2, .region_len = NPAGES * PAGE };
	struct hello peer;
	static uint8_t rbuf[SERVER_RECVS][HOTPOT_RDMA_MAX_MSG], sbuf[SERVER_RECVS][HOTPOT_RDMA_MAX_MSG];
	uint8_t *region;
	int one = 1, lfd, cfd, mfd, echoed = 0, send_errors = 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	role = "server";
	session_open(&s);
	mfd = memfd_region(NPAGES * PAGE, &region);
	for (uint32_t p = 0; p < NPAGES; p++)
		for (uint32_t b = 0; b < PAGE; b++)
			region[p * PAGE + b] = pattern(p, b);
	reg_mr(s.fd, region, NPAGES * PAGE, mfd, HOTPOT_RDMA_ACCESS_REMOTE_READ, &h.rkey);
	session_create_qps(&s, 2);
	memcpy(h.qp, s.local, sizeof(h.qp));

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1))
		die("listen");
	printf("server: listening on %d, device %s\n", port, s.bind.device);
	fflush(stdout);
	cfd = accept(lfd, NULL, NULL);
	if (cfd < 0)
		die("accept");
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	write_all(cfd, &h, sizeof(h));
	if (!read_all(cfd, &peer, sizeof(peer)) || peer.magic != MAGIC)
		die("client hello");
	session_connect(&s, peer.qp, 2);
	for (int i = 0; i < SERVER_RECVS; i++)
		if (post_msg(s.fd, HOTPOT_RDMA_IOC_POST_RECV, s.qp[0], rbuf[i], HOTPOT_RDMA_MAX_MSG, (uint64_t)i))
			die("post recv");
	write_all(cfd, "R", 1);

	for (;;) {
		struct pollfd pf[2] = { { .fd = cfd, .events = POLLIN }, { .fd = s.fd, .events = POLLIN } };
		int nfds = s.fd >= 0 ? 2 : 1;

		if (poll(pf, (nfds_t)nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (nfds == 2 && (pf[1].revents & POLLIN)) {
			struct hotpot_rdma_completion c[16];
			int n = reap(s.fd, c, 16, 0);

			for (int i = 0; i < n; i++) {
				if (c[i].opcode == HOTPOT_RDMA_OP_SEND) {
					send_errors += c[i].status != 0;
				} else if (c[i].opcode == HOTPOT_RDMA_OP_RECV && c[i].status == 0) {
					int k = (int)c[i].wr_id;

					/* echo with the first byte upper-cased, from a buffer of its own */
					memcpy(sbuf[k], rbuf[k], c[i].byte_len);
					sbuf[k][0] = (uint8_t)(sbuf[k][0] & ~0x20);
					if (post_msg(s.fd, HOTPOT_RDMA_IOC_POST_SEND, s.qp[0], sbuf[k], c[i].byte_len, 100))
						send_errors++;
					if (post_msg(s.fd, HOTPOT_RDMA_IOC_POST_RECV, s.qp[0], rbuf[k], HOTPOT_RDMA_MAX_MSG,
						     (uint64_t)k))
						send_errors++;
					echoed++;
				}
			}
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t cmd[8];

			if (!read_all(cfd, cmd, sizeof(cmd)) || cmd[0] == 'Q')
				break;
			if (cmd[0] == 'F') { /* TCP page fetch: the baseline */
				uint32_t p;

				memcpy(&p, cmd + 4, 4);
				write_all(cfd, region + (p % NPAGES) * PAGE, PAGE);
			} else if (cmd[0] == 'K') {
				/* Vanish: QPs, region and posted receives go with the file, while the client reads. */
				double t0 = now_us();

				close(s.fd);
				s.fd = -1;
				printf("server: closed the session with a connected QP and posted receives in %.0f us\n",
				       now_us() - t0);
				write_all(cfd, "k", 1);
			}
		}
	}
	check(echoed >= 8, "server echoed the client's RDMA messages", "%d echoed", echoed);
	check(send_errors == 0, "server's echo sends completed", "%d errors", send_errors);
	if (s.fd >= 0)
		close(s.fd);
	close(cfd);
	close(lfd);
	printf("%s: %d passed, %d failed\n", role, passed, failed);
	return failed ? 1 : 0;
}

/* ---- client ---- */

/* Argument validation on a session of its own, before any peer exists. */
static void client_validation(void)
{
	struct session s;
	uint8_t *region, *other, *priv;
	int mfd, mfd2, fd2;
	uint32_t mr_ro, mr_rw, qp;

	session_open(&s);
	check(s.bind.abi_version == HOTPOT_RDMA_ABI_VERSION && s.bind.mtu >= 256, "bind reports ABI and MTU",
	      "abi %u mtu %u", s.bind.abi_version, s.bind.mtu);
	expect_errno(s.fd, HOTPOT_RDMA_IOC_BIND, &s.bind, EALREADY, "a second bind is refused (EALREADY)");
	fd2 = open(HOTPOT_RDMA_DEVICE_PATH, O_RDWR);
	{
		struct hotpot_rdma_bind b = { .device = "no-such-device" };
		struct hotpot_rdma_create_qp c = { 0 };

		expect_errno(fd2, HOTPOT_RDMA_IOC_CREATE_QP, &c, ENOTCONN, "create qp before bind is refused (ENOTCONN)");
		expect_errno(fd2, HOTPOT_RDMA_IOC_BIND, &b, ENODEV, "bind to an unknown device is refused (ENODEV)");
		memset(&b, 0, sizeof(b));
		b.gid_index = 100000;
		expect_errno(fd2, HOTPOT_RDMA_IOC_BIND, &b, EINVAL, "bind with a GID index past the table (EINVAL)");
		memset(&b, 'x', sizeof(b.device));
		b.gid_index = 0;
		expect_errno(fd2, HOTPOT_RDMA_IOC_BIND, &b, EINVAL, "bind with an unterminated device name (EINVAL)");
	}
	close(fd2);
	check(ioctl(s.fd, _IOW(HOTPOT_RDMA_IOC_MAGIC, 99, uint64_t), &(uint64_t){ 0 }) == -1 && errno == ENOTTY,
	      "an unknown ioctl is refused (ENOTTY)", "errno %d", errno);

	mfd = memfd_region(NPAGES * PAGE, &region);
	mfd2 = memfd_region(PAGE, &other);
	priv = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
	if (priv == MAP_FAILED)
		die("mmap private");
	{
		struct hotpot_rdma_reg_mr r = { .addr = (uintptr_t)region, .length = NPAGES * PAGE, .fd = mfd,
						.access = HOTPOT_RDMA_ACCESS_ALL };
		struct hotpot_rdma_reg_mr t;
		void *gone;

		t = r, t.length = 0;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: zero length (EINVAL)");
		t = r, t.addr += 1;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: unaligned address (EINVAL)");
		t = r, t.access = 0x80;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: unknown access bits (EINVAL)");
		t = r, t.length = 1ull << 40;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, E2BIG, "register: longer than max_mr_bytes (E2BIG)");
		t = r, t.addr = ~0ull & ~(uint64_t)(PAGE - 1);
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EFAULT, "register: range wraps around (EFAULT)");
		t = r, t.fd = 9999;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EBADF, "register: a closed fd (EBADF)");
		t = r, t.fd = mfd2;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: fd of another file (EINVAL)");
		t = r, t.length = (NPAGES + 1) * PAGE;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: range past the file's mapping (EINVAL)");
		t = r, t.addr = (uintptr_t)priv;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: a private mapping of the file (EINVAL)");
		gone = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		munmap(gone, PAGE);
		t = r, t.addr = (uintptr_t)gone, t.length = PAGE, t.fd = -1;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EFAULT, "register: unmapped memory (EFAULT)");
		t = r, t.mr_id = 5;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REG_MR, &t, EINVAL, "register: out field not zero (EINVAL)");
	}
	mr_rw = reg_mr(s.fd, region, NPAGES * PAGE, mfd, HOTPOT_RDMA_ACCESS_ALL, NULL);
	mr_ro = reg_mr(s.fd, other, PAGE, mfd2, HOTPOT_RDMA_ACCESS_REMOTE_READ, NULL);
	check(mr_rw && mr_ro && mr_rw != mr_ro, "register: a file's shared mapping is accepted", "ids %u %u", mr_rw,
	      mr_ro);
	{
		struct hotpot_rdma_handle h = { .id = 777 };

		expect_errno(s.fd, HOTPOT_RDMA_IOC_DEREG_MR, &h, ENOENT, "deregister: unknown region (ENOENT)");
	}

	session_create_qps(&s, 1);
	qp = s.qp[0];
	{
		struct hotpot_rdma_connect c = { .qp_id = qp, .remote_qpn = 17 };
		struct hotpot_rdma_connect t;

		memcpy(c.remote_gid, s.bind.gid, 16);
		t = c, t.qp_id = 4242;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &t, ENOENT, "connect: unknown QP (ENOENT)");
		t = c, t.remote_qpn = 0;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &t, EINVAL, "connect: QP number 0 (EINVAL)");
		t = c, t.remote_qpn = 1u << 24;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &t, EINVAL, "connect: QP number over 24 bits (EINVAL)");
		t = c, memset(t.remote_gid, 0, 16);
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &t, EINVAL, "connect: zero GID (EINVAL)");
		t = c, memset(t.remote_gid, 0, 16), t.remote_gid[0] = 0x20, t.remote_gid[15] = 1;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &t, EDESTADDRREQ,
			     "connect: routable GID without a MAC (EDESTADDRREQ)");
	}
	expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ,
		     &(struct hotpot_rdma_post_read){ .qp_id = qp, .mr_id = mr_rw, .rkey = 1, .length = PAGE }, ENOTCONN,
		     "read: QP not connected (ENOTCONN)");
	{
		struct hotpot_rdma_post_read p = { .qp_id = qp, .mr_id = mr_rw, .rkey = 1, .length = PAGE };
		struct hotpot_rdma_post_read t;

		t = p, t.qp_id = 999;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, ENOENT, "read: unknown QP (ENOENT)");
		t = p, t.mr_id = 999;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, ENOENT, "read: unknown local region (ENOENT)");
		t = p, t.length = 0;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, EINVAL, "read: zero length (EINVAL)");
		t = p, t.length = 64u << 20;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, EINVAL, "read: longer than max_read_bytes (EINVAL)");
		t = p, t.local_offset = NPAGES * PAGE;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, ERANGE, "read: local offset at the region's end (ERANGE)");
		t = p, t.local_offset = (NPAGES - 1) * PAGE + 1;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, ERANGE, "read: local range past the region (ERANGE)");
		t = p, t.local_offset = ~0ull - 10;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, ERANGE, "read: local offset overflows (ERANGE)");
		t = p, t.mr_id = mr_ro;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, EACCES, "read: into a region not locally writable (EACCES)");
		t = p, t.remote_addr = ~0ull - 10;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ, &t, EINVAL, "read: remote range wraps (EINVAL)");
	}
	{
		char m[8] = "x";
		struct hotpot_rdma_completion c[4];
		struct hotpot_rdma_reap r = { .entries = (uintptr_t)c, .max_entries = 4 };

		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_SEND,
			     &(struct hotpot_rdma_post_msg){ .qp_id = qp, .addr = (uintptr_t)m, .length = 0 }, EINVAL,
			     "send: zero length (EINVAL)");
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_SEND,
			     &(struct hotpot_rdma_post_msg){ .qp_id = qp, .addr = (uintptr_t)m,
							     .length = HOTPOT_RDMA_MAX_MSG + 1 },
			     EINVAL, "send: longer than HOTPOT_RDMA_MAX_MSG (EINVAL)");
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_RECV,
			     &(struct hotpot_rdma_post_msg){ .qp_id = qp, .addr = (uintptr_t)m, .length = 8 }, ENOTCONN,
			     "receive: QP not connected (ENOTCONN)");
		r.max_entries = 0;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REAP, &r, EINVAL, "reap: no room for entries (EINVAL)");
		r.max_entries = 4, r.reserved = 1;
		expect_errno(s.fd, HOTPOT_RDMA_IOC_REAP, &r, EINVAL, "reap: reserved field set (EINVAL)");
		r.reserved = 0, r.entries = 8;
		r.timeout_ms = 0;
		check(reap(s.fd, c, 4, 0) == 0, "reap: nothing to reap returns 0 at once", "errno %d", errno);
		{
			double t0 = now_us();
			int n = reap(s.fd, c, 4, 200);

			check(n == 0 && now_us() - t0 >= 150000, "reap: waits for its timeout when nothing completes",
			      "n %d after %.0f us", n, now_us() - t0);
		}
	}
	{
		pid_t pid = fork();

		if (pid == 0) { /* another address space: the fd is inherited, its pages are not ours */
			struct hotpot_rdma_create_qp c = { 0 };

			_exit(ioctl(s.fd, HOTPOT_RDMA_IOC_CREATE_QP, &c) == -1 && errno == EPERM ? 0 : 1);
		}
		int st = 0;

		waitpid(pid, &st, 0);
		check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a forked child cannot use its parent's session (EPERM)",
		      "status %d", st);
	}
	{
		struct hotpot_rdma_handle h = { .id = mr_ro };

		check(ioctl(s.fd, HOTPOT_RDMA_IOC_DEREG_MR, &h) == 0, "deregister a region", "%s", strerror(errno));
		expect_errno(s.fd, HOTPOT_RDMA_IOC_DEREG_MR, &h, ENOENT, "deregister twice (ENOENT)");
	}
	/* Close with a QP connected to nobody and a read in flight: the read is flushed, the close is clean. */
	{
		struct hotpot_rdma_connect c = { .qp_id = qp, .remote_qpn = 0x123 };
		long before = counter("qps_open");
		double t0;

		memcpy(c.remote_gid, s.bind.gid, 16);
		c.remote_gid[15] ^= 0x55; /* a link-local GID whose MAC nobody has */
		check(ioctl(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &c) == 0, "connect to an absent peer succeeds locally", "%s",
		      strerror(errno));
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CONNECT_QP, &c, EISCONN, "connect twice (EISCONN)");
		check(post_read(s.fd, qp, mr_rw, 0, 0, 0x1234, PAGE, 1) == 0, "read to an absent peer is posted", "%s",
		      strerror(errno));
		t0 = now_us();
		close(s.fd);
		check(counter("qps_open") == before - 1, "close with a read in flight frees the QP",
		      "qps_open %ld, was %ld (%.0f us)", counter("qps_open"), before, now_us() - t0);
	}
	munmap(priv, NPAGES * PAGE);
	munmap(region, NPAGES * PAGE);
	munmap(other, PAGE);
	close(mfd);
	close(mfd2);
}

static int tcp_connect(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;

	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		die("peer address");
	for (int i = 0; i < 600; i++) { /* the server's guest may boot later */
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		close(fd);
		usleep(100000);
	}
	die("connect to server");
	return -1;
}

static void tcp_cmd(int fd, char c, uint32_t arg)
{
	uint8_t cmd[8] = { (uint8_t)c };

	memcpy(cmd + 4, &arg, 4);
	write_all(fd, cmd, sizeof(cmd));
}

static int pages_match(const uint8_t *buf, uint32_t first, uint32_t n)
{
	for (uint32_t p = 0; p < n; p++)
		for (uint32_t b = 0; b < PAGE; b++)
			if (buf[p * PAGE + b] != pattern(first + p, b))
				return 0;
	return 1;
}

/* Waits for one completion (or gives up after timeout_ms). */
static int reap_one(int fd, struct hotpot_rdma_completion *c, int timeout_ms)
{
	return reap(fd, c, 1, timeout_ms) == 1;
}

static int run_client(const char *ip, int port, int iters, const char *link_to_delete)
{
	struct session s;
	struct hello h = { .magic = MAGIC, .nqps = 2 }, srv;
	struct hotpot_rdma_completion c;
	uint8_t *local;
	uint32_t mr;
	int tfd, lfd;
	char ready;

	role = "client";
	client_validation();

	session_open(&s);
	lfd = memfd_region(NPAGES * PAGE, &local);
	mr = reg_mr(s.fd, local, NPAGES * PAGE, lfd, HOTPOT_RDMA_ACCESS_LOCAL_WRITE, NULL);
	session_create_qps(&s, 2);
	memcpy(h.qp, s.local, sizeof(h.qp));
	tfd = tcp_connect(ip, port);
	if (!read_all(tfd, &srv, sizeof(srv)) || srv.magic != MAGIC || srv.region_len != NPAGES * PAGE)
		die("server hello");
	write_all(tfd, &h, sizeof(h));
	session_connect(&s, srv.qp, 2);
	if (!read_all(tfd, &ready, 1) || ready != 'R')
		die("server ready");
	printf("client: connected over %s to QPs %u/%u, rkey 0x%x\n", s.bind.device, srv.qp[0].qpn, srv.qp[1].qpn,
	       srv.rkey);

	/* One-sided READ of every page, 4 KiB each, all in flight at once. */
	{
		int ok = 1, n = 0;

		memset(local, 0, NPAGES * PAGE);
		for (uint32_t p = 0; p < NPAGES; p++)
			ok &= post_read(s.fd, s.qp[0], mr, p * PAGE, p * PAGE, srv.rkey, PAGE, p) == 0;
		while (n < (int)NPAGES && reap_one(s.fd, &c, 5000)) {
			ok &= c.status == 0 && c.opcode == HOTPOT_RDMA_OP_READ && c.qp_id == s.qp[0];
			n++;
		}
		check(ok && n == (int)NPAGES, "64 RDMA READs of 4 KiB pages complete", "%d completions, last status %d",
		      n, c.status);
		check(pages_match(local, 0, NPAGES), "every byte read equals the server's page file", "mismatch");
	}
	/* One 256 KiB READ into a shifted local offset. */
	{
		memset(local, 0, NPAGES * PAGE);
		int ok = post_read(s.fd, s.qp[0], mr, PAGE, 0, srv.rkey, (NPAGES - 1) * PAGE, 77) == 0 &&
			 reap_one(s.fd, &c, 5000) && c.status == 0 && c.wr_id == 77;

		check(ok && pages_match(local + PAGE, 0, NPAGES - 1), "one 252 KiB READ lands at the local offset",
		      "status %d", c.status);
	}
	/* SEND/RECV: small protocol messages, echoed by the server. */
	{
		char out[64], in[HOTPOT_RDMA_MAX_MSG];
		int good = 0;

		for (int i = 0; i < 8; i++) {
			int len = snprintf(out, sizeof(out), "ping %d from the client", i);
			int got_send = 0, got_recv = 0;

			memset(in, 0, sizeof(in));
			if (post_msg(s.fd, HOTPOT_RDMA_IOC_POST_RECV, s.qp[0], in, sizeof(in), 500 + (uint64_t)i) ||
			    post_msg(s.fd, HOTPOT_RDMA_IOC_POST_SEND, s.qp[0], out, (uint32_t)len, 600 + (uint64_t)i))
				break;
			while ((!got_send || !got_recv) && reap_one(s.fd, &c, 5000)) {
				if (c.opcode == HOTPOT_RDMA_OP_SEND && c.status == 0)
					got_send = 1;
				if (c.opcode == HOTPOT_RDMA_OP_RECV && c.status == 0 && c.byte_len == (uint32_t)len &&
				    in[0] == 'P' && !memcmp(in + 1, out + 1, (size_t)len - 1))
					got_recv = 1;
			}
			good += got_send && got_recv;
		}
		check(good == 8, "8 SEND/RECV messages echoed by the peer with their bytes", "%d of 8", good);
	}
	/* Latency of a 4 KiB page fetch: one-sided READ vs a TCP request/response to the same peer, same run. */
	{
		double *rd = calloc((size_t)iters, sizeof(double)), *tc = calloc((size_t)iters, sizeof(double));
		uint8_t page[PAGE];
		int ok = rd && tc, n;

		for (n = 0; ok && n < iters; n++) {
			double t0 = now_us();

			uint32_t p = (uint32_t)n % NPAGES;

			memset(local + p * PAGE, 0, PAGE);
			ok = post_read(s.fd, s.qp[0], mr, p * PAGE, p * PAGE, srv.rkey, PAGE, 1000) == 0 &&
			     reap_one(s.fd, &c, 5000) && c.status == 0;
			rd[n] = now_us() - t0;
			t0 = now_us();
			tcp_cmd(tfd, 'F', p);
			ok = ok && read_all(tfd, page, PAGE);
			tc[n] = now_us() - t0;
			ok = ok && pages_match(page, p, 1) && pages_match(local + p * PAGE, p, 1);
		}
		check(ok, "READ and TCP fetch return the same page bytes while timed", "stopped at %d of %d", n, iters);
		if (ok && iters > 0) {
			double r50 = pct(rd, iters, 0.5), r90 = pct(rd, iters, 0.9), r99 = pct(rd, iters, 0.99);
			double t50 = pct(tc, iters, 0.5), t90 = pct(tc, iters, 0.9), t99 = pct(tc, iters, 0.99);

			printf("measure: n=%d 4KiB page fetch, us: rdma_read p50 %.1f p90 %.1f p99 %.1f | "
			       "tcp p50 %.1f p90 %.1f p99 %.1f | tcp/rdma p50 ratio %.2f\n",
			       iters, r50, r90, r99, t50, t90, t99, t50 / r50);
		}
		free(rd);
		free(tc);
	}
	/* A READ outside the peer's registered range: its device refuses it; that QP fails, the other one works. */
	{
		int refused = post_read(s.fd, s.qp[1], mr, 0, NPAGES * PAGE - PAGE / 2, srv.rkey, PAGE, 9) == 0;
		int queued = 0, flushed = 0;

		/* queued behind the refused one: they must complete too (flushed), not wait forever */
		for (int i = 0; i < 3; i++)
			queued += post_read(s.fd, s.qp[1], mr, PAGE, 0, srv.rkey, PAGE, 20 + (uint64_t)i) == 0;
		refused = refused && reap_one(s.fd, &c, 10000) && c.wr_id == 9 && c.status == EACCES;
		check(refused, "a READ past the end of the peer's region completes with EACCES", "status %d (%s)",
		      c.status, strerror(c.status));
		while (flushed < queued && reap_one(s.fd, &c, 10000))
			flushed += c.wr_id >= 20 && c.wr_id < 23 && c.status != 0;
		/* how many got queued depends on how fast the refusal comes back (the rest are refused at post) */
		check(flushed == queued, "reads queued behind a refused one complete with an error",
		      "%d of %d", flushed, queued);
		printf("client: %d reads were queued behind the refused one\n", queued);
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ,
			     &(struct hotpot_rdma_post_read){ .qp_id = s.qp[1], .mr_id = mr, .rkey = srv.rkey,
							      .length = PAGE },
			     ECONNRESET, "a failed QP refuses new reads (ECONNRESET)");
		memset(local, 0, PAGE);
		check(post_read(s.fd, s.qp[0], mr, 0, 5 * PAGE, srv.rkey, PAGE, 11) == 0 && reap_one(s.fd, &c, 5000) &&
			      c.status == 0 && pages_match(local, 5, 1),
		      "the other QP to the same peer still reads correct bytes", "status %d", c.status);
	}
	{
		long reads = counter("reads_posted"), pinned = counter("bytes_pinned");

		check(reads >= (long)NPAGES + iters && pinned >= (long)(NPAGES * PAGE),
		      "sysfs counters account the reads and pinned bytes", "reads_posted %ld bytes_pinned %ld", reads,
		      pinned);
	}
	check(syscall(SYS_delete_module, "hotpot_rdma", O_NONBLOCK) == -1 && errno == EWOULDBLOCK,
	      "the module refuses to unload while a session is open", "errno %d", errno);
	/* The server vanishes while reads are in flight: every read completes, the first failure says why, and
	 * the QP then refuses new reads. */
	{
		int inflight = 0, okreads = 0, err = 0;
		double t0 = 0, deadline;
		char k;

		for (; inflight < 16; inflight++)
			if (post_read(s.fd, s.qp[0], mr, 0, (uint64_t)(inflight % NPAGES) * PAGE, srv.rkey, PAGE, 2000))
				break;
		tcp_cmd(tfd, 'K', 0);
		deadline = now_us() + 60e6;
		while (!err && now_us() < deadline) {
			if (!reap_one(s.fd, &c, 1000))
				continue;
			inflight--;
			if (c.status) {
				err = c.status;
				break;
			}
			okreads++;
			if (!t0 && read(tfd, &k, 1) == 1) /* the server has closed its session by now */
				t0 = now_us();
			if (post_read(s.fd, s.qp[0], mr, 0, 0, srv.rkey, PAGE, 2001) == 0)
				inflight++;
		}
		check(err == ETIMEDOUT || err == EACCES || err == ECANCELED,
		      "peer gone mid-read: a read completes with an error instead of hanging",
		      "error %d (%s) after %d good reads", err, strerror(err), okreads);
		printf("client: peer gone: %d reads succeeded, first error %s %.0f ms after the server closed\n", okreads,
		       strerror(err), t0 ? (now_us() - t0) / 1e3 : -1.0);
		/* the rest are flushed */
		while (inflight > 0 && reap_one(s.fd, &c, 10000))
			inflight--;
		check(inflight == 0, "every read posted before the peer vanished is completed", "%d never completed",
		      inflight);
		expect_errno(s.fd, HOTPOT_RDMA_IOC_POST_READ,
			     &(struct hotpot_rdma_post_read){ .qp_id = s.qp[0], .mr_id = mr, .rkey = srv.rkey,
							      .length = PAGE },
			     ECONNRESET, "after the peer vanished the QP refuses reads (ECONNRESET)");
	}
	tcp_cmd(tfd, 'Q', 0);
	close(tfd);
	if (link_to_delete) {
		/* The device goes away under an open session: resources freed, calls say ENODEV, poll says HUP. */
		struct pollfd pf = { .fd = s.fd, .events = POLLIN };
		struct hotpot_rdma_create_qp cq = { 0 };
		char cmd[160];
		int rc;

		snprintf(cmd, sizeof(cmd), "rdma link delete %s", link_to_delete);
		rc = system(cmd);
		check(rc == 0, "rdma link delete under an open session", "rc %d", rc);
		expect_errno(s.fd, HOTPOT_RDMA_IOC_CREATE_QP, &cq, ENODEV, "after device removal calls fail (ENODEV)");
		check(poll(&pf, 1, 1000) == 1 && (pf.revents & POLLHUP), "after device removal poll reports POLLHUP",
		      "revents 0x%x", pf.revents);
		check(counter("mrs_open") == 0 && counter("qps_open") == 0,
		      "device removal freed the session's regions and QPs", "mrs_open %ld qps_open %ld",
		      counter("mrs_open"), counter("qps_open"));
	}
	close(s.fd);
	check(counter("sessions_open") == 0, "no session is left open", "sessions_open %ld", counter("sessions_open"));
	printf("%s: %d passed, %d failed\n", role, passed, failed);
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return run_server(atoi(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "client"))
		return run_client(argv[2], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 1000, argc > 5 ? argv[5] : NULL);
	fprintf(stderr, "usage: %s server PORT | client PEER_IPV4 PORT [ITERS] [RDMA_LINK_TO_DELETE]\n", argv[0]);
	return 2;
}
