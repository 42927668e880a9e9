/**
 * A watcher that never reads (issue 12, point 5) on the real broker: while it sleeps, another
 * client's publishes all complete, the broker's memory stays bounded (VmRSS), and when the
 * watcher finally reads it gets every event either one by one or accounted for in a coalesced
 * event's `missed` count or a `missed` event (the documented rule, src/core/watch_queue.ts), then
 * live events again, one by one. Asserts events and bytes, never times.
 */
import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import {
  decodeWatchHead,
  encodeWatchRequest,
  finishWatchEvent,
  WATCH_FRAME_SIZE,
  type WatchEvent,
} from "../../src/protocol/watch.ts";
import { DEFAULT_WATCH_QUEUE } from "../../src/core/watch_queue.ts";
import { BrokerProcess, RawClient, tempDir } from "../support/harness.ts";

/** The broker's resident memory in bytes (VmRSS). */
function vmRss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m?.[1] ?? 0) * 1024;
}

/** Read one event frame from a raw watch connection; `bytes` is the frame's length. */
async function nextEvent(w: RawClient): Promise<WatchEvent & { bytes: number }> {
  const deadline = performance.now() + 30_000;
  const head = decodeWatchHead((await w.conn.recvExact(WATCH_FRAME_SIZE, deadline, "event")).bytes);
  const rest = await w.conn.recvExact(head.nameLen + head.digestLen, deadline, "event body");
  return { ...finishWatchEvent(head, rest.bytes), bytes: WATCH_FRAME_SIZE + rest.bytes.length };
}

/**
 * The most event bytes a sleeping watcher can have waiting once the burst is over: its queue
 * (DEFAULT_WATCH_QUEUE: 1 MiB counting 64 bytes plus the name per event, at most 1024 events;
 * a frame is 48 bytes plus name and digest, so at most 56 bytes more per event), the batch being
 * sent (64 KiB plus one frame), and what the kernel holds for the socket (its send buffer,
 * net.core.wmem_default, taken twice to be generous).
 */
function sleeperBound(): number {
  const wmem = Number(Deno.readTextFileSync("/proc/sys/net/core/wmem_default").trim());
  const frameMax = WATCH_FRAME_SIZE + "slow/0/".length + NAME_BYTES + 71;
  return DEFAULT_WATCH_QUEUE.bytes + 1024 * 56 + 64 * 1024 + frameMax + 2 * wmem;
}

const NAMES = 8;
const NAME_BYTES = 8192;
const PUBLISHES = 1500;
const WATCHERS = 4;

Deno.test("a watcher that never reads costs bounded memory, delays no one, and is told what it missed", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--keep-versions", "1"]);
  const names = Array.from({ length: NAMES }, (_, i) => `slow/${i}/` + "n".repeat(NAME_BYTES));
  const sleepers: RawClient[] = [];
  for (let i = 0; i < WATCHERS; i++) {
    const w = await RawClient.connect(broker.socket);
    await w.send(encodeWatchRequest({ kind: "prefix", prefix: "slow/" }, null));
    assertEquals((await w.reply()).header.status, 0);
    sleepers.push(w);
  }
  await using client = new Client({ socket: broker.socket, jobId: null, timeoutMs: 30_000 });
  const data = (i: number) => new TextEncoder().encode(`version ${i}`);
  // Warm up (the broker's heap reaches its working size), then measure across the burst.
  for (let i = 0; i < 100; i++) await client.put(data(i), { name: names[i % NAMES] ?? "" });
  const rssBefore = vmRss(broker.pid);
  const ids: bigint[] = [];
  for (let i = 100; i < PUBLISHES; i++) {
    ids.push((await client.put(data(i), { name: names[i % NAMES] ?? "" })).id);
  }
  const rssAfter = vmRss(broker.pid);
  // Every publish completed, each with its own id.
  assertEquals(ids.length, PUBLISHES - 100);
  assertEquals(new Set(ids).size, ids.length);
  const growth = rssAfter - rssBefore;
  // A coarse guard (V8's heap moves by tens of MiB with garbage alone); the exact bound is the
  // bytes each sleeper receives, below.
  ok(growth < 128 * 1024 * 1024, `the broker grew by ${growth} bytes during the burst`);

  // Every PUT is a publish, and from a name's second version on a retention release too.
  const total = PUBLISHES + (PUBLISHES - NAMES);
  for (const w of sleepers) {
    let accounted = 0;
    let received = 0;
    let told = 0;
    let bytes = 0;
    const lastId = new Map<string, number>();
    while (accounted < total) {
      const ev = await nextEvent(w);
      received++;
      bytes += ev.bytes;
      if (ev.kind === "missed") {
        accounted += ev.missed;
        told += ev.missed;
        continue;
      }
      accounted += 1 + ev.missed;
      told += ev.missed;
      const before = lastId.get(ev.name) ?? 0;
      if (ev.kind === "publish") {
        ok(ev.id > before, `publishes of a name arrive in order (${ev.id} after ${before})`);
        lastId.set(ev.name, ev.id);
      }
    }
    assertEquals(accounted, total, "every event delivered or counted as missed, none twice");
    ok(told > 0 && received < total, `the sleeper was told it missed ${told} of ${total}`);
    // Unbounded, it would have been sent every event: about 2,900 frames of 8 KiB.
    ok(bytes <= sleeperBound(), `a sleeper received ${bytes} bytes, above ${sleeperBound()}`);
  }
  // Caught up: the next events arrive one by one, nothing missed.
  const last = await client.put(data(PUBLISHES), { name: names[0] ?? "" });
  for (const w of sleepers) {
    const pub = await nextEvent(w);
    assertEquals([pub.kind, pub.id, pub.missed], ["publish", Number(last.id), 0]);
    const rel = await nextEvent(w);
    assertEquals([rel.kind, rel.name, rel.missed], ["release", names[0], 0]);
    w.close();
  }
});
