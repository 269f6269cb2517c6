/* What the three files of the interposer share: preload.c (the table of emulated
 * descriptors, close/dup/fcntl, start-up), open.c (the open family) and io.c
 * (ioctl, read, write and the rest of the I/O calls).  Private to those three;
 * bb.h is what they share with channel.c, i2cdev.c and spidev.c.  Everything
 * declared here is hidden: only the interposed libc names (EXPORT) leave the
 * library.
 */
#ifndef BUSBRIDGE_PRELOAD_H
#define BUSBRIDGE_PRELOAD_H

#include "bb.h"

#include <sys/types.h>
#include <sys/uio.h>

#pragma GCC visibility push(hidden)

#define EXPORT __attribute__((visibility("default")))
#define STATE_SIZE 4096
#define MEMFD_PREFIX "busbridge-"

/* libc declares the path nonnull; a NULL from a buggy program must still reach
 * the kernel (EFAULT) rather than crash here, so hide that promise from gcc. */
#define UNTRUSTED(p) __asm__("" : "+r"(p))

/* ------------------------------------------------------------------------ */
/* The real libc functions, found on first use (preload.c defines them)      */

#define REAL(name)                                     \
	({                                             \
		if (!real_##name)                      \
			real_##name = bb_resolve(#name); \
		real_##name;                           \
	})
void *bb_resolve(const char *name);

#ifdef BB_DEFINE_REAL
#define BB_REAL
#else
#define BB_REAL extern
#endif
BB_REAL int (*real_open)(const char *, int, ...);
BB_REAL int (*real_open64)(const char *, int, ...);
BB_REAL int (*real_openat)(int, const char *, int, ...);
BB_REAL int (*real_openat64)(int, const char *, int, ...);
BB_REAL int (*real___open_2)(const char *, int);
BB_REAL int (*real___open64_2)(const char *, int);
BB_REAL int (*real___openat_2)(int, const char *, int);
BB_REAL int (*real___openat64_2)(int, const char *, int);
BB_REAL int (*real_close)(int);
BB_REAL int (*real_dup)(int);
BB_REAL int (*real_dup2)(int, int);
BB_REAL int (*real_dup3)(int, int, int);
BB_REAL int (*real_fcntl)(int, int, ...);
BB_REAL int (*real_ioctl)(int, unsigned long, ...);
BB_REAL ssize_t (*real_read)(int, void *, size_t);
BB_REAL ssize_t (*real_write)(int, const void *, size_t);
BB_REAL ssize_t (*real_pread)(int, void *, size_t, off_t);
BB_REAL ssize_t (*real_pread64)(int, void *, size_t, off64_t);
BB_REAL ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
BB_REAL ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
BB_REAL off_t (*real_lseek)(int, off_t, int);
BB_REAL off64_t (*real_lseek64)(int, off64_t, int);
BB_REAL ssize_t (*real___read_chk)(int, void *, size_t, size_t);
BB_REAL ssize_t (*real___pread_chk)(int, void *, size_t, off_t, size_t);
BB_REAL ssize_t (*real___pread64_chk)(int, void *, size_t, off64_t, size_t);
BB_REAL ssize_t (*real_readv)(int, const struct iovec *, int);
BB_REAL ssize_t (*real_writev)(int, const struct iovec *, int);
BB_REAL ssize_t (*real_preadv)(int, const struct iovec *, int, off_t);
BB_REAL ssize_t (*real_preadv64)(int, const struct iovec *, int, off64_t);
BB_REAL ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
BB_REAL ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
BB_REAL ssize_t (*real_preadv2)(int, const struct iovec *, int, off_t, int);
BB_REAL ssize_t (*real_preadv64v2)(int, const struct iovec *, int, off64_t, int);
BB_REAL ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
BB_REAL ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
BB_REAL int (*real_ftruncate)(int, off_t);
BB_REAL int (*real_ftruncate64)(int, off64_t);
BB_REAL int (*real_truncate)(const char *, off_t);
BB_REAL int (*real_truncate64)(const char *, off64_t);
BB_REAL void *(*real_mmap)(void *, size_t, int, int, int, off_t);
BB_REAL void *(*real_mmap64)(void *, size_t, int, int, int, off64_t);
BB_REAL ssize_t (*real_sendfile)(int, int, off_t *, size_t);
BB_REAL ssize_t (*real_sendfile64)(int, int, off64_t *, size_t);
BB_REAL ssize_t (*real_splice)(int, off64_t *, int, off64_t *, size_t, unsigned int);
BB_REAL ssize_t (*real_tee)(int, int, size_t, unsigned int);
BB_REAL ssize_t (*real_copy_file_range)(int, off64_t *, int, off64_t *, size_t, unsigned int);

/* ------------------------------------------------------------------------ */
/* The table of emulated descriptors (preload.c)                             */

extern uint32_t bb_agent_id; /* tells our memfds from those of another run (channel.c) */
extern int bb_active;        /* BUSBRIDGE_NATIVE_SOCKET was set */

struct bb_file {
	struct bb_state *st;
	int refs;    /* descriptors of this process that point here */
	int busy;    /* calls in progress on it */
	int opened;  /* this process sent the OPEN (so it sends the CLOSE) */
	dev_t dev;
	ino_t ino;
};

/* The emulated file behind fd, held for one call (release with bb_fput()), or NULL. */
struct bb_file *bb_fget(int fd);
void bb_fput(struct bb_file *f);
/* Register fd (a memfd holding st) as one of ours; opened: this process sent the OPEN. */
struct bb_file *bb_adopt(int fd, struct bb_state *st, int opened);

/* The descriptor a /proc/self/fd/N, /proc/<our pid>/fd/N, /proc/thread-self/fd/N
 * or /dev/fd/N path names, or -1 (open.c). */
int bb_proc_fd(const char *path);

#pragma GCC visibility pop

#endif
