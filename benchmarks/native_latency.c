/* Per-call latency of native programs on a remote bus (benchmarks/native_latency.py).
 *
 *   native_latency smbus N      I2C_SMBUS read word (TMP117 ID) through the preload library
 *   native_latency rdwr N       I2C_RDWR write 1 + read 2, same register
 *   native_latency agent N      SPI_IOC_RD_MODE: a round trip to the agent only, no network
 *   native_latency slave N      I2C_SLAVE: answered inside the library
 *   native_latency direct HOST PORT N
 *                               the same register read as the I2C_RDWR, spoken to the
 *                               server directly in busbridge frames from C: what the
 *                               library would cost if it spoke the protocol itself
 *                               (hand-encoded msgpack, no TLS, no error handling)
 * Prints "median_us p90_us mean_us" over N calls (after 50 warm-up calls).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <linux/spi/spidev.h>

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int fd, sock;
static uint32_t next_id = 1;

static void call_smbus(void)
{
	union i2c_smbus_data d;
	struct i2c_smbus_ioctl_data a = {I2C_SMBUS_READ, 0x0f, I2C_SMBUS_WORD_DATA, &d};
	if (ioctl(fd, I2C_SMBUS, &a) < 0 || d.word != 0x1701)
		die("I2C_SMBUS");
}

static void call_rdwr(void)
{
	unsigned char reg = 0x0f, id[2];
	struct i2c_msg m[2] = {{0x48, 0, 1, &reg}, {0x48, I2C_M_RD, 2, id}};
	struct i2c_rdwr_ioctl_data a = {m, 2};
	if (ioctl(fd, I2C_RDWR, &a) != 2 || id[0] != 0x01)
		die("I2C_RDWR");
}

static void call_agent(void)
{
	uint8_t mode;
	if (ioctl(fd, SPI_IOC_RD_MODE, &mode) < 0)
		die("SPI_IOC_RD_MODE");
}

static void call_slave(void)
{
	if (ioctl(fd, I2C_SLAVE, 0x48) < 0)
		die("I2C_SLAVE");
}

static void send_all(const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = send(sock, p, n, 0);
		if (w <= 0)
			die("send");
		p += w;
		n -= (size_t)w;
	}
}

static void recv_frame(unsigned char type)
{
	unsigned char hdr[4], body[65536];
	size_t got = 0;
	while (got < 4) {
		ssize_t r = recv(sock, hdr + got, 4 - got, 0);
		if (r <= 0)
			die("recv");
		got += (size_t)r;
	}
	uint32_t len = (uint32_t)hdr[0] << 24 | hdr[1] << 16 | hdr[2] << 8 | hdr[3];
	if (len > sizeof body)
		die("frame too long");
	for (got = 0; got < len;) {
		ssize_t r = recv(sock, body + got, len - got, 0);
		if (r <= 0)
			die("recv");
		got += (size_t)r;
	}
	if (len < 2 || body[1] != type) {
		fprintf(stderr, "unexpected frame type %d\n", len > 1 ? body[1] : -1);
		exit(1);
	}
}

static void call_direct(void)
{
	/* [2, id, "1", [[hdr 0x48 FAIL_NEXT, bin 0f], [hdr 0x48 M_RD, 2]], nil] */
	unsigned char f[] = {0, 0, 0, 0,
			     0x95, 0x02, 0xce, 0, 0, 0, 0, 0xa1, '1', 0x92,
			     0x92, 0xc4, 0x08, 0x90, 0, 0, 0, 0x01, 0, 0, 0, 0xc4, 0x01, 0x0f,
			     0x92, 0xc4, 0x08, 0x90, 0, 0, 0, 0x02, 0, 0, 0, 0x02,
			     0xc0};
	uint32_t len = sizeof f - 4, id = next_id++;
	f[0] = len >> 24, f[1] = len >> 16, f[2] = len >> 8, f[3] = len;
	f[7] = id >> 24, f[8] = id >> 16, f[9] = id >> 8, f[10] = id;
	send_all(f, sizeof f);
	recv_frame(0x04); /* RESULT */
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s smbus|rdwr|agent|slave N | direct HOST PORT N\n", argv[0]);
		return 2;
	}
	void (*call)(void);
	int n;
	if (strcmp(argv[1], "direct") == 0) {
		if (argc < 5)
			return 2;
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
		inet_pton(AF_INET, argv[2], &sa.sin_addr);
		sock = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
			die("connect");
		int one = 1;
		setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		static const unsigned char hello[] = {
			0, 0, 0, 0x1a, 0x93, 0, 0, 0x82, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 1,
			0xa6, 'c', 'l', 'i', 'e', 'n', 't', 0xa5, 'a', 'g', 'e', 'n', 't'};
		send_all(hello, sizeof hello);
		recv_frame(0x01); /* WELCOME */
		call = call_direct;
		n = atoi(argv[4]);
	} else {
		n = atoi(argv[2]);
		if (strcmp(argv[1], "agent") == 0) {
			fd = open("/dev/spidev0.1", O_RDWR);
			call = call_agent;
		} else {
			fd = open("/dev/i2c-1", O_RDWR);
			call = strcmp(argv[1], "smbus") == 0 ? call_smbus
			     : strcmp(argv[1], "rdwr") == 0 ? call_rdwr : call_slave;
		}
		if (fd < 0)
			die("open");
		if (call != call_agent && ioctl(fd, I2C_SLAVE, 0x48) < 0)
			die("I2C_SLAVE");
	}
	double *t = malloc(sizeof *t * (size_t)n);
	for (int i = 0; i < 50; i++)
		call();
	double total = 0;
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		call();
		t[i] = now_us() - t0;
		total += t[i];
	}
	qsort(t, (size_t)n, sizeof *t, cmp);
	printf("%.1f %.1f %.1f\n", t[n / 2], t[n * 9 / 10], total / n);
	return 0;
}
