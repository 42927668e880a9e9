/**
 * Slow, idle and surplus clients: the request timeout ends connections that never complete a
 * request while everyone else is served at normal speed (defects D3, D4); a client over
 * --max-clients reads the broker's refusal rather than a broken pipe (D1, D2).
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { Connection } from "../../src/client/connection.ts";
import { BrokerError } from "../../src/errors.ts";
import { libc } from "../../src/ffi.ts";
import { SHUT_WR } from "../../src/sys/linux.ts";
import { Cmd, DIGEST_LEN, encodeHeader, Flag, Text, withExt } from "../../src/protocol/wire.ts";
import { cli, enc, sealedMemfd, tempDir } from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import {
  type Exchange,
  exchange,
  percentile,
  readOneReply,
  startBroker,
  statusText,
} from "../support/faults.ts";

/** Round trips on fresh connections (PUT, GET, LIST, DROP); returns each one's milliseconds. */
async function roundTrips(socket: string, n: number): Promise<number[]> {
  const ms: number[] = [];
  await using c = new Client({ socket, jobId: null, keepAlive: false, timeoutMs: 20_000 });
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    const { id } = await c.put(enc(`probe ${i}`), { name: "probe" });
    ms.push(performance.now() - t);
    t = performance.now();
    (await c.get(id)).close();
    ms.push(performance.now() - t);
    t = performance.now();
    await c.list();
    ms.push(performance.now() - t);
    t = performance.now();
    await c.drop(id);
    ms.push(performance.now() - t);
  }
  return ms;
}

/** A connection that sends `bytes` (with `fds`) and then stays silent; resolves when it ends. */
async function silentClient(
  socket: string,
  bytes: Uint8Array,
  fds: number[] = [],
): Promise<{ ms: number; end: Exchange }> {
  const c = await Connection.connect(socket, 5000);
  const t0 = performance.now();
  try {
    if (bytes.length > 0) await c.send(bytes, t0 + 5000, "send", fds);
    const end = await readOneReply(c, t0 + 20_000, t0);
    return { ms: performance.now() - t0, end };
  } finally {
    c.close();
  }
}

/** A connection that trickles a header one byte every `everyMs`; resolves when the broker ends it. */
async function tricklingClient(socket: string, everyMs: number): Promise<number> {
  const c = await Connection.connect(socket, 5000);
  const t0 = performance.now();
  const header = encodeHeader({ cmd: Cmd.LIST });
  try {
    for (let i = 0; i < header.length; i++) {
      try {
        await c.send(header.subarray(i, i + 1), performance.now() + 5000, "send");
      } catch {
        break; // The broker closed the connection.
      }
      await letTimePass(everyMs); // the trickle's pace: time passing is the test
    }
    const end = await readOneReply(c, t0 + 20_000, t0);
    assertEquals(end.kind, "closed");
    return performance.now() - t0;
  } finally {
    c.close();
  }
}

Deno.test("--request-timeout-ms ends connections that never complete a request while other clients are served at normal speed", async () => {
  const TIMEOUT = 3000;
  using dir = tempDir();
  await using broker = await startBroker(dir.path, [
    "--request-timeout-ms",
    String(TIMEOUT),
    "--idle-timeout-ms",
    "1000",
  ]);
  await roundTrips(broker.socket, 5); // warm-up
  const quiet = await roundTrips(broker.socket, 25);

  const memfd = sealedMemfd(enc("x"));
  const slow = [
    // Connected, nothing sent.
    silentClient(broker.socket, new Uint8Array(0)),
    // Four bytes of a header (the C broker stalled on exactly this, D4).
    silentClient(broker.socket, encodeHeader({ cmd: Cmd.LIST }).subarray(0, 4)),
    // A GET whose 10-byte name stops after 3 bytes.
    silentClient(
      broker.socket,
      new Uint8Array([...encodeHeader({ cmd: Cmd.GET, nameLen: 10 }), 0x61, 0x62, 0x63]),
    ),
    // A PUT with its memfd whose name never arrives.
    silentClient(
      broker.socket,
      encodeHeader({ cmd: Cmd.PUT, size: 1n, nameLen: 8, textLen: DIGEST_LEN }),
      [memfd.fd],
    ),
  ];
  const trickle = tricklingClient(broker.socket, 150);
  await waitFor(() => broker.connections() === 5, {
    what: "the broker to accept the 5 slow clients",
  });
  memfd.close();
  const loaded = await roundTrips(broker.socket, 25);
  const ended = await Promise.all(slow);
  const trickleMs = await trickle;

  // Served meanwhile: no request waited for the slow ones (they end only after TIMEOUT ms).
  const p50Quiet = percentile(quiet, 0.5);
  const p50Loaded = percentile(loaded, 0.5);
  ok(
    p50Loaded <= Math.max(10 * p50Quiet, p50Quiet + 250),
    `median ${p50Loaded.toFixed(1)} ms with slow clients vs ${p50Quiet.toFixed(1)} ms without`,
  );
  ok(
    Math.max(...loaded) < TIMEOUT * 0.8,
    `slowest request took ${Math.max(...loaded).toFixed(0)} ms`,
  );

  // Each slow connection ended at the timeout: without a reply before a whole header, with the
  // read-failure reply once the body was missing.
  const summary = ended.map((e) => statusText(e.end));
  assertEquals(summary, ["closed", "closed", [3, Text.readName], [3, Text.readName]]);
  for (const e of [...ended.map((x) => x.ms), trickleMs]) {
    ok(e >= TIMEOUT * 0.9 && e < TIMEOUT + 15_000, `a slow client ended after ${e.toFixed(0)} ms`);
  }
  const records = await waitFor(() => {
    const r = broker.audit().filter((a) => a.error === Text.readName);
    return r.length >= 2 ? r : null;
  }, { what: "2 `failed to read object name` audit records" });
  assertEquals(records.map((r) => r.op).sort(), ["get", "put"]);
  assertEquals((await broker.stop()).code, 0);
});

