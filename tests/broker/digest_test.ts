/**
 * Flag.DIGEST: a PUT without a digest that asks the broker to compute it (one hash pass for the
 * publisher), the broker's advertisement of the bit, the client's use of it, and the client's
 * fallback to a plain PUT when the broker at the path does not honour it (a C broker answers
 * `invalid object digest`, as a stand-in peer does here). Also the broker's hashing of sparse and
 * dense objects (read, never mapped, when sparse).
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  BrokerProcess,
  digestOf,
  enc,
  RawClient,
  request,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { assertAudit, bin, closeFds, ST } from "../support/wire.ts";
import {
  Cmd,
  decodeHeader,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  HEADER_SIZE,
  Text,
  withExt,
} from "../../src/protocol/wire.ts";
import { Session } from "../support/wire.ts";
import { Client } from "../../src/client.ts";
import { digestBytes, digestFd, digestFdRead, digestObjectFd } from "../../src/hash/digest.ts";
import { fstat } from "../../src/sys/fd.ts";
import { FALLOC_FL_KEEP_SIZE } from "../../src/sys/linux.ts";
import { Memfd } from "../../src/sys/memfd.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import {
  acceptUnix,
  bindUnix,
  listenUnix,
  recvMsg,
  sendSome,
  sockaddrUn,
  unixSocket,
} from "../../src/sys/unix_socket.ts";
import { EAGAIN } from "../../src/sys/linux.ts";

const DATA = enc("hello");
const DIG = digestOf(DATA);

/** A PUT of `name` with Flag.DIGEST and no digest. */
function digestlessPut(name: string, size: bigint, reserved = withExt(Flag.DIGEST)): Uint8Array {
  return request({ cmd: Cmd.PUT, size, nameLen: name.length, textLen: 0, reserved }, name);
}

Deno.test("a PUT with Flag.DIGEST and no digest gets the broker's digest in its reply", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);

  await t.step("the reply carries the digest (text_len 71) and the DIGEST bit", async () => {
    using c = await RawClient.connect(s.socket);
    using m = sealedMemfd(DATA);
    await c.send(digestlessPut("d1", 5n), [m.fd]);
    const r = await c.reply();
    closeFds(r.fds);
    assertEquals(
      [r.header.status, r.header.cmd, r.header.objectId, r.header.size, r.header.textLen],
      [ST.OK, Cmd.PUT, 1n, 5n, DIGEST_LEN],
    );
    assertEquals(extFlags(r.header.reserved), Flag.DIGEST);
    assertEquals(bin(r.body), DIG);
    assertAudit(await s.nextAudit(), {
      op: "put",
      result: "ok",
      object_id: 1,
      name: "d1",
      size: 5,
      digest: DIG,
    });
  });

  await t.step("the object is stored under that digest (GET sends it)", async () => {
    const { reply: r } = await s.get({ id: 1 });
    assertEquals([r.header.status, bin(r.body)], [ST.OK, "d1" + DIG]);
  });

  await t.step("an error reply to such a PUT also carries the DIGEST bit", async () => {
    using c = await RawClient.connect(s.socket);
    await c.send(digestlessPut("d2", 5n));
    const r = await c.reply();
    assertEquals([r.header.status, bin(r.body)], [ST.BAD_REQUEST, Text.missingFd]);
    assertEquals(extFlags(r.header.reserved), Flag.DIGEST);
    await s.nextAudit();
  });

  await t.step(
    "without the extension marker the bit is ignored: text_len 0 is refused",
    async () => {
      using c = await RawClient.connect(s.socket);
      using m = sealedMemfd(DATA);
      await c.send(digestlessPut("d3", 5n, Flag.DIGEST), [m.fd]);
      const r = await c.reply();
      assertEquals([r.header.status, bin(r.body), r.header.reserved], [
        ST.BAD_REQUEST,
        Text.invalidDigest,
        0,
      ]);
      await s.nextAudit();
    },
  );

  await t.step(
    "Client.put of a large object uses the bit and returns the broker's digest",
    async () => {
      const bytes = new Uint8Array(5 << 20);
      for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i & 0xff;
      await using client = new Client({ socket: s.socket, jobId: null });
      const r = await client.put(bytes, { name: "big" });
      assertEquals(r.digest, digestBytes(bytes));
      const line = await s.nextAudit();
      assertAudit(line, {
        op: "put",
        result: "ok",
        object_id: Number(r.id),
        name: "big",
        size: bytes.length,
        digest: r.digest,
      });
      // A small put on the same client now skips hashing too (the broker advertised the bit).
      const small = await client.put(DATA, { name: "small" });
      assertEquals(small.digest, DIG);
      await s.nextAudit();
      const file = `${dir.path}/small.bin`;
      Deno.writeFileSync(file, DATA);
      const fromFile = await client.put(file, { name: "small-file" });
      assertEquals(fromFile.digest, DIG);
      await s.nextAudit();
    },
  );
});

