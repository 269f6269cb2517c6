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
 *
 * This file keeps the table of emulated descriptors and everything but open()
 * that changes it: close(), dup*(), fcntl(), close_range(), closefrom(), fork()
 * and the start-up that finds descriptors inherited across exec().  The open
 * family is in open.c, ioctl() and the I/O calls in io.c (preload.h is what the
 * three share).
 */
#define _GNU_SOURCE
#define BB_DEFINE_REAL /* the real_* pointers of preload.h live here */
#include "preload.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The real libc functions                                                   */

void *bb_resolve(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (!p) {
		static const char msg[] = "busbridge preload: a libc symbol is missing\n";
		(void)!write(2, msg, sizeof msg - 1);
		abort();
	}
	return p;
}

/* ------------------------------------------------------------------------ */
/* Configuration                                                              */

uint32_t bb_agent_id;
int bb_active;

/* ------------------------------------------------------------------------ */
/* The table of emulated descriptors (struct bb_file: preload.h)            */

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

/* The emulated file behind fd, held for one call (release with bb_fput()), or NULL. */
struct bb_file *bb_fget(int fd)
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

void bb_fput(struct bb_file *f)
{
	pthread_mutex_lock(&table_mu);
	int last = --f->busy == 0 && f->refs == 0;
	pthread_mutex_unlock(&table_mu);
	if (last)
		file_free(f);
}

struct bb_file *bb_adopt(int fd, struct bb_state *st, int opened)
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
		struct bb_file *f = bb_fget(fd);
		if (f) {
			long fl = (long)arg;
			int rc = REAL(fcntl)(fd, cmd, (void *)(fl | O_APPEND));
			if (rc == 0)
				f->st->append = (uint32_t)(fl & O_APPEND);
			bb_fput(f);
			return rc;
		}
	}
	int rc = REAL(fcntl)(fd, cmd, arg);
	if (rc < 0)
		return rc;
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		return share(fd, rc);
	if (cmd == F_GETFL) {
		struct bb_file *f = bb_fget(fd);
		if (f) {
			rc = (rc & ~(O_ACCMODE | O_APPEND)) | (int)f->st->accmode | (int)f->st->append;
			bb_fput(f);
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
		if (st->magic != BB_STATE_MAGIC || st->agent != bb_agent_id || !bb_adopt(fd, st, 0))
			munmap(st, STATE_SIZE);
	}
	closedir(d);
}

__attribute__((constructor)) static void bb_init(void)
{
	const char *p = getenv("BUSBRIDGE_NATIVE_SOCKET");
	if (!p || !*p || bb_channel_init(p, &bb_agent_id) < 0)
		return;
	pthread_atfork(NULL, NULL, after_fork_child);
	adopt_inherited();
	bb_active = 1;
}
