/* The user side of Linux drivers/spi/spidev.c (6.1): the ioctl dispatch and
 * spidev_message()'s walk over the transfers (EMSGSIZE against bufsiz, EFAULT
 * for a bad buffer, in the kernel's order).  The device state (mode, bits per
 * word, speed) and what the SPI core does with a message (spi_setup,
 * __spi_validate) live in the agent, bridge/native/spidev.py: the state is
 * per device, shared by every process that opens it, as in the kernel.
 */
#define _GNU_SOURCE
#include "bb.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/ioctl.h>
#include <linux/spi/spidev.h>

/* spidev_message() aligns each transfer in the bounce buffers to
 * ARCH_KMALLOC_MINALIGN (line 231): __alignof__(unsigned long long) on x86,
 * ARCH_DMA_MINALIGN (the cache line) on arm and arm64 in Linux 6.1. */
#if defined(__aarch64__)
#define KMALLOC_MINALIGN 128u
#elif defined(__arm__)
#define KMALLOC_MINALIGN 64u
#else
#define KMALLOC_MINALIGN 8u
#endif
#define ALIGN_UP(x) (((x) + KMALLOC_MINALIGN - 1) & ~(uint64_t)(KMALLOC_MINALIGN - 1))

/* Which device setting an SPI_IOC_WR_* changes (bridge/native/wire.py). */
#define SET_MODE 1
#define SET_LSB_FIRST 2
#define SET_BITS 3
#define SET_SPEED 4

struct spi_state {
	uint32_t mode, bits, speed_hz;
};

static int get_state(struct bb_state *st, struct spi_state *s)
{
	struct bb_reply r;
	int rc = bb_call(BB_OP_SPI_GET, st->handle, NULL, &r);
	if (rc < 0)
		return rc;
	rc = r.res;
	if (rc == 0 && r.len >= sizeof *s)
		memcpy(s, r.data, sizeof *s);
	else if (rc == 0)
		rc = -EIO;
	bb_reply_free(&r);
	return rc;
}

static int set_state(struct bb_state *st, uint32_t which, uint32_t value)
{
	struct bb_buf body = {0};
	struct bb_reply r;
	bb_put32(&body, which);
	bb_put32(&body, value);
	int rc = bb_call(BB_OP_SPI_SET, st->handle, &body, &r);
	free(body.p);
	if (rc < 0)
		return rc;
	rc = r.res;
	bb_reply_free(&r);
	return rc;
}

/* spidev_message(): 200-319. */
static long message(struct bb_state *st, struct spi_ioc_transfer *x, unsigned n)
{
	struct bb_buf body = {0};
	uint64_t total = 0, tx_total = 0, rx_total = 0;
	long status = 0;
	unsigned char *tx = NULL;

	bb_put32(&body, n);
	for (unsigned i = 0; i < n; i++) {
		struct spi_ioc_transfer t = x[i];
		/* The agent only needs to know which buffers exist. */
		t.tx_buf = x[i].tx_buf != 0;
		t.rx_buf = x[i].rx_buf != 0;
		bb_put(&body, &t, sizeof t);
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t len_aligned = ALIGN_UP((uint64_t)x[i].len);
		total += x[i].len;
		if (total > INT_MAX || x[i].len > INT_MAX) {
			status = -EMSGSIZE;
			goto done;
		}
		if (x[i].rx_buf) {
			rx_total += len_aligned;
			if (rx_total > st->bufsiz) {
				status = -EMSGSIZE;
				goto done;
			}
		}
		if (x[i].tx_buf) {
			tx_total += len_aligned;
			if (tx_total > st->bufsiz) {
				status = -EMSGSIZE;
				goto done;
			}
			free(tx);
			tx = malloc(x[i].len + 1u);
			if (!tx) {
				status = -ENOMEM;
				goto done;
			}
			if (bb_copy_in(tx, (void *)(uintptr_t)x[i].tx_buf, x[i].len)) {
				status = -EFAULT;
				goto done;
			}
			bb_put(&body, tx, x[i].len);
		}
	}

	struct bb_reply r;
	int rc = bb_call(BB_OP_SPI_MSG, st->handle, &body, &r);
	if (rc < 0) {
		status = rc;
		goto done;
	}
	status = r.res;
	size_t at = 0;
	for (unsigned i = 0; status >= 0 && i < n; i++) {
		if (!x[i].rx_buf)
			continue;
		if (at + x[i].len > r.len) {
			status = -EIO;
			break;
		}
		if (bb_copy_out((void *)(uintptr_t)x[i].rx_buf, r.data + at, x[i].len))
			status = -EFAULT;
		at += x[i].len;
	}
	bb_reply_free(&r);
done:
	free(tx);
	free(body.p);
	return status;
}