/**
 * A stand-in for a protocol-v1 broker: answers a PUT whose text_len is not 71 with `invalid
 * object digest` (reserved 0) and closes, as the C broker does; answers a full PUT with id 7.
 * Returns the requests' headers it saw.
 */
async function v1Peer(path: string, connections: number): Promise<number[]> {
  const addr = sockaddrUn(path);
  if (addr === null) throw new Error("path too long");
  const listener = unixSocket(true);
  bindUnix(listener, addr);
  listenUnix(listener, 8);
  const seen: number[] = [];
  const buf = new Uint8Array(1 << 16);
  const readSome = async (fd: number, min: number): Promise<Uint8Array> => {
    let got = new Uint8Array(0);
    while (got.length < min) {
      const r = await waitFor(() => {
        const x = recvMsg(fd, buf);
        if (typeof x !== "number") return x;
        if (x !== -EAGAIN) throw new Error(`recvmsg ${x}`);
        return null;
      }, { what: "the stand-in broker to receive a full request", everyMs: 2 });
      closeFds(r.fds);
      if (r.bytes === 0) break;
      const next = new Uint8Array(got.length + r.bytes);
      next.set(got);
      next.set(buf.subarray(0, r.bytes), got.length);
      got = next;
    }
    return got;
  };
  try {
    for (let n = 0; n < connections; n++) {
      const fd = await waitFor(() => {
        const f = acceptUnix(listener);
        return f === -EAGAIN ? null : f;
      }, { what: "the client to connect to the stand-in broker", everyMs: 2 });
      try {
        const head = await readSome(fd, HEADER_SIZE);
        const h = decodeHeader(head);
        seen.push(h.textLen);
        if (h.textLen !== DIGEST_LEN) {
          const text = enc(Text.invalidDigest);
          sendSome(
            fd,
            encodeHeader({ cmd: Cmd.PUT, status: ST.BAD_REQUEST, textLen: text.length }),
          );
          sendSome(fd, text);
        } else {
          const body = h.nameLen + h.textLen + h.jobLen + h.allowLen;
          await readSome(fd, body - (head.length - HEADER_SIZE));
          sendSome(fd, encodeHeader({ cmd: Cmd.PUT, objectId: 7n, size: h.size }));
        }
      } finally {
        closeQuietly(fd);
      }
    }
  } finally {
    closeQuietly(listener);
  }
  return seen;
}

Deno.test("against a broker without Flag.DIGEST the client falls back to sending the digest", async () => {
  using dir = tempDir();
  const path = `${dir.path}/v1.sock`;
  const peer = v1Peer(path, 2);
  const bytes = new Uint8Array(5 << 20).fill(3);
  await using client = new Client({ socket: path, jobId: null, keepAlive: false });
  const r = await client.put(bytes, { name: "big" });
  assertEquals([r.id, r.digest], [7n, digestBytes(bytes)]);
  // First the digest-less try (text_len 0), refused; then a plain PUT with the 71-byte digest.
  assertEquals(await peer, [0, DIGEST_LEN]);
});

