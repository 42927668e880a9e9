/**
 * Issue 10, point 2: a descriptor whose close() blocks (a TCP socket with SO_LINGER and a send
 * queue that cannot drain), attached to a request, does not freeze the broker: other clients are
 * answered while it is being closed. Against a real broker process.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, enc, request, roundTrip, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Status } from "../../src/errors.ts";
import { RawClient } from "../support/harness.ts";

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0x800;
const SOL_SOCKET = 1;
const SO_LINGER = 13;
const LINGER_S = 30;

/** A TCP socket connected to a peer that never reads, its send queue full, lingering 30 s. */
function lingeringSocket(port: number): number {
  const fd = libc.symbols.socket(AF_INET, SOCK_STREAM, 0);
  ok(fd >= 0);
  const addr = new Uint8Array(16);
  const v = new DataView(addr.buffer);
  v.setUint16(0, AF_INET, true);
  v.setUint16(2, port, false);
  addr.set([127, 0, 0, 1], 4);
  ok(libc.symbols.connect(fd, addr, 16) === 0, "connect to the local TCP listener");
  const linger = new Int32Array([1, LINGER_S]);
  libc.symbols.setsockopt(fd, SOL_SOCKET, SO_LINGER, new Uint8Array(linger.buffer), 8);
  libc.symbols.fcntl(fd, 4, /* F_SETFL */ SOCK_NONBLOCK /* O_NONBLOCK */);
  const chunk = new Uint8Array(64 * 1024);
  let queued = 0;
  for (;;) {
    const n = Number(libc.symbols.send(fd, chunk, BigInt(chunk.length), 0x4000));
    if (n <= 0) break;
    queued += n;
  }
  ok(queued > 0, "the send queue is full");
  return fd;
}

/** True when the broker process holds a TCP socket (the one the test sent). */
function holdsSocket(pid: number): boolean {
  const tcp = new Set(
    Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1).map((l) => l.trim().split(/\s+/)[9])
      .filter((x) => x !== undefined),
  );
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const m = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).match(/^socket:\[(\d+)\]$/);
      if (m !== null && tcp.has(m[1] ?? "")) return true;
    } catch {
      // Closed meanwhile.
    }
  }
  return false;
}

Deno.test("a lingering TCP socket attached to a request does not stall other clients while the broker closes it", async () => {
  using dir = tempDir();
  await using b = await BrokerProcess.start(dir.path);
  // The peer accepts but never reads, so the lingering close waits its full 30 s.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fd = lingeringSocket(listener.addr.port);
  const accepted = await listener.accept();
  try {
    // A PUT header with the socket attached; the broker holds it while the body is missing.
    using c = await RawClient.connect(b.socket);
    const name = "a\nb";
    await c.send(request({ cmd: Cmd.PUT, size: 1n, nameLen: name.length, textLen: 71 }), [fd]);
    await waitFor(() => holdsSocket(b.pid), {
      what: "the broker to hold the socket",
      timeoutMs: 10_000,
    });
    closeQuietly(fd); // the broker's copy is now the last one: its close lingers
    // The body brings a refused name, so the broker drops the descriptor now.
    await c.send(enc(name + "sha256:" + "0".repeat(64)));
    const r = await c.reply(10_000);
    assertEquals(r.header.status, Status.BAD_REQUEST);
    // Other clients are served well within the linger time.
    const start = performance.now();
    for (let i = 0; i < 3; i++) {
      const r = await roundTrip(b.socket, request({ cmd: Cmd.LIST }));
      assertEquals(r.header.status, Status.OK);
    }
    const took = performance.now() - start;
    ok(took < (LINGER_S * 1000) / 3, `three LISTs took ${took.toFixed(0)} ms`);
  } finally {
    accepted.close();
  }
});
