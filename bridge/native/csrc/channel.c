/* The channel to the agent and the program's memory, for the interposer
 * (preload.c, open.c, io.c), i2cdev.c and spidev.c: one Unix stream connection
 * per process (a forked child opens its own), one request at a time under a
 * lock, and copies that fail with EFAULT.
 * Closes and writes here are system calls, not the interposed libc functions.
 */
#define _GNU_SOURCE
#include "bb.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

static char agent_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pid_t self_pid;
static int vm_copy_ok = 1;  /* process_vm_readv/writev usable (seccomp may forbid them) */

static pthread_mutex_t agent_mu = PTHREAD_MUTEX_INITIALIZER;
static int agent_fd = -1;

static void say_once(const char *what)
{
	static int said;
	char line[512];
	if (said)
		return;
	said = 1;
	int n = snprintf(line, sizeof line, "busbridge: %s (agent %s)\n", what, agent_path);
	if (n > 0)
		(void)!syscall(SYS_write, 2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static int agent_connect_locked(void)
{
	if (agent_fd >= 0)
		return 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, agent_path, sizeof sa.sun_path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		syscall(SYS_close, fd);
		say_once("the local agent of `busbridge run` is not reachable; remote devices fail "
			 "with ENODEV");
		return -e;
	}
	agent_fd = fd;
	return 0;
}

static void agent_drop_locked(void)
{
	if (agent_fd >= 0)
		syscall(SYS_close, agent_fd);
	agent_fd = -1;
}

static int send_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int recv_all(int fd, unsigned char *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue; /* a request is never abandoned half-way: the stream stays in step */
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

void bb_put(struct bb_buf *b, const void *data, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		unsigned char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
}

void bb_put32(struct bb_buf *b, uint32_t v) { bb_put(b, &v, 4); }
void bb_put16(struct bb_buf *b, uint16_t v) { bb_put(b, &v, 2); }

void bb_reply_free(struct bb_reply *r)
{
	free(r->data);
	r->data = NULL;
	r->len = 0;
}

/* Frame: u32 length of what follows, u32 op, u32 handle, body. Reply: u32
 * length, i32 result, data. */
static int call_locked(uint32_t op, uint32_t handle, const struct bb_buf *body,
		       struct bb_reply *reply)
{
	int rc = agent_connect_locked();
	if (rc < 0)
		return -ENODEV;
	size_t blen = body ? body->len : 0;
	uint32_t head[3] = {(uint32_t)(8 + blen), op, handle};
	/* One sendmsg for head and body: one wake-up of the agent, not two. */
	struct iovec iov[2] = {{head, sizeof head}, {blen ? body->p : NULL, blen}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = blen ? 2 : 1};
	ssize_t sent = sendmsg(agent_fd, &mh, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR)
		sent = sendmsg(agent_fd, &mh, MSG_NOSIGNAL);
	if (sent < 0)
		goto lost;
	if ((size_t)sent < sizeof head + blen) { /* a short send: finish it piece by piece */
		size_t done = (size_t)sent;
		if (done < sizeof head) {
			if (send_all(agent_fd, (unsigned char *)head + done, sizeof head - done) < 0)
				goto lost;
			done = sizeof head;
		}
		if (send_all(agent_fd, body->p + (done - sizeof head), blen - (done - sizeof head)) < 0)
			goto lost;
	}
	if (!reply)
		return 0;
	uint32_t len;
	if (recv_all(agent_fd, (unsigned char *)&len, 4) < 0 || len < 4)
		goto lost;
	int32_t res;
	if (recv_all(agent_fd, (unsigned char *)&res, 4) < 0)
		goto lost;
	reply->res = res;
	reply->len = len - 4;
	reply->data = malloc(reply->len ? reply->len : 1);
	if (!reply->data) {
		/* Still drain the reply so the stream stays in step. */
		unsigned char sink[4096];
		for (size_t left = len - 4; left;) {
			size_t k = left < sizeof sink ? left : sizeof sink;
			if (recv_all(agent_fd, sink, k) < 0)
				goto lost;
			left -= k;
		}
		reply->len = 0;
		reply->res = -ENOMEM;
		return 0;
	}
	if (reply->len && recv_all(agent_fd, reply->data, reply->len) < 0) {
		bb_reply_free(reply);
		goto lost;
	}
	return 0;
lost:
	agent_drop_locked();
	/* Gone for good (busbridge run ended) or only this connection?  ENODEV, as for
	 * every later call, when the agent is not there any more; else EIO: this
	 * request's effect is unknown, the next one uses the new connection. */
	if (agent_connect_locked() < 0)
		return -ENODEV;
	say_once("lost the connection to the local agent of `busbridge run`");
	return -EIO;
}

int bb_call(uint32_t op, uint32_t handle, const struct bb_buf *body, struct bb_reply *reply)
{
	if (body && body->oom)
		return -ENOMEM;
	reply->data = NULL;
	reply->len = 0;
	pthread_mutex_lock(&agent_mu);
	int rc = call_locked(op, handle, body, reply);
	pthread_mutex_unlock(&agent_mu);
	return rc;
}

void bb_send_only(uint32_t op, uint32_t handle)
{
	pthread_mutex_lock(&agent_mu);
	if (agent_fd >= 0) /* no connection: nothing to tell */
		(void)call_locked(op, handle, NULL, NULL);
	pthread_mutex_unlock(&agent_mu);
}

/* ------------------------------------------------------------------------ */
/* User memory                                                               */

static int vm_copy(int out, void *local, void *remote, size_t n)
{
	if (!n)
		return 0;
	if (vm_copy_ok) {
		struct iovec l = {local, n}, r = {remote, n};
		ssize_t got = out ? process_vm_writev(self_pid, &l, 1, &r, 1, 0)
				  : process_vm_readv(self_pid, &l, 1, &r, 1, 0);
		if (got == (ssize_t)n)
			return 0;
		if (got >= 0 || errno == EFAULT)
			return -EFAULT;
		vm_copy_ok = 0; /* ENOSYS / EPERM (seccomp): plain copies from now on */
	}
	if (!remote)
		return -EFAULT;
	if (out)
		memcpy(remote, local, n);
	else
		memcpy(local, remote, n);
	return 0;
}

int bb_copy_in(void *dst, const void *user, size_t n) { return vm_copy(0, dst, (void *)user, n); }
int bb_copy_out(void *user, const void *src, size_t n) { return vm_copy(1, (void *)src, user, n); }


int bb_channel_init(const char *path, uint32_t *id)
{
	if (strlen(path) >= sizeof agent_path)
		return -1;
	strcpy(agent_path, path);
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const char *c = path; *c; c++)
		h = (h ^ (unsigned char)*c) * 16777619u;
	*id = h;
	self_pid = getpid();
	return 0;
}

void bb_channel_after_fork(void)
{
	/* The parent's connection is the parent's; a lock held by another thread at
	 * fork() time would never be released in the child. */
	pthread_mutex_init(&agent_mu, NULL);
	if (agent_fd >= 0)
		syscall(SYS_close, agent_fd);
	agent_fd = -1;
	self_pid = getpid();
}
