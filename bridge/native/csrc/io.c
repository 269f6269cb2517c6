/* The I/O calls of the busbridge preload library (see preload.c) on an emulated
 * descriptor: ioctl(), read(), write(), the pread/pwrite and readv/writev
 * families and their fortified variants, which reach i2cdev.c or spidev.c; and
 * what a character device without those methods refuses (ftruncate, truncate,
 * mmap, sendfile, splice, tee, copy_file_range, lseek), with the kernel's errno
 * in the kernel's order.  Apart from preload.c because none of it changes the
 * table of descriptors: each call holds one file for its duration.
 */
#define _GNU_SOURCE
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <unistd.h>

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
	struct bb_file *f = bb_fget(fd);
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
		bb_fput(f);
		return REAL(ioctl)(fd, request, arg);
	default:
		rc = f->st->kind == BB_KIND_I2C ? bb_i2c_ioctl(f->st, cmd, arg)
						: bb_spi_ioctl(f->st, cmd, arg);
	}
	bb_fput(f);
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
	struct bb_file *f = bb_fget(fd);
	if (!f)
		return REAL(read)(fd, buf, n);
	ssize_t rc = do_read(f, buf, n);
	bb_fput(f);
	return ret_errno(rc);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	struct bb_file *f = bb_fget(fd);
	if (!f)
		return REAL(write)(fd, buf, n);
	ssize_t rc = do_write(f, buf, n);
	bb_fput(f);
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
		struct bb_file *f = bb_fget(fd);                             \
		if (!f)                                                  \
			return REAL(name)(fd, buf, n, off);              \
		ssize_t rc = off < 0 ? -EINVAL : op(f, buf, n, off);     \
		bb_fput(f);                                                  \
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
		struct bb_file *f = bb_fget(fd);                                       \
		if (!f)                                                            \
			return REAL(name)(fd, v, cnt);                             \
		ssize_t rc = vec_call(f, v, cnt, wr, 0, 0, 0);                     \
		bb_fput(f);                                                            \
		return ret_errno(rc);                                              \
	}
#define PVEC(name, offtype, wr)                                                    \
	EXPORT ssize_t name(int fd, const struct iovec *v, int cnt, offtype off)    \
	{                                                                          \
		struct bb_file *f = bb_fget(fd);                                       \
		if (!f)                                                            \
			return REAL(name)(fd, v, cnt, off);                        \
		ssize_t rc = vec_call(f, v, cnt, wr, 1, off, 0);                   \
		bb_fput(f);                                                            \
		return ret_errno(rc);                                              \
	}
#define PVEC2(name, offtype, wr)                                                   \
	EXPORT ssize_t name(int fd, const struct iovec *v, int cnt, offtype off, int flags) \
	{                                                                          \
		struct bb_file *f = bb_fget(fd);                                       \
		if (!f)                                                            \
			return REAL(name)(fd, v, cnt, off, flags);                 \
		ssize_t rc = vec_call(f, v, cnt, wr, off != -1, off, flags);       \
		bb_fput(f);                                                            \
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
		struct bb_file *f = bb_fget(fd);                     \
		if (!f)                                          \
			return REAL(name)(fd, len);              \
		bb_fput(f);                                          \
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
	int fd = bb_proc_fd(path);
	if (fd < 0)
		return 0;
	struct bb_file *f = bb_fget(fd);
	if (f)
		bb_fput(f);
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
		struct bb_file *f = (flags & MAP_ANONYMOUS) ? NULL : bb_fget(fd);        \
		if (!f)                                                              \
			return REAL(name)(addr, len, prot, flags, fd, off);          \
		bb_fput(f);                                                              \
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
	struct bb_file *fi = bb_fget(in), *fo = bb_fget(out);
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
		bb_fput(fi);
	if (fo)
		bb_fput(fo);
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
	struct bb_file *fi = bb_fget(in), *fo = bb_fget(out);
	if (fi)
		bb_fput(fi);
	if (fo)
		bb_fput(fo);
	if (fi || fo)
		return ret_errno(-EINVAL);
	return REAL(copy_file_range)(in, offin, out, offout, n, fl);
}

/* Both drivers set .llseek = no_llseek. */
#define SEEK(name, offtype)                                      \
	EXPORT offtype name(int fd, offtype off, int whence)     \
	{                                                        \
		struct bb_file *f = bb_fget(fd);                     \
		if (!f)                                          \
			return REAL(name)(fd, off, whence);      \
		bb_fput(f);                                          \
		errno = ESPIPE;                                  \
		return -1;                                       \
	}

SEEK(lseek, off_t)
SEEK(lseek64, off64_t)
