/* busbridge native preload: /dev/i2c-N and /dev/spidevB.C of a remote board for
 * unmodified dynamically linked programs (LD_PRELOAD, set by `busbridge run`).
 *
 * open() of a device path the agent knows (the remote board has that bus) hands
 * the program a real descriptor: a memfd named "busbridge-<dev>" whose first
 * page holds the per-open state (struct bb_state).  ioctl(), read(), write(),
 * the pread/readv/preadv families, their fortified variants, lseek(), close(),
 * dup*(), fcntl(), ftruncate(), mmap() and sendfile()/splice()/copy_file_range()
 * on such a descriptor are emulated; everything else goes to libc untouched.
 * The descriptor itself is inert: the memfd reopened O_WRONLY|O_APPEND with its
 * size sealed, so what bypasses libc (io_uring, raw system calls) cannot read
 * the state (EBADF) nor write or truncate it (EPERM).  Why a memfd:
 *   - it is a real descriptor: poll()/select() report it ready at once, which
 *     is what the kernel does for i2c-dev and spidev (neither has a poll
 *     method, so DEFAULT_POLLMASK applies), and epoll refuses it (EPERM) as it
 *     refuses them;
 *   - its state is shared by dup() and fork() like struct file, and exec()
 *     keeps it: the library finds such descriptors again at start-up.
 * Without BUSBRIDGE_NATIVE_SOCKET in the environment the library is inert.
 */
#define _GNU_SOURCE
#include "bb.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define STATE_SIZE 4096
#define MEMFD_PREFIX "busbridge-"

/* ------------------------------------------------------------------------ */
/* The real libc functions                                                   */

#define REAL(name)                                  \
	({                                          \
		if (!real_##name)                   \
			real_##name = resolve(#name); \
		real_##name;                        \
	})
static void *resolve(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (!p) {
		static const char msg[] = "busbridge preload: a libc symbol is missing\n";
		(void)!write(2, msg, sizeof msg - 1);
		abort();
	}
	return p;
}

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real___open_2)(const char *, int);
static int (*real___open64_2)(const char *, int);
static int (*real___openat_2)(int, const char *, int);
static int (*real___openat64_2)(int, const char *, int);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_ioctl)(int, unsigned long, ...);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static ssize_t (*real_pread64)(int, void *, size_t, off64_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static off_t (*real_lseek)(int, off_t, int);
static off64_t (*real_lseek64)(int, off64_t, int);
static ssize_t (*real___read_chk)(int, void *, size_t, size_t);
static ssize_t (*real___pread_chk)(int, void *, size_t, off_t, size_t);
static ssize_t (*real___pread64_chk)(int, void *, size_t, off64_t, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_preadv)(int, const struct iovec *, int, off_t);
static ssize_t (*real_preadv64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_preadv2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_preadv64v2)(int, const struct iovec *, int, off64_t, int);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_truncate)(const char *, off_t);
static int (*real_truncate64)(const char *, off64_t);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off64_t);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static ssize_t (*real_sendfile64)(int, int, off64_t *, size_t);
static ssize_t (*real_splice)(int, off64_t *, int, off64_t *, size_t, unsigned int);
static ssize_t (*real_tee)(int, int, size_t, unsigned int);
static ssize_t (*real_copy_file_range)(int, off64_t *, int, off64_t *, size_t, unsigned int);

/* ------------------------------------------------------------------------ */
/* Configuration                                                              */

static uint32_t agent_id; /* tells our memfds from those of another run (channel.c) */
static int active;        /* BUSBRIDGE_NATIVE_SOCKET was set */

/* ------------------------------------------------------------------------ */
/* The table of emulated descriptors                                         */

struct bb_file {
	struct bb_state *st;
	int refs;    /* descriptors of this process that point here */
	int busy;    /* calls in progress on it */
	int opened;  /* this process sent the OPEN (so it sends the CLOSE) */
	dev_t dev;
	ino_t ino;
};

