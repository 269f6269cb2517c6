/* The open family of the busbridge preload library (see preload.c): open(),
 * openat() and their 64-bit and _FORTIFY_SOURCE variants.  A path the kernel
 * would resolve to /dev/i2c-N or /dev/spidevB.C of a bus the remote board has
 * (directly, or through /proc/self/fd/N of one of our descriptors) becomes an
 * OPEN to the agent and a sealed memfd holding the per-open state; any other
 * path goes to libc untouched.  Apart because it is the one place that creates
 * emulated descriptors, and the path parsing it needs is long.
 */
#define _GNU_SOURCE
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* open                                                                      */

/* A decimal number as the kernel names devices ("%d": no sign, no leading zero)
 * up to max; its end in *end, or -1. */
static long number(const char *p, const char **end, long max)
{
	long v = 0;
	if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > max)
			return -1;
	}
	*end = p;
	return v;
}

/* "/dev/i2c-N" or "/dev/spidevB.C" exactly as the kernel names them -> kind, else 0. */
static int match(const char *path, int *bus, int *cs)
{
	const char *p, *end;
	int kind;
	if (!bb_active || !path)
		return 0;
	if (strncmp(path, "/dev/i2c-", 9) == 0) {
		p = path + 9;
		kind = BB_KIND_I2C;
	} else if (strncmp(path, "/dev/spidev", 11) == 0) {
		p = path + 11;
		kind = BB_KIND_SPI;
	} else {
		return 0;
	}
	long b = number(p, &end, 0xFFFFF);
	if (b < 0)
		return 0;
	*bus = (int)b;
	*cs = 0;
	if (kind == BB_KIND_SPI) {
		if (*end != '.')
			return 0;
		long c = number(end + 1, &end, 0xFFFF);
		if (c < 0)
			return 0;
		*cs = (int)c;
	}
	return *end == '\0' ? kind : 0;
}

/* The descriptor a /proc/self/fd/N, /proc/<our pid>/fd/N, /proc/thread-self/fd/N
 * or /dev/fd/N path names, or -1. */
int bb_proc_fd(const char *path)
{
	const char *p, *end;
	char mine[32];
	if (!path || (strncmp(path, "/proc/", 6) != 0 && strncmp(path, "/dev/fd/", 8) != 0))
		return -1;
	snprintf(mine, sizeof mine, "/proc/%d/fd/", (int)getpid());
	if (strncmp(path, "/proc/self/fd/", 14) == 0)
		p = path + 14;
	else if (strncmp(path, "/proc/thread-self/fd/", 21) == 0)
		p = path + 21;
	else if (strncmp(path, "/dev/fd/", 8) == 0)
		p = path + 8;
	else if (strncmp(path, mine, strlen(mine)) == 0)
		p = path + strlen(mine);
	else
		return -1;
	long fd = number(p, &end, INT_MAX);
	return fd < 0 || *end ? -1 : (int)fd;
}

/* Opening /proc/self/fd/N of a device descriptor (O_PATH ones included) opens
 * the device again in the kernel: a new open file.  The memfd's name says which
 * device ("/memfd:busbridge-i2c-1 (deleted)"); its path goes to out. */
static int reopened_device(const char *path, char *out, size_t n)
{
	static const char head[] = "/memfd:" MEMFD_PREFIX, tail[] = " (deleted)";
	char target[96];
	if (!bb_active || bb_proc_fd(path) < 0)
		return 0;
	ssize_t len = readlink(path, target, sizeof target - 1);
	if (len <= 0)
		return 0;
	target[len] = '\0';
	size_t h = sizeof head - 1, t = sizeof tail - 1;
	if ((size_t)len <= h + t || strncmp(target, head, h) != 0 ||
	    strcmp(target + len - t, tail) != 0)
		return 0;
	target[len - t] = '\0';
	return snprintf(out, n, "/dev/%s", target + h) < (int)n;
}

/* Returns a descriptor, -1 with errno set, or -2: not a remote device, open the
 * path for real (a bus the board does not have stays the local machine's). */