Deno.test("the broker's digest reads sparse objects and maps dense ones, with equal results", () => {
  const size = 3 << 20;
  using sparse = Memfd.create("sparse");
  sparse.truncate(size);
  sparse.seal();
  const zeros = digestBytes(new Uint8Array(size));
  assertEquals([digestObjectFd(sparse.fd, size), digestFdRead(sparse.fd, size)], [zeros, zeros]);
  const bytes = new Uint8Array(size).fill(9);
  using dense = sealedMemfd(bytes);
  assertEquals(digestObjectFd(dense.fd, size), digestFd(dense.fd, size));
  assertEquals(digestObjectFd(dense.fd, size), digestBytes(bytes));
  // A descriptor shorter than claimed is a short read, not a digest of padding.
  using short = sealedMemfd(DATA);
  let threw = false;
  try {
    digestFdRead(short.fd, 10);
  } catch (e) {
    threw = e instanceof RangeError;
  }
  ok(threw, "reading past the end did not fail");
});

Deno.test("a memfd with holes that only looks dense (pages allocated past its end) is read, not mapped", () => {
  const size = 4 << 20;
  using m = Memfd.create("disguised");
  m.truncate(size);
  m.writeAll(new Uint8Array(4096).fill(2));
  // As many blocks as its size, all but one page of them past the end of file.
  assertEquals(libc.symbols.fallocate(m.fd, FALLOC_FL_KEEP_SIZE, BigInt(size), BigInt(size)), 0);
  m.seal();
  const before = fstat(m.fd).blocks;
  ok(before * 512n >= BigInt(size), `only ${before} blocks`);
  const expected = new Uint8Array(size);
  expected.fill(2, 0, 4096);
  assertEquals(digestObjectFd(m.fd, size), digestBytes(expected));
  // Through a mapping, each hole would have become a page charged to the reader.
  assertEquals(fstat(m.fd).blocks, before);
});

Deno.test("the Worker's way (pages mapped in ahead, unmapped after the answer) gives the same digest", async () => {
  // Not a multiple of the page size, and large enough for the prefetch (from 4 MiB) to run.
  const size = (9 << 20) + 12345;
  const bytes = new Uint8Array(size).map((_, i) => (i * 131 + (i >> 12)) & 0xff);
  using dense = sealedMemfd(bytes);
  const later: (() => Promise<void>)[] = [];
  assertEquals(digestObjectFd(dense.fd, size, later), digestBytes(bytes));
  assertEquals(later.length, 1);
  await Promise.all(later.map((run) => run()));
  // A sparse object is read (nothing mapped, nothing left to do later).
  using sparse = Memfd.create("sparse");
  sparse.truncate(size);
  sparse.seal();
  const none: (() => Promise<void>)[] = [];
  assertEquals(digestObjectFd(sparse.fd, size, none), digestBytes(new Uint8Array(size)));
  assertEquals(none.length, 0);
});

Deno.test("a large put hashed on the broker's Worker reads back byte-identical, from memory and from a file", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  await using client = new Client({ socket: broker.socket, jobId: null });
  const size = (9 << 20) + 12345;
  const original = new Uint8Array(size).map((_, i) => (i * 31 + (i >> 16)) & 0xff);
  const want = digestBytes(original);

  await t.step("from memory; the source buffer is not needed once put() resolves", async () => {
    const source = original.slice();
    const r = await client.put(source, { name: "big-mem" });
    assertEquals([r.size, r.digest], [size, want]);
    source.fill(0);
    source.buffer.transfer(0);
    using obj = await client.get({ name: "big-mem" });
    const back = obj.bytes();
    assertEquals(back.length, size);
    ok(back.every((b, i) => b === original[i]), "the object's bytes differ from the source's");
  });

  await t.step("from a file", async () => {
    const path = `${dir.path}/big.bin`;
    Deno.writeFileSync(path, original);
    const r = await client.put(path, { name: "big-file" });
    assertEquals([r.size, r.digest], [size, want]);
    using obj = await client.get(r.id);
    assertEquals(digestBytes(obj.bytes()), want);
  });
});