#define PAGE_FDS 1024
#define PAGES 1024 /* descriptors up to 1,048,575 */
static struct bb_file **table[PAGES];
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static struct bb_file **slot(int fd, int create)
{
	if (fd < 0 || fd >= PAGE_FDS * PAGES)
		return NULL;
	struct bb_file **page = __atomic_load_n(&table[fd / PAGE_FDS], __ATOMIC_ACQUIRE);
	if (!page && create) {
		page = calloc(PAGE_FDS, sizeof *page);
		if (!page)
			return NULL;
		__atomic_store_n(&table[fd / PAGE_FDS], page, __ATOMIC_RELEASE);
	}
	return page ? &page[fd % PAGE_FDS] : NULL;
}

static void file_free(struct bb_file *f)
{
	if (f->opened)
		bb_send_only(BB_OP_CLOSE, f->st->handle);
	munmap(f->st, STATE_SIZE);
	free(f);
}

/* Both under table_mu. */
static struct bb_file *unregister_locked(int fd)
{
	struct bb_file **s = slot(fd, 0);
	if (!s || !*s)
		return NULL;
	struct bb_file *f = *s;
	__atomic_store_n(s, NULL, __ATOMIC_RELEASE);
	if (--f->refs == 0 && f->busy == 0)
		return f; /* the caller frees it, outside the lock */
	return NULL;
}

static int register_locked(int fd, struct bb_file *f)
{
	struct bb_file **s = slot(fd, 1);
	if (!s)
		return -ENOMEM;
	struct bb_file *old = *s;
	f->refs++;
	__atomic_store_n(s, f, __ATOMIC_RELEASE);
	if (old && --old->refs == 0 && old->busy == 0)
		file_free(old); /* rare: only after a close we did not see */
	return 0;
}

static void forget(int fd)
{
	pthread_mutex_lock(&table_mu);
	struct bb_file *f = unregister_locked(fd);
	pthread_mutex_unlock(&table_mu);
	if (f)
		file_free(f);
}

/* The emulated file behind fd, held for one call (release with put()), or NULL. */
static struct bb_file *get(int fd)
{
	struct bb_file **s = slot(fd, 0);
	if (!s || !__atomic_load_n(s, __ATOMIC_ACQUIRE))
		return NULL; /* the fast path of every read()/write() on other files */
	pthread_mutex_lock(&table_mu);
	struct bb_file *f = *s;
	if (f)
		f->busy++;
	pthread_mutex_unlock(&table_mu);
	if (!f)
		return NULL;
	/* A descriptor closed behind our back (a raw close syscall, close_range in
	 * a library) may have been reused for another file: check it is still ours. */
	struct stat sb;
	if (fstat(fd, &sb) < 0 || sb.st_dev != f->dev || sb.st_ino != f->ino) {
		pthread_mutex_lock(&table_mu);
		f->busy--;
		struct bb_file *gone = (*s == f) ? unregister_locked(fd) : NULL;
		if (!gone && f->refs == 0 && f->busy == 0)
			gone = f;
		pthread_mutex_unlock(&table_mu);
		if (gone)
			file_free(gone);
		return NULL;
	}
	return f;
}

static void put(struct bb_file *f)
{
	pthread_mutex_lock(&table_mu);
	int last = --f->busy == 0 && f->refs == 0;
	pthread_mutex_unlock(&table_mu);
	if (last)
		file_free(f);
}