static int bb_open(const char *path, int flags)
{
	char again[96];
	if (reopened_device(path, again, sizeof again))
		path = again;
	int bus, cs;
	int kind = match(path, &bus, &cs);
	if (!kind)
		return -2;
	struct bb_buf body = {0};
	struct bb_reply r;
	bb_put32(&body, (uint32_t)bus);
	if (kind == BB_KIND_SPI)
		bb_put32(&body, (uint32_t)cs);
	int rc = bb_call(kind == BB_KIND_I2C ? BB_OP_OPEN_I2C : BB_OP_OPEN_SPI, 0, &body, &r);
	free(body.p);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	if (r.res == -ENOENT) {
		bb_reply_free(&r);
		return -2;
	}
	if (r.res < 0 || r.len < 8) {
		errno = r.res < 0 ? -r.res : EIO;
		bb_reply_free(&r);
		return -1;
	}
	uint32_t handle, extra;
	memcpy(&handle, r.data, 4);
	memcpy(&extra, r.data + 4, 4);
	bb_reply_free(&r);

	int err = 0, fd = -1, mfd = -1;
	struct bb_state *st = MAP_FAILED;
	if (flags & O_DIRECTORY) {
		err = ENOTDIR; /* a character device is not a directory */
		goto fail;
	}
	if (!(flags & O_PATH) && (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) {
		err = EEXIST;
		goto fail;
	}
	char name[64], self[64];
	snprintf(name, sizeof name, MEMFD_PREFIX "%s", path + 5);
	mfd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0) {
		err = errno;
		goto fail;
	}
	snprintf(self, sizeof self, "/proc/self/fd/%d", mfd);
	if (flags & O_PATH) {
		/* The kernel opens no driver for O_PATH: a descriptor on which read,
		 * write and ioctl fail EBADF and fstat works; the agent has no part. */
		bb_send_only(BB_OP_CLOSE, handle);
		fd = REAL(open)(self, O_PATH | (flags & O_CLOEXEC));
		err = errno;
		REAL(close)(mfd);
		if (fd < 0)
			errno = err;
		return fd;
	}
	if (REAL(ftruncate)(mfd, STATE_SIZE) < 0) {
		err = errno;
		goto fail;
	}
	st = REAL(mmap)(NULL, STATE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (st == MAP_FAILED || REAL(fcntl)(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		err = errno;
		goto fail;
	}
	/* The program's descriptor: write-only (no read of the state, no mmap) and
	 * append-only past a size that cannot grow (no write reaches the state). */
	fd = REAL(open)(self, O_WRONLY | O_APPEND | (flags & (O_CLOEXEC | O_NONBLOCK)));
	if (fd < 0) {
		err = errno;
		goto fail;
	}
	REAL(close)(mfd);
	mfd = -1;
	memset(st, 0, sizeof *st);
	st->magic = BB_STATE_MAGIC;
	st->agent = bb_agent_id;
	st->kind = (uint32_t)kind;
	st->handle = handle;
	st->accmode = (uint32_t)(flags & O_ACCMODE);
	if (kind == BB_KIND_I2C)
		st->funcs = extra;
	else
		st->bufsiz = extra;
	st->append = (uint32_t)(flags & O_APPEND);
	/* O_NONBLOCK: i2c-dev and spidev ignore it; F_GETFL still shows it. */
	if (!bb_adopt(fd, st, 1)) {
		err = ENOMEM;
		goto fail;
	}
	return fd;
fail:
	if (st != MAP_FAILED)
		munmap(st, STATE_SIZE);
	if (fd >= 0)
		REAL(close)(fd);
	if (mfd >= 0)
		REAL(close)(mfd);
	bb_send_only(BB_OP_CLOSE, handle);
	errno = err;
	return -1;
}


#define OPEN_BODY(realcall)                      \
	UNTRUSTED(path);                         \
	int fd = bb_open(path, flags);           \
	if (fd != -2)                            \
		return fd;                       \
	return realcall;

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(REAL(open)(path, flags, mode))
}

EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(REAL(open64)(path, flags, mode))
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	UNTRUSTED(path);
	if (path && path[0] != '/')
		return REAL(openat)(dirfd, path, flags, mode);
	OPEN_BODY(REAL(openat)(dirfd, path, flags, mode))
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	UNTRUSTED(path);
	if (path && path[0] != '/')
		return REAL(openat64)(dirfd, path, flags, mode);
	OPEN_BODY(REAL(openat64)(dirfd, path, flags, mode))
}

/* _FORTIFY_SOURCE builds call these instead of open()/openat(). */
EXPORT int __open_2(const char *path, int flags) { OPEN_BODY(REAL(__open_2)(path, flags)) }
EXPORT int __open64_2(const char *path, int flags) { OPEN_BODY(REAL(__open64_2)(path, flags)) }

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	UNTRUSTED(path);
	if (path && path[0] != '/')
		return REAL(__openat_2)(dirfd, path, flags);
	OPEN_BODY(REAL(__openat_2)(dirfd, path, flags))
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	UNTRUSTED(path);
	if (path && path[0] != '/')
		return REAL(__openat64_2)(dirfd, path, flags);
	OPEN_BODY(REAL(__openat64_2)(dirfd, path, flags))
}
