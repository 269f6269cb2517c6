/* busbridge native preload: what its source files share.
 *
 * preload.c  keeps the table of emulated descriptors and interposes what
 *            changes it (close, dup, fcntl, close_range ...) and start-up;
 * open.c     interposes the open family: makes the emulated descriptors;
 * io.c       interposes ioctl, read, write and the other I/O calls;
 * preload.h  what those three share (private to them);
 * channel.c  the connection to the agent, and copies from/to the program's memory;
 * i2cdev.c   the ioctls, read and write of Linux drivers/i2c/i2c-dev.c;
 * spidev.c   the ioctls, read and write of Linux drivers/spi/spidev.c.
 *
 * The kernel source quoted in comments is Linux 6.1 (Debian's linux-source-6.1).
 * Only the user-memory side of each call lives here (argument checks in the
 * kernel's order, copies with EFAULT); what the adapter or controller does with
 * the transfer is the agent's job (bridge/native/i2cdev.py, spidev.py), so the
 * LD_PRELOAD path and `busbridge mount` (CUSE) share one implementation of it.
 * The request layouts below are mirrored by bridge/native/wire.py.
 */
#ifndef BUSBRIDGE_BB_H
#define BUSBRIDGE_BB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BB_KIND_I2C 1
#define BB_KIND_SPI 2

/* Agent operations (bridge/native/wire.py). */
#define BB_OP_OPEN_I2C 1
#define BB_OP_OPEN_SPI 2
#define BB_OP_CLOSE 3
#define BB_OP_I2C_XFER 4
#define BB_OP_I2C_SMBUS 5
#define BB_OP_I2C_SET 6
#define BB_OP_SPI_MSG 7
#define BB_OP_SPI_RW 8
#define BB_OP_SPI_GET 9
#define BB_OP_SPI_SET 10

#define BB_STATE_MAGIC 0x62627331u /* "bbs1" */

/* Per open file description, in a MAP_SHARED page of the memfd the program
 * holds: shared by dup() and fork() and found again after exec(), exactly
 * like the kernel's struct file (and i2c-dev's anonymous i2c_client in it).
 * The program's descriptor is that memfd reopened write-only and append-only,
 * with its size sealed (open.c): a read, write or truncate that bypasses the
 * library (io_uring, a raw system call) fails instead of reaching this page. */
struct bb_state {
	uint32_t magic;
	uint32_t agent;    /* which agent made it (hash of its socket path) */
	uint32_t kind;     /* BB_KIND_* */
	uint32_t handle;   /* the agent's device handle */
	uint32_t accmode;  /* O_RDONLY / O_WRONLY / O_RDWR as opened */
	uint32_t funcs;    /* i2c: the remote adapter's I2C_FUNCS */
	uint32_t bufsiz;   /* spi: spidev's bufsiz */
	uint16_t addr;     /* i2c: client->addr (I2C_SLAVE) */
	uint16_t flags;    /* i2c: client->flags (I2C_M_TEN, I2C_CLIENT_PEC) */
	uint32_t append;   /* O_APPEND as the program set it (the descriptor always has it) */
};

/* A reply from the agent: res is >= 0 or -errno; data follows. */
struct bb_reply {
	int32_t res;
	size_t len;          /* bytes in data */
	unsigned char *data; /* malloc'd; free with bb_reply_free */
};

/* A request under construction. */
struct bb_buf {
	unsigned char *p;
	size_t len, cap;
	int oom;
};

void bb_put(struct bb_buf *b, const void *data, size_t n);
void bb_put32(struct bb_buf *b, uint32_t v);
void bb_put16(struct bb_buf *b, uint16_t v);

/* Set up the channel for the agent at path; *id identifies it (our memfds). */
int bb_channel_init(const char *path, uint32_t *id);
void bb_channel_after_fork(void);

/* Send one request (op + handle + body) and wait for its reply; returns 0 or
 * -errno for a failure to reach the agent.  reply->res is the operation's. */
int bb_call(uint32_t op, uint32_t handle, const struct bb_buf *body, struct bb_reply *reply);
/* Fire and forget (BB_OP_CLOSE). */
void bb_send_only(uint32_t op, uint32_t handle);
void bb_reply_free(struct bb_reply *r);

/* Copies between the program's memory and ours that fail with -EFAULT, as
 * copy_from_user()/copy_to_user() do, instead of crashing on a bad pointer. */
int bb_copy_in(void *dst, const void *user, size_t n);
int bb_copy_out(void *user, const void *src, size_t n);

long bb_i2c_ioctl(struct bb_state *st, unsigned int cmd, unsigned long arg);
ssize_t bb_i2c_read(struct bb_state *st, void *buf, size_t count);
ssize_t bb_i2c_write(struct bb_state *st, const void *buf, size_t count);

long bb_spi_ioctl(struct bb_state *st, unsigned int cmd, unsigned long arg);
ssize_t bb_spi_read(struct bb_state *st, void *buf, size_t count);
ssize_t bb_spi_write(struct bb_state *st, const void *buf, size_t count);

#endif