static struct bb_file *adopt(int fd, struct bb_state *st, int opened)
{
	struct stat sb;
	struct bb_file *f = calloc(1, sizeof *f);
	if (!f || fstat(fd, &sb) < 0) {
		free(f);
		return NULL;
	}
	f->st = st;
	f->opened = opened;
	f->dev = sb.st_dev;
	f->ino = sb.st_ino;
	pthread_mutex_lock(&table_mu);
	int rc = register_locked(fd, f);
	pthread_mutex_unlock(&table_mu);
	if (rc < 0) {
		free(f);
		return NULL;
	}
	return f;
}

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
	if (!active || !path)
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
static int proc_fd(const char *path)
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
	if (!active || proc_fd(path) < 0)
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
	st->agent = agent_id;
	st->kind = (uint32_t)kind;
	st->handle = handle;
	st->accmode = (uint32_t)(flags & O_ACCMODE);
	if (kind == BB_KIND_I2C)
		st->funcs = extra;
	else
		st->bufsiz = extra;
	st->append = (uint32_t)(flags & O_APPEND);
	/* O_NONBLOCK: i2c-dev and spidev ignore it; F_GETFL still shows it. */
	if (!adopt(fd, st, 1)) {
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

/* libc declares the path nonnull; a NULL from a buggy program must still reach
 * the kernel (EFAULT) rather than crash here, so hide that promise from gcc. */
#define UNTRUSTED(p) __asm__("" : "+r"(p))

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

/* ------------------------------------------------------------------------ */
/* close, dup, fcntl                                                         */

EXPORT int close(int fd)
{
	if (slot(fd, 0) && *slot(fd, 0)) {
		pthread_mutex_lock(&table_mu);
		struct bb_file *f = unregister_locked(fd);
		int rc = REAL(close)(fd); /* before CLOSE reaches the agent: the kernel's order */
		int e = errno;
		pthread_mutex_unlock(&table_mu);
		if (f)
			file_free(f);
		errno = e;
		return rc;
	}
	return REAL(close)(fd);
}

static int share(int oldfd, int newfd)
{
	/* newfd is a copy of oldfd: point it at the same emulated file. */
	if (newfd < 0)
		return newfd;
	pthread_mutex_lock(&table_mu);
	struct bb_file **s = slot(oldfd, 0);
	struct bb_file *f = s ? *s : NULL;
	struct bb_file *gone = NULL;
	if (f) {
		if (register_locked(newfd, f) < 0) {
			pthread_mutex_unlock(&table_mu);
			REAL(close)(newfd);
			errno = ENOMEM;
			return -1;
		}
	} else {
		gone = unregister_locked(newfd); /* dup2 over one of ours */
	}
	pthread_mutex_unlock(&table_mu);
	if (gone)
		file_free(gone);
	return newfd;
}

EXPORT int dup(int fd) { return share(fd, REAL(dup)(fd)); }

EXPORT int dup2(int fd, int fd2)
{
	int rc = REAL(dup2)(fd, fd2);
	return rc < 0 || fd == fd2 ? rc : share(fd, rc);
}

EXPORT int dup3(int fd, int fd2, int flags)
{
	int rc = REAL(dup3)(fd, fd2, flags);
	return rc < 0 ? rc : share(fd, rc);
}

static int do_fcntl(int fd, int cmd, void *arg)
{
	if (cmd == F_SETFL) {
		/* The descriptor keeps O_APPEND (it is what makes it inert); the
		 * program's choice is remembered for F_GETFL. */
		struct bb_file *f = get(fd);
		if (f) {
			long fl = (long)arg;
			int rc = REAL(fcntl)(fd, cmd, (void *)(fl | O_APPEND));
			if (rc == 0)
				f->st->append = (uint32_t)(fl & O_APPEND);
			put(f);
			return rc;
		}
	}
	int rc = REAL(fcntl)(fd, cmd, arg);
	if (rc < 0)
		return rc;
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		return share(fd, rc);
	if (cmd == F_GETFL) {
		struct bb_file *f = get(fd);
		if (f) {
			rc = (rc & ~(O_ACCMODE | O_APPEND)) | (int)f->st->accmode | (int)f->st->append;
			put(f);
		}
	}
	return rc;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	if (!(flags & CLOSE_RANGE_CLOEXEC)) {
		unsigned int top = last < PAGE_FDS * PAGES ? last : PAGE_FDS * PAGES - 1;
		for (unsigned int fd = first; fd <= top && fd >= first; fd++)
			if (slot((int)fd, 0) && *slot((int)fd, 0))
				forget((int)fd);
	}
	return (int)syscall(SYS_close_range, first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
	for (int fd = lowfd < 0 ? 0 : lowfd; fd < PAGE_FDS * PAGES; fd += 1) {
		if (!table[fd / PAGE_FDS]) {
			fd = (fd / PAGE_FDS + 1) * PAGE_FDS - 1;
			continue;
		}
		if (*slot(fd, 0))
			forget(fd);
	}
	if (syscall(SYS_close_range, (unsigned int)(lowfd < 0 ? 0 : lowfd), ~0U, 0) < 0) {
		/* Old kernels: close one by one, as glibc does. */
		for (int fd = lowfd; fd < (int)sysconf(_SC_OPEN_MAX); fd++)
			REAL(close)(fd);
	}
}

/* ------------------------------------------------------------------------ */
/* ioctl, read, write, lseek                                                 */

static long ret_errno(long rc)
{
	if (rc < 0) {
		errno = (int)-rc;
		return -1;
	}
	return rc;
}

EXPORT int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	unsigned long arg = va_arg(ap, unsigned long);
	va_end(ap);
	struct bb_file *f = get(fd);
	if (!f)
		return REAL(ioctl)(fd, request, arg);
	/* The kernel's ioctl(2) takes an unsigned int command. */
	unsigned int cmd = (unsigned int)request;
	long rc;
	switch (cmd) {
	case FIOCLEX:
	case FIONCLEX:
	case FIONBIO:
	case FIOASYNC:
		/* Handled by the VFS before any driver (fs/ioctl.c do_vfs_ioctl). */
		put(f);
		return REAL(ioctl)(fd, request, arg);
	default:
		rc = f->st->kind == BB_KIND_I2C ? bb_i2c_ioctl(f->st, cmd, arg)
						: bb_spi_ioctl(f->st, cmd, arg);
	}
	put(f);
	return (int)ret_errno(rc);
}

static ssize_t do_read(struct bb_file *f, void *buf, size_t n)
{
	if (f->st->accmode == O_WRONLY)
		return -EBADF; /* vfs_read: no FMODE_READ */
	return f->st->kind == BB_KIND_I2C ? bb_i2c_read(f->st, buf, n) : bb_spi_read(f->st, buf, n);
}

static ssize_t do_write(struct bb_file *f, const void *buf, size_t n)
{
	if (f->st->accmode == O_RDONLY)
		return -EBADF;
	return f->st->kind == BB_KIND_I2C ? bb_i2c_write(f->st, buf, n)
					  : bb_spi_write(f->st, buf, n);
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	struct bb_file *f = get(fd);
	if (!f)
		return REAL(read)(fd, buf, n);
	ssize_t rc = do_read(f, buf, n);
	put(f);
	return ret_errno(rc);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	struct bb_file *f = get(fd);
	if (!f)
		return REAL(write)(fd, buf, n);
	ssize_t rc = do_write(f, buf, n);
	put(f);
	return ret_errno(rc);
}

/* _FORTIFY_SOURCE's read with a known buffer size. */
EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		return REAL(__read_chk)(fd, buf, n, buflen); /* glibc's own report and abort */
	return read(fd, buf, n);
}