Deno.test("--idle-timeout-ms closes an idle kept-alive connection and the client reconnects", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--idle-timeout-ms", "500"]);
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: true });
  await c.list();
  await waitFor(() => broker.connections() === 0, { what: "the idle connection to close" });
  assertEquals(await c.list(), []);
  assertEquals((await broker.stop()).code, 0);
});

Deno.test("a client over --max-clients reads `broker client quota exceeded`, never a broken pipe, 50 times in a row", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, [
    "--max-clients",
    "2",
    "--request-timeout-ms",
    "60000",
  ]);
  // Two silent connections hold both slots.
  const holders = [
    await Connection.connect(broker.socket, 5000),
    await Connection.connect(broker.socket, 5000),
  ];
  try {
    await waitFor(() => broker.connections() === 2, { what: "the broker to accept both holders" });
    const longName = "n".repeat(60_000);
    const seen: string[] = [];
    await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
    for (let i = 0; i < 50; i++) {
      let p: Promise<unknown>;
      switch (i % 4) {
        case 0:
          p = c.list();
          break;
        case 1:
          p = c.put(enc(`rep ${i}`), { name: longName });
          break;
        case 2:
          p = c.get({ name: longName });
          break;
        default:
          p = exchange(
            broker.socket,
            new Uint8Array([
              ...encodeHeader({ cmd: Cmd.GET, nameLen: 65536 }),
              ...new Uint8Array(65536),
            ]),
          ).then((x) => {
            const st = statusText(x);
            throw st === "closed" ? new Error("closed") : new BrokerError(st[0], st[1]);
          });
      }
      try {
        await p;
        seen.push(`rep ${i}: succeeded`);
      } catch (e) {
        seen.push(
          e instanceof BrokerError ? `${e.status} ${e.text}` : `rep ${i}: ${(e as Error).message}`,
        );
      }
    }
    assertEquals(seen, Array(50).fill(`1 ${Text.clientQuota}`));

    // The CLI says so too (C text, exit 1).
    for (const args of [["list"], ["get", "--name", longName.slice(0, 2000), "-"]]) {
      const r = await cli([...args, "--socket", broker.socket]);
      assertEquals([r.code, r.stderr], [1, `broker error: ${Text.clientQuota}\n`]);
    }
    const records = await waitFor(() => {
      const r = broker.audit().filter((a) => a.error === Text.clientQuota);
      return r.length >= 52 ? r : null;
    }, { what: "52 client-quota audit records" });
    for (const r of records) {
      assertEquals([r.op, r.result, r.object_id], ["unknown", "error", null]);
    }
  } finally {
    for (const h of holders) h.close();
  }
  // With the slots free again, requests go through.
  await waitFor(() => broker.connections() === 0, { what: "the broker to free both slots" });
  await using c2 = new Client({ socket: broker.socket, jobId: null });
  assertEquals(await c2.list(), []);
  assertEquals((await broker.stop()).code, 0);
});

// PROTOCOL.md 4: "One record for every request whose header was received (valid or not)". A GET
// with the WAIT extension is parked until its name appears; if its client half-closes (or
// closes) meanwhile, the broker drops the request without any audit record.
for (const how of ["half-closes", "closes"] as const) {
  Deno.test(`a parked GET --wait whose client ${how} still leaves its audit record`, async () => {
    using dir = tempDir();
    await using broker = await startBroker(dir.path);
    const name = "never-published";
    const c = await Connection.connect(broker.socket, 5000);
    await c.send(
      new Uint8Array([
        ...encodeHeader({
          cmd: Cmd.GET,
          nameLen: name.length,
          size: 1500n,
          reserved: withExt(Flag.WAIT),
        }),
        ...enc(name),
      ]),
      performance.now() + 5000,
      "send",
    );
    await waitFor(() => broker.connections() === 1, { what: "the broker to accept the GET" });
    if (how === "half-closes") libc.symbols.shutdown(c.fd, SHUT_WR);
    else c.close();
    // The wait (1.5 s) runs out in any case; then the record is written.
    const records = await waitFor(() => {
      const r = broker.audit().filter((a) => a.name === name);
      return r.length > 0 ? r : null;
    }, { what: "the parked GET's audit record" });
    c.close();
    assertEquals(records.map((r) => [r.op, r.selector]), [["get", "name"]]);
    assertEquals((await broker.stop()).code, 0);
  });
}

Deno.test("a parked GET --wait that runs out of time is answered `object not found` and audited", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path);
  const name = "never-published";
  const t0 = performance.now();
  const x = await exchange(
    broker.socket,
    new Uint8Array([
      ...encodeHeader({
        cmd: Cmd.GET,
        nameLen: name.length,
        size: 500n,
        reserved: withExt(Flag.WAIT),
      }),
      ...enc(name),
    ]),
  );
  ok(performance.now() - t0 >= 450, "the request was parked");
  assertEquals(statusText(x), [2, Text.notFound]);
  const records = await waitFor(() => {
    const r = broker.audit().filter((a) => a.name === name);
    return r.length > 0 ? r : null;
  }, { what: "the parked GET's audit record" });
  assertEquals(records.map((r) => [r.op, r.result, r.selector]), [["get", "not_found", "name"]]);
  assertEquals((await broker.stop()).code, 0);
});
