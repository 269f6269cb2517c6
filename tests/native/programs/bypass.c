/* The calls besides ioctl/read/write that reach a descriptor, as the kernel
 * answers them for i2c-dev and spidev: readv/writev (one ->read/->write per
 * iovec), the positioned and fortified variants, ftruncate, mmap, sendfile,
 * splice, copy_file_range, O_PATH, exact device names, and raw system calls
 * that bypass libc (what io_uring does).  Built with -D_FORTIFY_SOURCE=2 so
 * pread() becomes __pread_chk().  One line per check: "name result". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>

static const char *res(long rc)
{
	static char buf[64];
	if (rc < 0)
		snprintf(buf, sizeof buf, "-1 %s", strerrorname_np(errno));
	else
		snprintf(buf, sizeof buf, "%ld", rc);
	return buf;
}

static void hex(const char *what, long rc, const unsigned char *p, size_t n)
{
	printf("%s %s", what, res(rc));
	for (size_t i = 0; i < n; i++)
		printf(" %02x", p[i]);
	printf("\n");
}

/* The TMP117's ID register read with I2C_RDWR: proof the descriptor still works. */
static void alive(const char *when, int fd)
{
	unsigned char reg = 0x0f, id[2] = {0, 0};
	struct i2c_msg m[2] = {{0x48, 0, 1, &reg}, {0x48, I2C_M_RD, 2, id}};
	struct i2c_rdwr_ioctl_data d = {m, 2};
	long n = ioctl(fd, I2C_RDWR, &d);
	hex(when, n, id, 2);
}