/* spidev_ioctl(): 344-512, spidev_get_ioc_message(): 321-342. */
long bb_spi_ioctl(struct bb_state *st, unsigned int cmd, unsigned long arg)
{
	struct spi_state s;
	int rc;
	uint8_t u8v;
	uint32_t u32v;

	if (_IOC_TYPE(cmd) != SPI_IOC_MAGIC)
		return -ENOTTY;
	switch (cmd) {
	case SPI_IOC_RD_MODE:
	case SPI_IOC_RD_MODE32:
	case SPI_IOC_RD_LSB_FIRST:
	case SPI_IOC_RD_BITS_PER_WORD:
	case SPI_IOC_RD_MAX_SPEED_HZ:
		rc = get_state(st, &s);
		if (rc < 0)
			return rc;
		if (cmd == SPI_IOC_RD_MODE32)
			return bb_copy_out((void *)arg, &s.mode, 4);
		if (cmd == SPI_IOC_RD_MAX_SPEED_HZ)
			return bb_copy_out((void *)arg, &s.speed_hz, 4);
		u8v = cmd == SPI_IOC_RD_MODE ? (uint8_t)s.mode
		    : cmd == SPI_IOC_RD_LSB_FIRST ? (s.mode & SPI_LSB_FIRST ? 1 : 0)
						  : (uint8_t)s.bits;
		return bb_copy_out((void *)arg, &u8v, 1);
	case SPI_IOC_WR_MODE:
	case SPI_IOC_WR_LSB_FIRST:
	case SPI_IOC_WR_BITS_PER_WORD:
		if (bb_copy_in(&u8v, (void *)arg, 1))
			return -EFAULT;
		return set_state(st, cmd == SPI_IOC_WR_MODE ? SET_MODE
				   : cmd == SPI_IOC_WR_LSB_FIRST ? SET_LSB_FIRST : SET_BITS, u8v);
	case SPI_IOC_WR_MODE32:
	case SPI_IOC_WR_MAX_SPEED_HZ:
		if (bb_copy_in(&u32v, (void *)arg, 4))
			return -EFAULT;
		return set_state(st, cmd == SPI_IOC_WR_MODE32 ? SET_MODE : SET_SPEED, u32v);
	default: {
		if (_IOC_NR(cmd) != _IOC_NR(SPI_IOC_MESSAGE(0)) || _IOC_DIR(cmd) != _IOC_WRITE)
			return -ENOTTY;
		unsigned size = _IOC_SIZE(cmd);
		if (size % sizeof(struct spi_ioc_transfer) != 0)
			return -EINVAL;
		unsigned n = size / sizeof(struct spi_ioc_transfer);
		if (n == 0)
			return 0;
		struct spi_ioc_transfer *x = malloc(size);
		if (!x)
			return -ENOMEM;
		long res = bb_copy_in(x, (void *)arg, size) ? -EFAULT : message(st, x, n);
		free(x);
		return res;
	}
	}
}

static ssize_t rw(struct bb_state *st, uint32_t dir, const unsigned char *data, size_t count,
		  unsigned char *out)
{
	struct bb_buf body = {0};
	struct bb_reply r;
	bb_put32(&body, dir);
	bb_put32(&body, (uint32_t)count);
	if (data)
		bb_put(&body, data, count);
	int rc = bb_call(BB_OP_SPI_RW, st->handle, &body, &r);
	free(body.p);
	if (rc < 0)
		return rc;
	ssize_t res = r.res;
	if (out && res > 0) {
		if ((size_t)res > r.len || (size_t)res > count)
			res = -EIO;
		else
			memcpy(out, r.data, (size_t)res);
	}
	bb_reply_free(&r);
	return res;
}

/* spidev_read(): 146-172 (one transfer at the device's speed). */
ssize_t bb_spi_read(struct bb_state *st, void *buf, size_t count)
{
	if (count > st->bufsiz)
		return -EMSGSIZE;
	unsigned char *tmp = malloc(count + 1);
	if (!tmp)
		return -ENOMEM;
	ssize_t res = rw(st, 0, NULL, count, tmp);
	if (res > 0 && bb_copy_out(buf, tmp, (size_t)res))
		res = -EFAULT;
	free(tmp);
	return res;
}

/* spidev_write(): 175-198. */
ssize_t bb_spi_write(struct bb_state *st, const void *buf, size_t count)
{
	if (count > st->bufsiz)
		return -EMSGSIZE;
	unsigned char *tmp = malloc(count + 1);
	if (!tmp)
		return -ENOMEM;
	ssize_t res = bb_copy_in(tmp, buf, count) ? -EFAULT : rw(st, 1, tmp, count, NULL);
	free(tmp);
	return res;
}
