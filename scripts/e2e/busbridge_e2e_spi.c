// SPDX-License-Identifier: GPL-2.0
/*
 * busbridge end-to-end tests only: the virtio-spi driver registers a bare
 * controller and an x86 guest has no DT/ACPI to describe devices on it, so
 * this declares spidev devices on chip selects 0 and 1 of SPI bus 0 (the
 * first dynamically numbered controller).  "dh2228fv" is a name in spidev's
 * id table.  50 MHz is the simulated board's advertised maximum; Linux does
 * not clamp a transfer's explicit speed to it (the virtio-spi driver leaves
 * the controller's max_speed_hz unset), so the guest can still ask for more
 * and see the device refuse it.
 */
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/spi/spi.h>

static struct spi_board_info busbridge_e2e_spi[] __initdata = {
	{ .modalias = "dh2228fv", .max_speed_hz = 50000000, .bus_num = 0, .chip_select = 0 },
	{ .modalias = "dh2228fv", .max_speed_hz = 50000000, .bus_num = 0, .chip_select = 1 },
};

static int __init busbridge_e2e_spi_init(void)
{
	return spi_register_board_info(busbridge_e2e_spi, ARRAY_SIZE(busbridge_e2e_spi));
}
arch_initcall(busbridge_e2e_spi_init);