int main(int argc, char **argv)
{
	(void)argv;
	size_t two = (size_t)argc + 1; /* 2, unknown to the compiler: fortify keeps __pread_chk */
	int fd = open("/dev/i2c-1", O_RDWR);
	if (fd < 0) {
		printf("open %s\n", res(fd));
		return 1;
	}
	/* writev: two separate writes to the EEPROM (2-byte address, then data); one
	 * write of the concatenation would store "aa 01 21 bb" from 0x0120 instead. */
	ioctl(fd, I2C_SLAVE, 0x50);
	unsigned char w1[] = {0x01, 0x20, 0xaa}, w2[] = {0x01, 0x21, 0xbb};
	struct iovec wv[2] = {{w1, 3}, {w2, 3}};
	printf("writev %s\n", res(writev(fd, wv, 2)));
	unsigned char at[2] = {0x01, 0x20}, back[2] = {0, 0};
	struct i2c_msg m[2] = {{0x50, 0, 2, at}, {0x50, I2C_M_RD, 2, back}};
	struct i2c_rdwr_ioctl_data d = {m, 2};
	hex("eeprom", ioctl(fd, I2C_RDWR, &d), back, 2);

	/* readv: one read message per iovec, each from the TMP117's pointer (0x0f). */
	ioctl(fd, I2C_SLAVE, 0x48);
	unsigned char reg = 0x0f, r[4] = {0};
	if (write(fd, &reg, 1) != 1)
		printf("pointer write failed\n");
	struct iovec rv[2] = {{r, 2}, {r + 2, 2}};
	hex("readv", readv(fd, rv, 2), r, 4);
	memset(r, 0, sizeof r);
	hex("preadv", preadv(fd, rv, 2, 12345), r, 4);
	memset(r, 0, sizeof r);
	hex("pread_chk", pread(fd, r, two, 99), r, 2);
	printf("preadv2_nowait %s\n", res(preadv2(fd, rv, 2, 0, RWF_NOWAIT)));
	printf("preadv_negative %s\n", res(preadv(fd, rv, 2, -5)));
	/* A 64-byte writev to an absent address: a NACK (0), nothing else changes. */
	unsigned char junk[64];
	memset(junk, 0xff, sizeof junk);
	struct iovec jv[1] = {{junk, sizeof junk}};
	ioctl(fd, I2C_SLAVE, 0x33);
	printf("writev_nack %s\n", res(writev(fd, jv, 1)));
	printf("pwritev_nack %s\n", res(pwritev(fd, jv, 1, 7)));
	alive("after_writev", fd);

	printf("ftruncate %s\n", res(ftruncate(fd, 0)));
	char self[64];
	snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
	printf("truncate %s\n", res(truncate(self, 0)));
	void *map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	printf("mmap %s\n", map == MAP_FAILED ? res(-1) : "mapped");
	int p[2];
	if (pipe(p) < 0)
		return 1;
	printf("sendfile_from %s\n", res(sendfile(p[1], fd, NULL, 64)));
	printf("splice_from %s\n", res(splice(fd, NULL, p[1], NULL, 64, 0)));
	if (write(p[1], "xy", 2) != 2)
		return 1;
	printf("splice_to %s\n", res(splice(p[0], NULL, fd, NULL, 2, 0)));
	printf("copy_file_range %s\n", res(copy_file_range(fd, NULL, fd, NULL, 64, 0)));
	alive("after_truncate", fd);

	/* What bypasses libc (io_uring, raw system calls) meets an inert descriptor. */
	printf("raw_read %s\n", res(syscall(SYS_read, fd, junk, 64)));
	printf("raw_write %s\n", res(syscall(SYS_write, fd, junk, 64)));
	printf("raw_ftruncate %s\n", res(syscall(SYS_ftruncate, fd, 0)));
	alive("after_raw", fd);
	/* F_GETFL shows what the program asked for; F_SETFL cannot undo the inertness. */
	int shown = O_ACCMODE | O_APPEND | O_NONBLOCK;
	int fl = fcntl(fd, F_GETFL);
	printf("getfl %s\n", (fl & shown) == O_RDWR ? "O_RDWR" : res(fl));
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	fl = fcntl(fd, F_GETFL);
	printf("getfl_nonblock %s\n",
	       (fl & shown) == (O_RDWR | O_NONBLOCK) ? "O_RDWR|O_NONBLOCK" : res(fl));
	printf("raw_write_after_setfl %s\n", res(syscall(SYS_write, fd, junk, 64)));

	/* Reopening through /proc/self/fd opens the device again: a new open file
	 * (its own address), not the library's memfd. */
	char again[64];
	snprintf(again, sizeof again, "/dev/fd/%d", fd);
	ioctl(fd, I2C_SLAVE, 0x48);
	int fd2 = open(again, O_RDWR);
	alive("reopen", fd2);
	printf("reopen_own_address %s\n", res(read(fd2, r, 1))); /* address 0: a NACK, 0 */
	close(fd2);
	close(fd);

	int o = open("/dev/i2c-1", O_PATH);
	printf("o_path %s\n", o >= 0 ? "opened" : res(o));
	printf("o_path_ioctl %s\n", res(ioctl(o, I2C_SLAVE, 0x48)));
	printf("o_path_read %s\n", res(read(o, r, 1)));
	snprintf(again, sizeof again, "/proc/self/fd/%d", o);
	fd2 = open(again, O_RDWR);
	alive("o_path_reopen", fd2);
	close(fd2);
	close(o);
	printf("i2c-01 %s\n", res(open("/dev/i2c-01", O_RDWR)));
	printf("spidev0.00 %s\n", res(open("/dev/spidev0.00", O_RDWR)));
	printf("spidev00.0 %s\n", res(open("/dev/spidev00.0", O_RDWR)));

	/* spidev: stream_open, so no positioned I/O; readv/writev as read/write. */
	int s = open("/dev/spidev0.1", O_RDWR);
	unsigned char tx[4] = {1, 2, 3, 4}, rx[4] = {0};
	struct iovec sv[2] = {{tx, 2}, {tx + 2, 2}};
	printf("spi_writev %s\n", res(writev(s, sv, 2)));
	struct iovec sr[1] = {{rx, 4}};
	printf("spi_readv %s\n", res(readv(s, sr, 1)));
	printf("spi_preadv %s\n", res(preadv(s, sr, 1, 0)));
	printf("spi_preadv2_current %s\n", res(preadv2(s, sr, 1, -1, 0)));
	printf("spi_pread_chk %s\n", res(pread(s, rx, two, 0)));
	printf("spi_sendfile_offset %s\n", res(sendfile(p[1], s, &(off_t){0}, 4)));
	close(s);
	return 0;
}
