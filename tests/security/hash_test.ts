/**
 * Issue 10, point 2: a sparse sealed memfd costs the broker no memory (hashing reads with pread,
 * holes are never faulted in), and one uid cannot queue digests without bound, nor hold the hash
 * Worker with huge objects (it hashes in turns). Against a real broker process.
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  BrokerProcess,
  digestOf,
  enc,
  fdTable,
  RawClient,
  request,
  tempDir,
} from "../support/harness.ts";
import { putRequest as wirePut } from "../support/wire.ts";
import { waitFor } from "../support/wait.ts";
import { Agent, brokerForOthers, hex, SKIP } from "../support/peer_agent.ts";
import { Client } from "../../src/client.ts";
import { Memfd } from "../../src/sys/memfd.ts";
import { libc } from "../../src/ffi.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Status } from "../../src/errors.ts";

const MiB = 1 << 20;

function sparseSealed(size: number): Memfd {
  const m = Memfd.create("sparse");
  if (libc.symbols.ftruncate(m.fd, BigInt(size)) !== 0) throw new Error("ftruncate");
  m.seal();
  return m;
}

/** Bytes of the memfd that hold pages (st_blocks * 512), through its /proc link. */
function allocated(m: Memfd): number {
  return (Deno.statSync(`/proc/self/fd/${m.fd}`).blocks ?? 0) * 512;
}

function peakRss(pid: number): number {
  const line = Deno.readTextFileSync(`/proc/${pid}/status`).split("\n").find((l) =>
    l.startsWith("VmHWM:")
  );
  return Number(line?.match(/(\d+)/)?.[1] ?? 0) * 1024;
}

function putRequest(size: number, name: string): Uint8Array {
  return request(
    { cmd: Cmd.PUT, size: BigInt(size), nameLen: name.length, textLen: 71 },
    name,
    digestOf(enc("not these bytes")),
  );
}

Deno.test("hashing a 512 MiB sparse memfd allocates none of its pages and leaves the broker's peak RSS flat", async () => {
  using dir = tempDir();
  await using b = await BrokerProcess.start(dir.path);
  using m = sparseSealed(512 * MiB);
  const before = peakRss(b.pid);
  using c = await RawClient.connect(b.socket, 30_000);
  await c.send(putRequest(512 * MiB, "sparse"), [m.fd]);
  const r = await c.reply(60_000);
  assertEquals([r.header.status, new TextDecoder().decode(r.body)], [
    Status.BAD_REQUEST,
    "digest mismatch",
  ]);
  ok(allocated(m) < MiB, `the broker faulted in ${allocated(m)} bytes of holes`);
  const grew = peakRss(b.pid) - before;
  ok(grew < 64 * MiB, `broker peak RSS grew by ${grew} bytes`);
});

Deno.test("one uid gets at most 4 large digests in flight; the fifth is refused with the per-peer limit", async () => {
  using dir = tempDir();
  await using b = await BrokerProcess.start(dir.path);
  const objects = Array.from({ length: 7 }, () => sparseSealed(512 * MiB));
  try {
    const clients = await Promise.all(objects.map(() => RawClient.connect(b.socket, 30_000)));
    for (const [i, c] of clients.entries()) {
      await c.send(putRequest(512 * MiB, `big${i}`), [objects[i]?.fd ?? -1]);
    }
    const replies = await Promise.all(clients.map((c) => c.reply(120_000)));
    for (const c of clients) c.close();
    const texts = replies.map((r) => new TextDecoder().decode(r.body));
    const refused = texts.filter((t) => t.startsWith("too many digests in flight"));
    ok(refused.length >= 1, texts.join("\n"));
    assertEquals(
      refused[0],
      "too many digests in flight for this peer (uid 0 has 4, the per-peer limit): retry later",
    );
    ok(texts.filter((t) => t === "digest mismatch").length >= 4, texts.join("\n"));
  } finally {
    for (const m of objects) m.close();
  }
});

Deno.test({
  name:
    "another uid's four terabyte sparse memfds do not hold the hash Worker: a 2 MiB PUT is verified while they hash",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using b = await brokerForOthers(dir.path, []);
    await using agent = Agent.start(dir.path, b.socket);
    // A terabyte of holes costs no memory, but hashing it whole would take the only Worker for
    // many minutes; the digest sent is wrong, so the attacker need not hash anything itself.
    const TiB = 2 ** 40;
    for (let i = 1; i <= 4; i++) {
      const req = wirePut(`huge${i}`, enc("x"), { size: BigInt(TiB) });
      assertEquals(
        await agent.do({ op: "send", req: hex(req), data: "78", sparse: TiB, read: false }),
        { sent: true, conn: i },
      );
    }
    // The broker holds the four descriptors while it hashes them.
    await waitFor(
      () => [...fdTable(b.pid).values()].filter((l) => l.startsWith("/memfd:agent")).length === 4,
      { what: "the broker holding the four sparse memfds" },
    );
    await using c = new Client({ socket: b.socket, keepAlive: false });
    const bytes = new Uint8Array(2 * MiB).fill(7);
    const { id } = await c.put(bytes, { name: "victim" });
    ok(id > 0n);
    for (let i = 1; i <= 4; i++) {
      assertEquals(
        await agent.do({ op: "peek", conn: i }),
        { ready: false },
        `huge${i} still hashing`,
      );
    }
  },
});
