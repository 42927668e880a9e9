import { assertEquals, ok, throws } from "../support/assert.ts";
import {
  Cmd,
  decodeHeader,
  DIGEST_LEN,
  DIGEST_PREFIX,
  emptyHeader,
  encodeHeader,
  EXT_MARK,
  extFlags,
  Flag,
  formatDigest,
  type Header,
  HEADER_SIZE,
  isValidDigest,
  isValidHeader,
  JOB_MAX,
  MAGIC,
  NAME_HARD_MAX,
  Off,
  requestBytes,
  Text,
  VERSION,
  withExt,
} from "../../src/protocol/wire.ts";
import { hex, unhex } from "../support/fds.ts";

// Expected bytes produced by Python: struct.pack("<IHHIIQQIIII", ...).
const PY_SMALL =
  "4244464d010002000300000004000000050000000000000006000000000000000700000008000000" +
  "090000000a000000";
const PY_LARGE =
  "4244464dfeff3412efbeadde443322110807060504030201ffffffffffffffff8877665547000000" +
  "ccbbaa990df0feca";
const PY_EMPTY = "4244464d01" + "00".repeat(43);

const LARGE: Header = {
  magic: MAGIC,
  version: 0xfffe,
  cmd: 0x1234,
  status: 0xdeadbeef,
  jobLen: 0x11223344,
  objectId: 0x0102030405060708n,
  size: 0xffffffffffffffffn,
  nameLen: 0x55667788,
  textLen: 71,
  allowLen: 0x99aabbcc,
  reserved: 0xcafef00d,
};

Deno.test("the wire constants have the protocol v1 values", () => {
  assertEquals(
    [HEADER_SIZE, MAGIC, VERSION, DIGEST_LEN, DIGEST_PREFIX, NAME_HARD_MAX, JOB_MAX],
    [48, 0x4d464442, 1, 71, "sha256:", 65536, 256],
  );
  // Protocol v1's commands, and the extensions far from them so no C test's "unknown" command
  // (0, 5, 9, 99, 255, ...) is taken.
  assertEquals(Cmd, {
    PUT: 1,
    GET: 2,
    LIST: 3,
    DROP: 4,
    STAT: 0x101,
    TAKEOVER: 0x102,
    WATCH: 0x103,
    USAGE: 0x104,
  });
  assertEquals([Flag.KEEP_ALIVE, Flag.WAIT, EXT_MARK], [1, 2, 0x4d460000]);
  assertEquals([withExt(0), withExt(1), extFlags(0x4d460003), extFlags(0xffffffff)], [
    0,
    0x4d460001,
    3,
    0,
  ]);
});

Deno.test("Off names every field offset of the C header layout", () => {
  assertEquals(Off, {
    magic: 0,
    version: 4,
    cmd: 6,
    status: 8,
    jobLen: 12,
    objectId: 16,
    size: 24,
    nameLen: 32,
    textLen: 36,
    allowLen: 40,
    reserved: 44,
  });
});

Deno.test("encodeHeader writes exactly the bytes of Python struct <IHHIIQQIIII", () => {
  const small = encodeHeader({
    cmd: 2,
    status: 3,
    jobLen: 4,
    objectId: 5n,
    size: 6n,
    nameLen: 7,
    textLen: 8,
    allowLen: 9,
    reserved: 10,
  });
  assertEquals(small.length, 48);
  assertEquals(hex(small), PY_SMALL);
  assertEquals(hex(encodeHeader(LARGE)), PY_LARGE);
});

Deno.test("encodeHeader starts with the magic bytes 42 44 46 4d and zeroes unused fields", () => {
  const h = encodeHeader({});
  assertEquals(hex(h.subarray(0, 4)), "4244464d");
  assertEquals(hex(h), PY_EMPTY);
  assertEquals(hex(encodeHeader(emptyHeader())), PY_EMPTY);
});

