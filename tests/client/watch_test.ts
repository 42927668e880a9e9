/**
 * The client side of WATCH over a real Unix socket, against a small in-test server that speaks
 * the extension: the request bytes, the events in order, and a clean close on `break`, on an
 * AbortSignal and with `using` (the server sees end of stream, no descriptor is left open), a C
 * broker's `unknown command`, and hostile frames.
 */
import { assertEquals, ok, rejects } from "../support/assert.ts";
import { Connection } from "../../src/client/connection.ts";
import { type BusEvent, Watch } from "../../src/client/watch.ts";
import { encodeWatchEvent, encodeWatchRequest, type WatchEvent } from "../../src/protocol/watch.ts";
import { Cmd, encodeHeader, HEADER_SIZE } from "../../src/protocol/wire.ts";
import { BrokerError, ProtocolError } from "../../src/errors.ts";
import { fdGuard, TAG } from "../support/fds.ts";

const DIGEST = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

function ev(name: string, id: number, extra: Partial<WatchEvent> = {}): WatchEvent {
  return {
    kind: "publish",
    id,
    name,
    size: id * 10,
    digest: DIGEST,
    timeNs: BigInt(id),
    missed: 0,
    ...extra,
  };
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await conn.read(out.subarray(off));
    if (r === null) throw new Error(`server: end of stream after ${off} of ${n} bytes`);
    off += r;
  }
  return out;
}

/** Resolves when the peer closes (read returns end of stream). */
async function peerClosed(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64);
  for (;;) {
    const r = await conn.read(buf).catch(() => null);
    if (r === null) return;
  }
}

/**
 * A one-connection server: `serve` gets the accepted connection and the request bytes it read
 * (`requestLength` of them).
 */
