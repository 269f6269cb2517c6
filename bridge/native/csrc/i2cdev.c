/* The user side of Linux drivers/i2c/i2c-dev.c (6.1), line for line where it
 * matters: argument checks in the kernel's order, copies that fail with
 * EFAULT, the per-open client state (address, TEN and PEC flags).  The
 * transfer itself (i2c_transfer / i2c_smbus_xfer on the remote adapter) is the
 * agent's: bridge/native/i2cdev.py.
 */
#define _GNU_SOURCE
#include "bb.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>

#define I2C_CLIENT_PEC 0x04 /* include/linux/i2c.h */
#define I2C_DEV_MAX_LEN 8192 /* i2c-dev.c:142, 166, 250 */

/* One combined transfer: i2c_transfer(client->adapter, msgs, n). Returns the
 * number of messages done or -errno; read data lands in bufs[i] (lens[i]
 * bytes, which an I2C_M_RECV_LEN message changes). */
static int transfer(struct bb_state *st, const struct i2c_msg *msgs, unsigned n,
		    unsigned char **bufs, uint16_t *lens)
{
	struct bb_buf body = {0};
	struct bb_reply r;
	bb_put32(&body, n);
	for (unsigned i = 0; i < n; i++) {
		bb_put16(&body, msgs[i].addr);
		bb_put16(&body, msgs[i].flags);
		bb_put16(&body, lens[i]);
		bb_put16(&body, 0);
	}
	for (unsigned i = 0; i < n; i++)
		if (!(msgs[i].flags & I2C_M_RD))
			bb_put(&body, bufs[i], lens[i]);
	int rc = bb_call(BB_OP_I2C_XFER, st->handle, &body, &r);
	free(body.p);
	if (rc < 0)
		return rc;
	rc = r.res;
	size_t at = 0;
	for (unsigned i = 0; rc > 0 && i < (unsigned)rc && i < n; i++) {
		if (!(msgs[i].flags & I2C_M_RD))
			continue;
		uint16_t got;
		if (at + 2 > r.len)
			break;
		memcpy(&got, r.data + at, 2);
		at += 2;
		if (at + got > r.len || got > msgs[i].len)
			break;
		memcpy(bufs[i], r.data + at, got);
		lens[i] = got;
		at += got;
	}
	bb_reply_free(&r);
	return rc;
}

/* I2C_RDWR: i2c-dev.c:434-459 and i2cdev_ioctl_rdwr() 235-309. */
static long ioctl_rdwr(struct bb_state *st, unsigned long arg)
{
	struct i2c_rdwr_ioctl_data a;
	struct i2c_msg msgs[I2C_RDWR_IOCTL_MAX_MSGS];
	unsigned char *bufs[I2C_RDWR_IOCTL_MAX_MSGS] = {0};
	uint16_t lens[I2C_RDWR_IOCTL_MAX_MSGS];
	long res = 0;
	unsigned i, n;

	if (bb_copy_in(&a, (void *)arg, sizeof a))
		return -EFAULT;
	if (!a.msgs || a.nmsgs == 0)
		return -EINVAL;
	if (a.nmsgs > I2C_RDWR_IOCTL_MAX_MSGS)
		return -EINVAL;
	n = a.nmsgs;
	if (bb_copy_in(msgs, a.msgs, n * sizeof *msgs))
		return -EFAULT;
	for (i = 0; i < n; i++) {
		if (msgs[i].len > I2C_DEV_MAX_LEN) {
			res = -EINVAL;
			break;
		}
		/* memdup_user() of every buffer, read or write, before the transfer. */
		bufs[i] = malloc(msgs[i].len + 1u);
		if (!bufs[i]) {
			res = -ENOMEM;
			break;
		}
		if (bb_copy_in(bufs[i], msgs[i].buf, msgs[i].len)) {
			res = -EFAULT;
			break;
		}
		lens[i] = msgs[i].len;
		if (msgs[i].flags & I2C_M_RECV_LEN) {
			/* 275-286: the first byte holds the number of extra bytes (>= 1),
			 * and the buffer must fit the longest block after them. */
			if (!(msgs[i].flags & I2C_M_RD) || msgs[i].len < 1 || bufs[i][0] < 1 ||
			    msgs[i].len < bufs[i][0] + I2C_SMBUS_BLOCK_MAX) {
				res = -EINVAL;
				break;
			}
			lens[i] = bufs[i][0];
		}
	}
	if (res == 0) {
		res = transfer(st, msgs, n, bufs, lens);
		/* 298-305: read buffers are copied back when the transfer did not fail;
		 * a message the adapter did not reach keeps the caller's bytes. */
		for (i = 0; res >= 0 && i < n; i++)
			if ((msgs[i].flags & I2C_M_RD) && i < (unsigned)res &&
			    bb_copy_out(msgs[i].buf, bufs[i], lens[i]))
				res = -EFAULT;
	}
	for (i = 0; i < n; i++)
		free(bufs[i]);
	return res;
}