/* spidev calls stream_open(): no positioned I/O (ESPIPE).  i2c-dev leaves
 * FMODE_PREAD set, so pread() is a plain read() there (the offset is unused). */
static ssize_t do_pread(struct bb_file *f, void *buf, size_t n, off64_t off)
{
	if (f->st->kind == BB_KIND_SPI)
		return -ESPIPE;
	if ((off64_t)((uint64_t)off + n) < 0)
		return -EINVAL; /* rw_verify_area: offset + count past LLONG_MAX */
	return do_read(f, buf, n);
}

static ssize_t do_pwrite(struct bb_file *f, const void *buf, size_t n, off64_t off)
{
	if (f->st->kind == BB_KIND_SPI)
		return -ESPIPE;
	if ((off64_t)((uint64_t)off + n) < 0)
		return -EINVAL;
	return do_write(f, buf, n);
}

#define POSITIONED(name, bufdecl, offtype, op)                         \
	EXPORT ssize_t name(int fd, bufdecl buf, size_t n, offtype off)  \
	{                                                                \
		struct bb_file *f = get(fd);                             \
		if (!f)                                                  \
			return REAL(name)(fd, buf, n, off);              \
		ssize_t rc = off < 0 ? -EINVAL : op(f, buf, n, off);     \
		put(f);                                                  \
		return ret_errno(rc);                                    \
	}

