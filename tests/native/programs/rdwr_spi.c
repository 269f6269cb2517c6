/* A native program written the way people write them against the kernel ABI:
 * an I2C_RDWR register read (TMP117 ID), an I2C_RDWR chain to an absent
 * address, and one SPI_IOC_MESSAGE(2) whose two transfers differ in speed and
 * word size (JEDEC ID of the NOR flash).  tests/native runs it unmodified under
 * `busbridge run`; its output is one line per step. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <linux/spi/spidev.h>

int main(void)
{
	int fd = open("/dev/i2c-1", O_RDWR);
	if (fd < 0) {
		printf("open i2c: %s\n", strerror(errno));
		return 1;
	}
	unsigned char reg = 0x0f, id[2] = {0, 0};
	struct i2c_msg m[2] = {{0x48, 0, 1, &reg}, {0x48, I2C_M_RD, 2, id}};
	struct i2c_rdwr_ioctl_data d = {m, 2};
	int n = ioctl(fd, I2C_RDWR, &d);
	printf("rdwr %d id %02x%02x\n", n, id[0], id[1]);

	unsigned char b = 0, r = 0x5a;
	struct i2c_msg nack[2] = {{0x33, 0, 1, &b}, {0x33, I2C_M_RD, 1, &r}};
	d.msgs = nack;
	n = ioctl(fd, I2C_RDWR, &d);
	printf("nack %d errno %s untouched %02x\n", n, n < 0 ? strerror(errno) : "-", r);
	close(fd);

	int s = open("/dev/spidev0.0", O_RDWR);
	if (s < 0) {
		printf("open spi: %s\n", strerror(errno));
		return 1;
	}
	unsigned char tx[1] = {0x9f}, rx[4] = {0};
	struct spi_ioc_transfer t[2];
	memset(t, 0, sizeof t);
	t[0].tx_buf = (uintptr_t)tx;
	t[0].len = 1;
	t[0].speed_hz = 1000000;
	t[0].bits_per_word = 8;
	t[0].delay_usecs = 5;
	t[0].word_delay_usecs = 2;
	t[1].rx_buf = (uintptr_t)rx;
	t[1].len = 4;
	t[1].speed_hz = 20000000;
	t[1].bits_per_word = 16;
	n = ioctl(s, SPI_IOC_MESSAGE(2), t);
	printf("spi %d rx %02x %02x %02x %02x\n", n, rx[0], rx[1], rx[2], rx[3]);
	close(s);
	return 0;
}