Deno.test("every field lands at its Off offset in little-endian order", () => {
  const h = encodeHeader(LARGE);
  const v = new DataView(h.buffer);
  assertEquals(v.getUint32(Off.magic, true), MAGIC);
  assertEquals(v.getUint16(Off.version, true), 0xfffe);
  assertEquals(v.getUint16(Off.cmd, true), 0x1234);
  assertEquals(v.getUint32(Off.status, true), 0xdeadbeef);
  assertEquals(v.getUint32(Off.jobLen, true), 0x11223344);
  assertEquals(v.getBigUint64(Off.objectId, true), 0x0102030405060708n);
  assertEquals(v.getBigUint64(Off.size, true), 0xffffffffffffffffn);
  assertEquals(v.getUint32(Off.nameLen, true), 0x55667788);
  assertEquals(v.getUint32(Off.textLen, true), 71);
  assertEquals(v.getUint32(Off.allowLen, true), 0x99aabbcc);
  assertEquals(v.getUint32(Off.reserved, true), 0xcafef00d);
  // Byte-level spot checks: version at 4, cmd at 6, object id low byte at 16.
  assertEquals([h[4], h[5], h[6], h[7], h[16], h[23]], [0xfe, 0xff, 0x34, 0x12, 0x08, 0x01]);
});

Deno.test("decodeHeader reads the Python-packed bytes back into the same fields", () => {
  assertEquals(decodeHeader(unhex(PY_LARGE)), LARGE);
  assertEquals(decodeHeader(unhex(PY_SMALL)), {
    magic: MAGIC,
    version: 1,
    cmd: 2,
    status: 3,
    jobLen: 4,
    objectId: 5n,
    size: 6n,
    nameLen: 7,
    textLen: 8,
    allowLen: 9,
    reserved: 10,
  });
});

Deno.test("encodeHeader and decodeHeader round-trip every field", () => {
  assertEquals(decodeHeader(encodeHeader(LARGE)), LARGE);
  assertEquals(decodeHeader(encodeHeader(emptyHeader())), emptyHeader());
});

Deno.test("encodeHeader writes into a given buffer at its byte offset and returns it", () => {
  const backing = new Uint8Array(60).fill(0xaa);
  const out = backing.subarray(6, 54);
  const r = encodeHeader({ cmd: 2, objectId: 5n }, out);
  ok(r === out);
  assertEquals(hex(backing.subarray(0, 6)), "aaaaaaaaaaaa");
  assertEquals(hex(backing.subarray(54)), "aaaaaaaaaaaa");
  assertEquals(decodeHeader(out).objectId, 5n);
  assertEquals(decodeHeader(out).cmd, 2);
});

Deno.test("decodeHeader reads from a subarray at its byte offset and ignores trailing bytes", () => {
  const backing = new Uint8Array(100);
  backing.set(unhex(PY_LARGE), 10);
  assertEquals(decodeHeader(backing.subarray(10)), LARGE);
});

Deno.test("decodeHeader rejects fewer than 48 bytes with a RangeError", () => {
  throws(() => decodeHeader(new Uint8Array(47)), {
    name: "RangeError",
    message: "Header needs 48 bytes, got 47",
  });
});

Deno.test("isValidHeader needs both the magic and the version", () => {
  assertEquals(isValidHeader(emptyHeader()), true);
  assertEquals(isValidHeader({ ...emptyHeader(), magic: 0x4d464443 }), false);
  assertEquals(isValidHeader({ ...emptyHeader(), version: 2 }), false);
  assertEquals(isValidHeader({ ...emptyHeader(), version: 0 }), false);
  assertEquals(isValidHeader({ ...emptyHeader(), cmd: 99, status: 7, reserved: 5 }), true);
});

const GOOD = "sha256:" + "0123456789abcdef".repeat(4);

Deno.test("isValidDigest accepts sha256: and 64 lowercase hex digits, as string or bytes", () => {
  assertEquals(GOOD.length, 71);
  assertEquals(isValidDigest(GOOD), true);
  assertEquals(isValidDigest(new TextEncoder().encode(GOOD)), true);
  assertEquals(isValidDigest("sha256:" + "f".repeat(64)), true);
  assertEquals(isValidDigest("sha256:" + "0".repeat(64)), true);
});

Deno.test("isValidDigest rejects uppercase hex anywhere in the digest", () => {
  assertEquals(isValidDigest("sha256:" + "A" + "a".repeat(63)), false);
  assertEquals(isValidDigest("sha256:" + "a".repeat(63) + "F"), false);
  assertEquals(isValidDigest("SHA256:" + "a".repeat(64)), false);
});