POSITIONED(pread, void *, off_t, do_pread)
POSITIONED(pread64, void *, off64_t, do_pread)
POSITIONED(pwrite, const void *, off_t, do_pwrite)
POSITIONED(pwrite64, const void *, off64_t, do_pwrite)

/* _FORTIFY_SOURCE's pread with a known buffer size. */
#define PREAD_CHK(name, offtype)                                                   \
	EXPORT ssize_t __##name##_chk(int fd, void *buf, size_t n, offtype off, size_t buflen) \
	{                                                                          \
		if (n > buflen)                                                    \
			return REAL(__##name##_chk)(fd, buf, n, off, buflen);     \
		return name(fd, buf, n, off);                                      \
	}

PREAD_CHK(pread, off_t)
PREAD_CHK(pread64, off64_t)

/* readv/writev and the positioned variants.  Neither driver has read_iter or
 * write_iter, so the kernel calls ->read/->write once per iovec
 * (fs/read_write.c do_loop_readv_writev) and stops at the first short or failed
 * one; import_iovec, the FMODE check and rw_verify_area come first. */
#define MAX_RW_COUNT (INT_MAX & ~4095)

static ssize_t do_vec(struct bb_file *f, const struct iovec *uvec, int cnt, int wr,
		      const off64_t *pos, int flags)
{
	if (cnt < 0 || cnt > IOV_MAX)
		return -EINVAL;
	struct iovec stack[8];
	struct iovec *iov = cnt <= 8 ? stack : malloc((size_t)cnt * sizeof *iov);
	if (!iov)
		return -ENOMEM;
	ssize_t ret = 0;
	if (bb_copy_in(iov, uvec, (size_t)cnt * sizeof *iov)) {
		ret = -EFAULT;
		goto out;
	}
	size_t total = 0;
	for (int i = 0; i < cnt; i++) {
		if ((ssize_t)iov[i].iov_len < 0) {
			ret = -EINVAL;
			goto out;
		}
		if (iov[i].iov_len > MAX_RW_COUNT - total)
			iov[i].iov_len = MAX_RW_COUNT - total;
		total += iov[i].iov_len;
	}
	if (f->st->accmode == (wr ? O_RDONLY : O_WRONLY)) {
		ret = -EBADF;
		goto out;
	}
	if (!total)
		goto out;
	if (pos && (off64_t)((uint64_t)*pos + total) < 0) {
		ret = -EINVAL;
		goto out;
	}
	if (flags & ~RWF_HIPRI) {
		ret = -EOPNOTSUPP;
		goto out;
	}
	for (int i = 0; i < cnt && total; i++) {
		size_t len = iov[i].iov_len;
		ssize_t nr = wr ? do_write(f, iov[i].iov_base, len) : do_read(f, iov[i].iov_base, len);
		if (nr < 0) {
			if (!ret)
				ret = nr;
			break;
		}
		ret += nr;
		total -= len;
		if ((size_t)nr != len)
			break;
	}
out:
	if (iov != stack)
		free(iov);
	return ret;
}

/* pos: NULL for readv/writev (and preadv2 with offset -1); spidev (stream_open)
 * has no positioned I/O. */
static ssize_t vec_call(struct bb_file *f, const struct iovec *v, int cnt, int wr,
			int positioned, off64_t off, int flags)
{
	if (positioned && off < 0)
		return -EINVAL;
	if (positioned && f->st->kind == BB_KIND_SPI)
		return -ESPIPE;
	return do_vec(f, v, cnt, wr, positioned ? &off : NULL, flags);
}

#define VEC(name, wr)                                                              \
	EXPORT ssize_t name(int fd, const struct iovec *v, int cnt)                 \
	{                                                                          \
		struct bb_file *f = get(fd);                                       \
		if (!f)                                                            \
			return REAL(name)(fd, v, cnt);                             \
		ssize_t rc = vec_call(f, v, cnt, wr, 0, 0, 0);                     \
		put(f);                                                            \
		return ret_errno(rc);                                              \
	}
#define PVEC(name, offtype, wr)                                                    \
	EXPORT ssize_t name(int fd, const struct iovec *v, int cnt, offtype off)    \
	{                                                                          \
		struct bb_file *f = get(fd);                                       \
		if (!f)                                                            \
			return REAL(name)(fd, v, cnt, off);                        \
		ssize_t rc = vec_call(f, v, cnt, wr, 1, off, 0);                   \
		put(f);                                                            \
		return ret_errno(rc);                                              \
	}
#define PVEC2(name, offtype, wr)                                                   \
	EXPORT ssize_t name(int fd, const struct iovec *v, int cnt, offtype off, int flags) \
	{                                                                          \
		struct bb_file *f = get(fd);                                       \
		if (!f)                                                            \
			return REAL(name)(fd, v, cnt, off, flags);                 \
		ssize_t rc = vec_call(f, v, cnt, wr, off != -1, off, flags);       \
		put(f);                                                            \
		return ret_errno(rc);                                              \
	}

VEC(readv, 0)
VEC(writev, 1)
PVEC(preadv, off_t, 0)
PVEC(preadv64, off64_t, 0)
PVEC(pwritev, off_t, 1)
PVEC(pwritev64, off64_t, 1)
PVEC2(preadv2, off_t, 0)
PVEC2(preadv64v2, off64_t, 0)
PVEC2(pwritev2, off_t, 1)
PVEC2(pwritev64v2, off64_t, 1)

/* ------------------------------------------------------------------------ */
/* What a character device without those methods refuses                     */

/* do_sys_ftruncate: not a regular file -> EINVAL. */
#define FTRUNC(name, offtype)                                    \
	EXPORT int name(int fd, offtype len)                     \
	{                                                        \
		struct bb_file *f = get(fd);                     \
		if (!f)                                          \
			return REAL(name)(fd, len);              \
		put(f);                                          \
		errno = EINVAL;                                  \
		return -1;                                       \
	}

FTRUNC(ftruncate, off_t)
FTRUNC(ftruncate64, off64_t)

/* truncate() of /proc/self/fd/N or /dev/fd/N naming one of ours: vfs_truncate
 * refuses a character device with EINVAL.  (Other paths to the memfd fail EPERM
 * on its seals.) */
static int names_ours(const char *path)
{
	int fd = proc_fd(path);
	if (fd < 0)
		return 0;
	struct bb_file *f = get(fd);
	if (f)
		put(f);
	return f != NULL;
}

#define TRUNC(name, offtype)                                      \
	EXPORT int name(const char *path, offtype len)            \
	{                                                         \
		UNTRUSTED(path);                                  \
		if (len >= 0 && names_ours(path)) {               \
			errno = EINVAL;                           \
			return -1;                                \
		}                                                 \
		return REAL(name)(path, len);                     \
	}

TRUNC(truncate, off_t)
TRUNC(truncate64, off64_t)

/* Neither driver has an mmap method: ENODEV (mm/mmap.c do_mmap). */
#define MMAP(name, offtype)                                                          \
	EXPORT void *name(void *addr, size_t len, int prot, int flags, int fd, offtype off) \
	{                                                                            \
		struct bb_file *f = (flags & MAP_ANONYMOUS) ? NULL : get(fd);        \
		if (!f)                                                              \
			return REAL(name)(addr, len, prot, flags, fd, off);          \
		put(f);                                                              \
		errno = ENODEV;                                                      \
		return MAP_FAILED;                                                   \
	}

MMAP(mmap, off_t)
MMAP(mmap64, off64_t)

/* sendfile, splice, tee, copy_file_range: neither driver has splice_read or
 * splice_write and neither is a pipe or a regular file: EINVAL, after EBADF for
 * a descriptor opened without the needed access (fs/splice.c, fs/read_write.c). */
static long moving(int in, int out, int streams_pos)
{
	struct bb_file *fi = get(in), *fo = get(out);
	long rc = 0;
	if (fi && fi->st->accmode == O_WRONLY)
		rc = -EBADF;
	else if (fi && streams_pos && fi->st->kind == BB_KIND_SPI)
		rc = -ESPIPE; /* sendfile with an offset from a stream_open file */
	else if (fo && fo->st->accmode == O_RDONLY)
		rc = -EBADF;
	else if (fi || fo)
		rc = -EINVAL;
	if (fi)
		put(fi);
	if (fo)
		put(fo);
	return rc;
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
	long rc = moving(in, out, off != NULL);
	return rc ? ret_errno(rc) : REAL(sendfile)(out, in, off, n);
}

EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
	long rc = moving(in, out, off != NULL);
	return rc ? ret_errno(rc) : REAL(sendfile64)(out, in, off, n);
}

