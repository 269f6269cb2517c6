// Node's i2c-bus (npm, a native addon) as its README uses it: read the TMP117's
// ID, write and read back the EEPROM, scan the bus, and see a NACK's error.
// tests/native/test_node.py runs it unmodified under `busbridge run`.
'use strict';
const i2c = require('i2c-bus');

const out = {};
const bus = i2c.openSync(1);
out.id = bus.readWordSync(0x48, 0x0f);            // SMBus word: 0x1701
out.funcs = bus.i2cFuncsSync().smbusReadWord;
bus.i2cWriteSync(0x50, 4, Buffer.from([0x03, 0x00, 0xca, 0xfe]));  // EEPROM page write
bus.i2cWriteSync(0x50, 2, Buffer.from([0x03, 0x00]));              // set the address
const buf = Buffer.alloc(2);
out.read = bus.i2cReadSync(0x50, 2, buf);
out.eeprom = buf.toString('hex');
out.scan = bus.scanSync();
try {
  bus.readByteSync(0x33, 0x00);
  out.nack = 'no error';
} catch (e) {
  out.nack = e.code;
}
// The asynchronous API runs on libuv's thread pool.
bus.readWord(0x48, 0x0f, (err, word) => {
  out.async = err ? err.code : word;
  bus.closeSync();
  console.log(JSON.stringify(out));
});