Deno.test("isValidDigest rejects short, long, bad-prefix and non-hex digests", () => {
  assertEquals(isValidDigest("sha256:" + "a".repeat(63)), false);
  assertEquals(isValidDigest("sha256:" + "a".repeat(65)), false);
  assertEquals(isValidDigest(""), false);
  assertEquals(isValidDigest("sha512:" + "a".repeat(64)), false);
  assertEquals(isValidDigest("sha256-" + "a".repeat(64)), false);
  assertEquals(isValidDigest("xsha256" + "a".repeat(64)), false);
  assertEquals(isValidDigest("sha256:" + "g" + "a".repeat(63)), false);
  assertEquals(isValidDigest("sha256:" + "a".repeat(63) + " "), false);
  assertEquals(isValidDigest("sha256:" + "a".repeat(63) + "\0"), false);
  const bytes = new TextEncoder().encode(GOOD);
  bytes[70] = 0x2f; // '/', just below '0'
  assertEquals(isValidDigest(bytes), false);
  bytes[70] = 0x67; // 'g', just above 'f'
  assertEquals(isValidDigest(bytes), false);
  bytes[70] = 0x60; // '`', just below 'a'
  assertEquals(isValidDigest(bytes), false);
  bytes[70] = 0x3a; // ':', just above '9'
  assertEquals(isValidDigest(bytes), false);
});

Deno.test("formatDigest renders 32 raw bytes as sha256: and lowercase hex", async () => {
  const raw = new Uint8Array(32).map((_, i) => i * 8 + 7);
  const s = formatDigest(raw);
  assertEquals(s, "sha256:070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff");
  assertEquals(isValidDigest(s), true);
  assertEquals(formatDigest(new Uint8Array(32)), "sha256:" + "0".repeat(64));
  const sha = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc")),
  );
  assertEquals(
    formatDigest(sha),
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("requestBytes sums the four body lengths without overflow", () => {
  const h = (p: Partial<Header>): Header => ({ ...emptyHeader(), ...p });
  assertEquals(requestBytes(h({ nameLen: 1, textLen: 2, jobLen: 4, allowLen: 8 })), 15);
  assertEquals(requestBytes(h({ nameLen: 0xffffffff, textLen: 1 })), 4294967296);
  assertEquals(
    requestBytes(h({ nameLen: 0xffffffff, textLen: 0xffffffff, jobLen: 0xffffffff })),
    3 * 4294967295,
  );
  assertEquals(
    requestBytes(
      h({ nameLen: 0xffffffff, textLen: 0xffffffff, jobLen: 0xffffffff, allowLen: 0xffffffff }),
    ),
    17179869180,
  );
  // Fields outside the four lengths never count.
  assertEquals(requestBytes(h({ objectId: 99n, size: 1000n, reserved: 7, status: 3 })), 0);
  // The sum of u32 maxima exceeds the default 4294967295 limit.
  ok(requestBytes(h({ nameLen: 0xffffffff, textLen: 1 })) > 4294967295);
});

Deno.test("requestBytes of a decoded all-ones header is 4 * 0xFFFFFFFF", () => {
  const bytes = new Uint8Array(48).fill(0xff);
  assertEquals(requestBytes(decodeHeader(bytes)), 4 * 0xffffffff);
});

Deno.test("Text holds the C broker error strings byte for byte", () => {
  assertEquals(Text.badHeader, "invalid protocol header");
  assertEquals(Text.requestTooLarge, "request payload exceeds broker limit");
  assertEquals(Text.nameOverLimit, "object name exceeds broker name limit");
  assertEquals(Text.bothSelectors, "specify object id or name, not both");
  assertEquals(Text.notSealed, "fd is not fully immutable-sealed");
  assertEquals(Text.objectQuota, "broker object quota exceeded");
  assertEquals(Text.clientQuota, "broker client quota exceeded");
  assertEquals(Text.listTooLarge, "list response too large");
  assertEquals(Text.allowNeedsOwner, "allowed job requires owner job");
});