EXPORT ssize_t splice(int in, off64_t *offin, int out, off64_t *offout, size_t n, unsigned int fl)
{
	long rc = moving(in, out, 0);
	return rc ? ret_errno(rc) : REAL(splice)(in, offin, out, offout, n, fl);
}

EXPORT ssize_t tee(int in, int out, size_t n, unsigned int fl)
{
	long rc = moving(in, out, 0);
	return rc ? ret_errno(rc) : REAL(tee)(in, out, n, fl);
}

/* generic_file_rw_checks: not a regular file -> EINVAL before any mode check. */
EXPORT ssize_t copy_file_range(int in, off64_t *offin, int out, off64_t *offout, size_t n,
			       unsigned int fl)
{
	struct bb_file *fi = get(in), *fo = get(out);
	if (fi)
		put(fi);
	if (fo)
		put(fo);
	if (fi || fo)
		return ret_errno(-EINVAL);
	return REAL(copy_file_range)(in, offin, out, offout, n, fl);
}

/* Both drivers set .llseek = no_llseek. */
#define SEEK(name, offtype)                                      \
	EXPORT offtype name(int fd, offtype off, int whence)     \
	{                                                        \
		struct bb_file *f = get(fd);                     \
		if (!f)                                          \
			return REAL(name)(fd, off, whence);      \
		put(f);                                          \
		errno = ESPIPE;                                  \
		return -1;                                       \
	}

