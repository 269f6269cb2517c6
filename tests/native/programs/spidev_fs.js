// Node's fs on /dev/spidev0.1 (a loopback chip select): an async write, then an
// async read; libuv runs them on its thread pool, or through io_uring with
// UV_USE_IO_URING=1 (past libc and the preload library).
const fs = require('fs');
const fd = fs.openSync('/dev/spidev0.1', 'r+');
fs.write(fd, Buffer.from([1, 2]), 0, 2, null, (err, n) => {
  console.log('write', err ? err.code : n);
  fs.read(fd, Buffer.alloc(2), 0, 2, null, (err2, m, buf) => {
    console.log('read', err2 ? err2.code : m);
    fs.closeSync(fd);
  });
});
