"""vhost-user back end: a QEMU guest's own virtio-i2c / virtio-spi driver on a remote bus.

QEMU connects to a unix socket and hands over the guest's memory and the
virtqueue; every descriptor chain becomes busbridge frames sent through
:class:`bridge.client.AsyncClient`.  One agent process serves one device.
"""