/* I2C_SMBUS: i2c-dev.c:461-471 and i2cdev_ioctl_smbus() 311-390. */
static long ioctl_smbus(struct bb_state *st, unsigned long arg)
{
	struct i2c_smbus_ioctl_data a;
	union i2c_smbus_data temp;
	size_t datasize = 0;
	int has_data;

	if (bb_copy_in(&a, (void *)arg, sizeof a))
		return -EFAULT;
	switch (a.size) {
	case I2C_SMBUS_BYTE:
	case I2C_SMBUS_QUICK:
	case I2C_SMBUS_BYTE_DATA:
	case I2C_SMBUS_WORD_DATA:
	case I2C_SMBUS_PROC_CALL:
	case I2C_SMBUS_BLOCK_DATA:
	case I2C_SMBUS_I2C_BLOCK_BROKEN:
	case I2C_SMBUS_I2C_BLOCK_DATA:
	case I2C_SMBUS_BLOCK_PROC_CALL:
		break;
	default:
		return -EINVAL;
	}
	if (a.read_write != I2C_SMBUS_READ && a.read_write != I2C_SMBUS_WRITE)
		return -EINVAL;
	memset(&temp, 0, sizeof temp);
	/* 344-350: quick and "send byte" carry no data (the pointer is not read). */
	has_data = !(a.size == I2C_SMBUS_QUICK ||
		     (a.size == I2C_SMBUS_BYTE && a.read_write == I2C_SMBUS_WRITE));
	if (has_data) {
		if (a.data == NULL)
			return -EINVAL;
		if (a.size == I2C_SMBUS_BYTE_DATA || a.size == I2C_SMBUS_BYTE)
			datasize = sizeof temp.byte;
		else if (a.size == I2C_SMBUS_WORD_DATA || a.size == I2C_SMBUS_PROC_CALL)
			datasize = sizeof temp.word;
		else
			datasize = sizeof temp.block;
		if ((a.size == I2C_SMBUS_PROC_CALL || a.size == I2C_SMBUS_BLOCK_PROC_CALL ||
		     a.size == I2C_SMBUS_I2C_BLOCK_DATA || a.read_write == I2C_SMBUS_WRITE) &&
		    bb_copy_in(&temp, a.data, datasize))
			return -EFAULT;
		if (a.size == I2C_SMBUS_I2C_BLOCK_BROKEN) {
			a.size = I2C_SMBUS_I2C_BLOCK_DATA;
			if (a.read_write == I2C_SMBUS_READ)
				temp.block[0] = I2C_SMBUS_BLOCK_MAX;
		}
	}

	struct bb_buf body = {0};
	struct bb_reply r;
	bb_put16(&body, st->addr);
	bb_put16(&body, st->flags);
	unsigned char rw_cmd[4] = {a.read_write, a.command, (unsigned char)has_data, 0};
	bb_put(&body, rw_cmd, 4);
	bb_put32(&body, a.size);
	bb_put(&body, &temp, sizeof temp);
	int rc = bb_call(BB_OP_I2C_SMBUS, st->handle, &body, &r);
	free(body.p);
	if (rc < 0)
		return rc;
	long res = r.res;
	if (res == 0 && r.len >= sizeof temp)
		memcpy(&temp, r.data, sizeof temp);
	bb_reply_free(&r);
	if (has_data && res == 0 &&
	    (a.size == I2C_SMBUS_PROC_CALL || a.size == I2C_SMBUS_BLOCK_PROC_CALL ||
	     a.read_write == I2C_SMBUS_READ) &&
	    bb_copy_out(a.data, &temp, datasize))
		return -EFAULT;
	return res;
}