async function withServer(
  requestLength: number,
  serve: (conn: Deno.Conn, request: Uint8Array) => Promise<void>,
  client: (connect: () => Promise<Connection>) => Promise<void>,
): Promise<void> {
  // A tagged directory: the guard attributes the sockets bound or connected below it to this module.
  const dir = await Deno.makeTempDir({ prefix: `memfdbus-${TAG}-` });
  const path = `${dir}/bus.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await serve(conn, await readExactly(conn, requestLength));
    } finally {
      conn.close();
    }
  })();
  try {
    await client(() => Connection.connect(path, 10_000));
    await served;
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const ACK = encodeHeader({ cmd: Cmd.WATCH, objectId: 41n, size: 1024n });
const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

Deno.test("a watch sends the WATCH request, yields events in order and closes on break", async () => {
  const guard = fdGuard();
  const request = encodeWatchRequest({ kind: "prefix", prefix: "m/" }, "job");
  let closedByClient = false;
  await withServer(request.length, async (conn, got) => {
    assertEquals(got, request);
    // Events arrive in pieces and back to back: the client must reassemble them.
    const frames = concat(ACK, ...[1, 2, 3].map((i) => encodeWatchEvent(ev(`m/${i}`, i))));
    for (let off = 0; off < frames.length; off += 37) {
      await conn.write(frames.subarray(off, off + 37));
    }
    await peerClosed(conn);
    closedByClient = true;
  }, async (connect) => {
    const watch = await Watch.open(await connect(), { prefix: "m/" }, { job: "job" });
    assertEquals([watch.newestId, watch.queueLength], [41, 1024]);
    const seen: BusEvent[] = [];
    for await (const e of watch) {
      seen.push(e);
      if (seen.length === 2) break;
    }
    assertEquals(seen.map((e) => [e.kind, e.id, e.name, e.size, e.digest, e.timeNs, e.missed]), [
      ["publish", 1, "m/1", 10, DIGEST, 1n, 0],
      ["publish", 2, "m/2", 20, DIGEST, 2n, 0],
    ]);
    ok(watch.closed);
  });
  ok(closedByClient, "the server saw the client close");
  await guard.waitClean();
});

Deno.test("an AbortSignal ends a waiting watch without an error and closes the connection", async () => {
  const guard = fdGuard();
  const request = encodeWatchRequest({ kind: "name", name: "a" }, null);
  const controller = new AbortController();
  await withServer(request.length, async (conn) => {
    await conn.write(concat(ACK, encodeWatchEvent(ev("a", 7, { kind: "drop", missed: 2 }))));
    await peerClosed(conn);
  }, async (connect) => {
    const watch = await Watch.open(await connect(), { name: "a" }, { signal: controller.signal });
    const seen: string[] = [];
    for await (const e of watch) {
      seen.push(`${e.kind} ${e.id} missed ${e.missed}`);
      controller.abort(); // the next read is waiting when the abort lands
    }
    assertEquals(seen, ["drop 7 missed 2"]);
    ok(watch.closed);
  });
  await guard.waitClean();
});

Deno.test("a watch closes with using, and an aborted signal refuses to start", async () => {
  const guard = fdGuard();
  const request = encodeWatchRequest({ kind: "all" }, null);
  await withServer(request.length, async (conn) => {
    await conn.write(ACK);
    await peerClosed(conn);
  }, async (connect) => {
    {
      using watch = await Watch.open(await connect(), {});
      ok(!watch.closed);
    }
    const conn = await connect();
    await rejects(Watch.open(conn, {}, { signal: AbortSignal.abort() }), { name: "AbortError" });
    assertEquals(conn.fd, -1, "the transport was closed");
  });
  await guard.waitClean();
});

Deno.test("a C broker's unknown command becomes a BrokerError with status 3 and the connection is closed", async () => {
  const guard = fdGuard();
  const request = encodeWatchRequest({ kind: "name", name: "a" }, null);
  const text = new TextEncoder().encode("unknown command");
  await withServer(request.length, async (conn) => {
    await conn.write(
      concat(encodeHeader({ cmd: Cmd.WATCH, status: 3, textLen: text.length }), text),
    );
  }, async (connect) => {
    await rejects(Watch.open(await connect(), { name: "a" }), (e: unknown) => {
      ok(e instanceof BrokerError);
      assertEquals([e.status, e.text, e.message], [
        3,
        "unknown command",
        "broker error: unknown command",
      ]);
      return true;
    });
  });
  await guard.waitClean();
});

Deno.test("hostile answers: a bad ack and a corrupt event frame are ProtocolErrors, and nothing leaks", async () => {
  const guard = fdGuard();
  const request = encodeWatchRequest({ kind: "all" }, null);
  await withServer(request.length, async (conn) => {
    await conn.write(encodeHeader({ cmd: Cmd.GET }));
  }, async (connect) => {
    await rejects(Watch.open(await connect(), {}), {
      name: "ProtocolError",
      message: "invalid response from broker",
    });
  });
  await withServer(request.length, async (conn) => {
    const bad = encodeWatchEvent(ev("a", 1));
    bad[4] = 9;
    await conn.write(concat(ACK, bad));
    await peerClosed(conn);
  }, async (connect) => {
    const watch = await Watch.open(await connect(), {});
    await rejects(
      (async () => {
        for await (const _ of watch) { /* nothing arrives */ }
      })(),
      (e: unknown) => {
        ok(e instanceof ProtocolError);
        assertEquals(e.message, "broker sent an invalid watch event: unknown kind 9");
        return true;
      },
    );
    ok(watch.closed);
  });
  await guard.waitClean();
});

Deno.test("the broker closing the stream ends the iteration with the receive error", async () => {
  const request = encodeWatchRequest({ kind: "all" }, null);
  await withServer(request.length, async (conn) => {
    await conn.write(concat(ACK, encodeWatchEvent(ev("a", 1))));
  }, async (connect) => {
    const watch = await Watch.open(await connect(), {});
    const ids: number[] = [];
    await rejects(
      (async () => {
        for await (const e of watch) ids.push(e.id);
      })(),
      { name: "ErrnoError", message: "receive watch event: Connection reset by peer" },
    );
    assertEquals(ids, [1]);
  });
  assertEquals(HEADER_SIZE, 48);
});