SEEK(lseek, off_t)
SEEK(lseek64, off64_t)

/* ------------------------------------------------------------------------ */
/* Start-up, fork                                                            */

static void after_fork_child(void)
{
	/* The parent's connection is the parent's: a child opens its own.  A lock
	 * held by another thread at fork() time would never be released here. */
	bb_channel_after_fork();
	pthread_mutex_init(&table_mu, NULL);
	/* Files inherited across fork() were opened by the parent: their CLOSE is its. */
	for (int p = 0; p < PAGES; p++)
		if (table[p])
			for (int i = 0; i < PAGE_FDS; i++)
				if (table[p][i])
					table[p][i]->opened = 0;
}

/* Descriptors inherited across exec(): memfds named busbridge-* made by this agent. */
static void adopt_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	int dfd = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		char link[64], target[256];
		int fd = atoi(e->d_name);
		if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dfd)
			continue;
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof target - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, "/memfd:" MEMFD_PREFIX, 7 + sizeof MEMFD_PREFIX - 1) != 0)
			continue;
		/* The descriptor is write-only: map the state through a read-write reopen. */
		int rw = REAL(open)(link, O_RDWR | O_CLOEXEC);
		if (rw < 0)
			continue;
		/* Only a state page: an O_PATH descriptor's memfd is empty, and mapping
		 * past the end of a file would fault on the first access. */
		struct stat sb;
		if (fstat(rw, &sb) < 0 || sb.st_size < STATE_SIZE) {
			REAL(close)(rw);
			continue;
		}
		struct bb_state *st =
			REAL(mmap)(NULL, STATE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
		REAL(close)(rw);
		if (st == MAP_FAILED)
			continue;
		if (st->magic != BB_STATE_MAGIC || st->agent != agent_id || !adopt(fd, st, 0))
			munmap(st, STATE_SIZE);
	}
	closedir(d);
}

__attribute__((constructor)) static void bb_init(void)
{
	const char *p = getenv("BUSBRIDGE_NATIVE_SOCKET");
	if (!p || !*p || bb_channel_init(p, &agent_id) < 0)
		return;
	pthread_atfork(NULL, NULL, after_fork_child);
	adopt_inherited();
	active = 1;
}