static long adapter_set(struct bb_state *st, unsigned int cmd, unsigned long arg)
{
	struct bb_buf body = {0};
	struct bb_reply r;
	uint64_t v = arg;
	bb_put32(&body, cmd);
	bb_put32(&body, 0);
	bb_put(&body, &v, 8);
	int rc = bb_call(BB_OP_I2C_SET, st->handle, &body, &r);
	free(body.p);
	if (rc < 0)
		return rc;
	rc = r.res;
	bb_reply_free(&r);
	return rc;
}

/* i2cdev_ioctl(): i2c-dev.c:392-497. */
long bb_i2c_ioctl(struct bb_state *st, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case I2C_SLAVE:
	case I2C_SLAVE_FORCE:
		if (arg > 0x3ff || ((st->flags & I2C_M_TEN) == 0 && arg > 0x7f))
			return -EINVAL;
		/* I2C_SLAVE's EBUSY (i2cdev_check_addr) means "a kernel driver of this
		 * machine is bound to the address": none ever is to a remote bus.  A
		 * busbridge lease held by someone else shows as EBUSY on the transfer. */
		st->addr = (uint16_t)arg;
		return 0;
	case I2C_TENBIT:
		if (arg)
			st->flags |= I2C_M_TEN;
		else
			st->flags &= (uint16_t)~I2C_M_TEN;
		return 0;
	case I2C_PEC:
		/* The kernel sets the flag whatever the adapter; busbridge refuses to
		 * turn PEC on for an adapter without I2C_FUNC_SMBUS_PEC, so a program
		 * learns at once that its checksums would not be checked. */
		if (arg) {
			if (!(st->funcs & I2C_FUNC_SMBUS_PEC))
				return -EOPNOTSUPP;
			st->flags |= I2C_CLIENT_PEC;
		} else {
			st->flags &= (uint16_t)~I2C_CLIENT_PEC;
		}
		return 0;
	case I2C_FUNCS: {
		unsigned long funcs = st->funcs;
		return bb_copy_out((void *)arg, &funcs, sizeof funcs);
	}
	case I2C_RDWR:
		return ioctl_rdwr(st, arg);
	case I2C_SMBUS:
		return ioctl_smbus(st, arg);
	case I2C_RETRIES:
		if (arg > INT_MAX)
			return -EINVAL;
		return adapter_set(st, cmd, arg);
	case I2C_TIMEOUT:
		if (arg > INT_MAX / 10)
			return -EINVAL;
		return adapter_set(st, cmd, arg);
	default:
		return -ENOTTY;
	}
}

/* i2cdev_read(): 134-157, i2c_master_recv() -> i2c_transfer_buffer_flags(),
 * which returns count when the one message went through, else what
 * i2c_transfer returned (0 when the adapter did not complete it). */
ssize_t bb_i2c_read(struct bb_state *st, void *buf, size_t count)
{
	if (count > I2C_DEV_MAX_LEN)
		count = I2C_DEV_MAX_LEN;
	unsigned char *tmp = malloc(count + 1);
	if (!tmp)
		return -ENOMEM;
	struct i2c_msg m = {.addr = st->addr, .flags = (st->flags & I2C_M_TEN) | I2C_M_RD,
			    .len = (uint16_t)count};
	uint16_t len = (uint16_t)count;
	int ret = transfer(st, &m, 1, &tmp, &len);
	ssize_t res = ret == 1 ? (ssize_t)count : ret;
	if (res > 0 && bb_copy_out(buf, tmp, (size_t)res))
		res = -EFAULT;
	free(tmp);
	return res;
}

/* i2cdev_write(): 159-178 (memdup_user first, then i2c_master_send). */
ssize_t bb_i2c_write(struct bb_state *st, const void *buf, size_t count)
{
	if (count > I2C_DEV_MAX_LEN)
		count = I2C_DEV_MAX_LEN;
	unsigned char *tmp = malloc(count + 1);
	if (!tmp)
		return -ENOMEM;
	if (bb_copy_in(tmp, buf, count)) {
		free(tmp);
		return -EFAULT;
	}
	struct i2c_msg m = {.addr = st->addr, .flags = st->flags & I2C_M_TEN,
			    .len = (uint16_t)count};
	uint16_t len = (uint16_t)count;
	int ret = transfer(st, &m, 1, &tmp, &len);
	free(tmp);
	return ret == 1 ? (ssize_t)count : ret;
}
