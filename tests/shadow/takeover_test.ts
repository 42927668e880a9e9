/**
 * Issue 6, point 4: a graceful upgrade. SIGUSR2 (or `memfdbus broker --takeover` started by hand)
 * starts a new broker process that takes the listening socket and every object over from the
 * old one without failing a request. Real broker processes and clients publishing in a loop.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { Cmd, extFlags, Flag, withExt } from "../../src/protocol/wire.ts";
import { closeAll } from "../../src/sys/unix_socket.ts";
import {
  acceptedConnections,
  alive,
  type AuditLine,
  BrokerProcess,
  catchesSignal,
  digestOf,
  RawClient,
  request,
  tempDir,
  unreadBytes,
} from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import {
  brokerPids,
  listenerPids,
  memfdCount,
  payload,
  signal,
  theShadow,
  Tracker,
} from "../support/shadow.ts";

const MiB = 1 << 20;
const LOOP_SIZES = [10, 1000, 70_000, 1.5 * MiB, 333];

interface Acked {
  readonly id: bigint;
  readonly seed: number;
  readonly size: number;
  readonly digest: string;
  readonly name: string;
  /** performance.now() when the PUT was acknowledged. */
  readonly at: number;
}

/** Clients publishing and fetching in a loop; every failure is recorded, none expected. */
class Load {
  readonly acked: Acked[] = [];
  readonly failures: string[] = [];
  readonly #loops: Promise<void>[] = [];
  #stop = false;
  #seed = 1;
  ops = 0;
  /** The longest PUT+GET+GET+LIST round, in ms (the handover shows up here). */
  slowest = 0;

  constructor(socket: string, clients: readonly { keepAlive: boolean }[]) {
    clients.forEach((c, i) => this.#loops.push(this.#loop(socket, i, c.keepAlive)));
  }

  async #loop(socket: string, index: number, keepAlive: boolean): Promise<void> {
    await using c = new Client({ socket, jobId: null, keepAlive });
    const name = `loop-${index}-${keepAlive ? "kept" : "new"}`;
    for (let k = 0; !this.#stop; k++) {
      const seed = this.#seed++;
      const size = LOOP_SIZES[(k + index) % LOOP_SIZES.length] ?? 1;
      const t0 = performance.now();
      try {
        const bytes = payload(seed, size);
        const r = await c.put(bytes, { name });
        this.acked.push({ id: r.id, seed, size, digest: r.digest, name, at: performance.now() });
        {
          using o = await c.get(r.id);
          if (digestOf(o.view) !== r.digest) this.failures.push(`${name}: GET ${r.id} bytes`);
        }
        {
          using n = await c.get({ name });
          if (n.id !== r.id) this.failures.push(`${name}: newest ${n.id}, expected ${r.id}`);
        }
        const listed = (await c.list()).some((e) => e.id === r.id);
        if (!listed) this.failures.push(`${name}: ${r.id} not listed`);
        this.ops++;
        this.slowest = Math.max(this.slowest, performance.now() - t0);
      } catch (e) {
        this.failures.push(`${name}: ${(e as Error).name}: ${(e as Error).message}`);
        // A broker that is gone must fail the test, not spin this loop: pause, and give up
        // after many failures.
        if (this.failures.length > 200) this.#stop = true;
        await letTimePass(10); // a pause between failures, so a dead broker does not spin this
      }
    }
  }

  /** Wait until `n` more operations have completed. */
  async more(n: number, what: string): Promise<void> {
    const target = this.ops + n;
    await waitFor(() => this.ops >= target, { what: what, timeoutMs: 60_000 });
  }

  /** Stop the loops and wait for them. */
  async stop(): Promise<void> {
    this.#stop = true;
    await Promise.all(this.#loops);
  }
}

const CLIENTS = [
  { keepAlive: true },
  { keepAlive: true },
  { keepAlive: false },
  { keepAlive: false },
];

function takeoverRecords(lines: readonly string[]): AuditLine[] {
  return lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as AuditLine)
    .filter((r) => r.op === "takeover");
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * After a takeover under load: no failure, every acknowledged object present with its bytes,
 * ids unique and contiguous, the takeover record's count and size those of the first `count`
 * objects, and ids acknowledged after `handedAt` above them.
 */
async function checkAfterLoad(
  socket: string,
  load: Load,
  rec: AuditLine,
  handedAt: number,
  before: number,
): Promise<void> {
  assertEquals(load.failures, [], "every client operation succeeded");
  const ids = load.acked.map((a) => a.id).sort((a, b) => (a < b ? -1 : 1));
  assertEquals(new Set(ids).size, ids.length, "no id was given twice");
  await using c = new Client({ socket, jobId: null });
  const entries = await c.list();
  assertEquals(entries.map((e) => e.id), ids.map((_, i) => BigInt(i + 1)), "ids 1..n, none lost");
  const byId = new Map(load.acked.map((a) => [a.id, a]));
  for (const e of entries) {
    const a = byId.get(e.id) as Acked;
    assertEquals([e.name, e.size, e.digest], [a.name, a.size, a.digest]);
    using o = await c.get(e.id, { verify: true });
    assertEquals(o.digest, a.digest);
  }
  assertEquals([rec.result, rec.error], ["ok", null]);
  const count = rec.count ?? -1;
  ok(count >= before && count <= entries.length, `takeover count ${count}, ${before} before`);
  assertEquals(
    rec.size,
    entries.filter((e) => e.id <= BigInt(count)).reduce((n, e) => n + e.size, 0),
    "the takeover record's size is that of the objects handed over",
  );
  const later = load.acked.filter((a) => a.at > handedAt);
  ok(later.length > 0, "operations completed after the handover");
  for (const a of later) ok(a.id > BigInt(count), `id ${a.id} does not continue after ${count}`);
  console.log(
    `${load.ops} client rounds, ${count} objects handed over, ${later.length} puts after; ` +
      `slowest round ${load.slowest.toFixed(0)} ms`,
  );
}

/**
 * Wait until a broker has its SIGUSR2 and SIGTERM handlers: until then either signal kills it
 * (see "a SIGUSR2 sent right after a broker starts serving").
 */
async function settle(b: BrokerProcess): Promise<void> {
  await waitFor(() => catchesSignal(b.pid, "SIGUSR2") && catchesSignal(b.pid, "SIGTERM"), {
    what: `broker ${b.pid}'s SIGUSR2 and SIGTERM handlers`,
  });
}

/** The one live broker process on `socket` other than `not`. */
async function successor(socket: string, not: number): Promise<number> {
  const pids = await waitFor(
    () => {
      const p = brokerPids(socket).filter((pid) => pid !== not && alive(pid));
      return p.length > 0 ? p : null;
    },
    { what: "the new broker process", timeoutMs: 15_000 },
  );
  assertEquals(pids.length, 1, `one new broker: ${pids}`);
  return pids[0] ?? 0;
}

Deno.test(
  "SIGUSR2 hands socket and objects to a new broker process while keep-alive and new-connection clients publish and fetch, without a failed request",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const old = await t.broker(dir.path, ["--socket", socket]);
    await settle(old);
    const load = new Load(socket, CLIENTS);
    try {
      await load.more(20, "20 operations before the SIGUSR2");
      const before = load.acked.length;
      signal(old.pid, "SIGUSR2");
      const status = await old.child.status;
      const handedAt = performance.now();
      assertEquals([status.code, status.signal], [0, null], "the old broker exits 0");
      await waitFor(() => takeoverRecords(old.lines).length > 0, {
        what: "the takeover record",
        timeoutMs: 15_000,
      });
      const newPid = await successor(socket, old.pid);
      assertEquals(listenerPids(socket), [newPid], "the new broker holds the listening socket");
      await load.more(20, "20 operations after the takeover");
      await load.stop();
      const recs = takeoverRecords(old.lines);
      assertEquals(recs.length, 1);
      await checkAfterLoad(socket, load, recs[0] as AuditLine, handedAt, before);

      signal(newPid, "SIGTERM");
      await waitFor(() => !alive(newPid), { what: "the new broker to stop", timeoutMs: 15_000 });
      ok(!exists(socket), "SIGTERM of the new broker unlinked the socket");
      // The inherited stdout closes with it: no third process holds it.
      assertEquals((await old.exited()).code, 0);
    } finally {
      await load.stop();
    }
  },
);

Deno.test(
  "memfdbus broker --takeover started by hand takes over from the running broker while clients publish and fetch, without a failed request",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const old = await t.broker(dir.path, ["--socket", socket]);
    await settle(old);
    const load = new Load(socket, CLIENTS);
    try {
      await load.more(20, "20 operations before the takeover");
      const before = load.acked.length;
      const nb = await t.broker(dir.path, ["--socket", socket, "--takeover"]);
      const status = await old.exited();
      const handedAt = performance.now();
      assertEquals([status.code, status.signal], [0, null], "the old broker exits 0");
      // The new broker's own stdout starts with its takeover record; the old one logged the
      // request with the new broker's pid.
      const mine = takeoverRecords(nb.lines);
      assertEquals(mine.length, 1);
      ok(nb.lines[0]?.startsWith("{"), `first line of the new broker: ${nb.lines[0]}`);
      const theirs = takeoverRecords(old.lines);
      assertEquals(
        theirs.map((r) => [r.result, r.object_id]),
        [["ok", nb.pid]],
        "the old broker recorded the request and who made it",
      );
      assertEquals(listenerPids(socket), [nb.pid]);
      await load.more(20, "20 operations after the takeover");
      await load.stop();
      await checkAfterLoad(socket, load, mine[0] as AuditLine, handedAt, before);

      const st = await nb.stop("SIGTERM");
      assertEquals(st.code, 0);
      ok(!exists(socket), "SIGTERM of the new broker unlinked the socket");
    } finally {
      await load.stop();
    }
  },
);

interface Published {
  readonly id: bigint;
  readonly seed: number;
  readonly size: number;
  readonly digest: string;
  readonly owner: string | null;
}

/** Publish one object of `size` bytes; returns what to check it against later. */
async function putOne(
  socket: string,
  seed: number,
  size: number,
  job: string | null,
): Promise<Published> {
  await using c = new Client({ socket, jobId: job });
  const r = await c.put(payload(seed, size), { name: `o${seed}` });
  return { id: r.id, seed, size, digest: r.digest, owner: job };
}

Deno.test(
  "with --shadow, brokers taking over (SIGUSR2, then --takeover) keep the shadow in step: a kill -9 of the last one recovers every object",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const b1 = await t.broker(dir.path, ["--socket", socket, "--shadow", shadowPath]);
    const objs: Published[] = [];
    for (const [i, size] of [1, 5000, 2 * MiB + 7, 64, 100_000, 3].entries()) {
      objs.push(await putOne(socket, i + 1, size, i % 2 === 0 ? "alpha" : null));
    }
    const shadowPid = await theShadow(shadowPath);
    assertEquals(memfdCount(shadowPid), 6);
    await settle(b1);

    // SIGUSR2: the successor takes over and seeds the same shadow.
    signal(b1.pid, "SIGUSR2");
    assertEquals((await b1.child.status).code, 0);
    await waitFor(() => takeoverRecords(b1.lines).length > 0, {
      what: "the takeover record",
      timeoutMs: 15_000,
    });
    assertEquals(takeoverRecords(b1.lines).map((r) => [r.result, r.count]), [["ok", 6]]);
    const b2 = await successor(socket, b1.pid);
    objs.push(await putOne(socket, 7, 4096, "beta"));
    assertEquals(objs.map((o) => o.id), [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    await waitFor(() => memfdCount(shadowPid) === 7, { what: "the shadow to hold 7 objects" });
    assertEquals(await theShadow(shadowPath), shadowPid, "the same shadow");

    // --takeover by hand, also with the shadow.
    const b3 = await t.broker(dir.path, ["--socket", socket, "--shadow", shadowPath, "--takeover"]);
    assertEquals(takeoverRecords(b3.lines).map((r) => [r.result, r.count]), [["ok", 7]]);
    await waitFor(() => !alive(b2), { what: "the second broker to exit", timeoutMs: 15_000 });
    objs.push(await putOne(socket, 8, 10, null));
    assertEquals(objs[7]?.id, 8n);
    await waitFor(() => memfdCount(shadowPid) === 8, { what: "the shadow to hold 8 objects" });

    // Crash the last broker: everything, from all three, comes back from the shadow.
    signal(b3.pid, "SIGKILL");
    await b3.child.status;
    const b4 = await t.broker(dir.path, ["--socket", socket, "--shadow", shadowPath]);
    const recs = await waitFor(
      () => {
        const r = b4.audit().filter((x) => x.op === "recover");
        return r.length > 0 ? r : null;
      },
      { what: "the recover record", timeoutMs: 15_000 },
    );
    assertEquals(recs.map((r) => [r.result, r.count]), [["ok", 8]]);
    assertEquals(await theShadow(shadowPath), shadowPid);
    await using c = new Client({ socket, jobId: null });
    const entries = await c.list();
    assertEquals(
      entries.map((e) => [e.id, e.size, e.digest, e.owner]),
      objs.map((o) => [o.id, o.size, o.digest, o.owner]),
    );
    for (const o of objs) {
      using got = await c.get(o.id);
      assertEquals(digestOf(got.view), digestOf(payload(o.seed, o.size)));
    }
    assertEquals((await putOne(socket, 9, 1, null)).id, 9n);
    assertEquals(memfdCount(b4.pid), 9);
  },
);

/**
 * Connect, let the broker accept, start the handover with `begin`, then send a LIST during it:
 * the answer (or the error) the client gets.
 */
async function requestDuringHandover(
  old: BrokerProcess,
  begin: () => Promise<unknown>,
): Promise<string> {
  await settle(old);
  using raw = await RawClient.connect(old.socket);
  await waitFor(() => old.connections() === 1, { what: "the broker to accept" });
  const started = begin();
  // The handover has begun once the successor process exists.
  await waitFor(() => brokerPids(old.socket).some((p) => p !== old.pid && alive(p)), {
    what: "the successor process to start",
  });
  let outcome: string;
  try {
    await raw.send(request({ cmd: Cmd.LIST }));
    const reply = await raw.reply(20_000);
    outcome = `status ${reply.header.status}`;
  } catch (e) {
    outcome = `${(e as Error).name}: ${(e as Error).message}`;
  }
  await started;
  return outcome;
}

Deno.test(
  "a client that connected before a SIGUSR2 and sends its request during the handover is answered",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const old = await t.broker(dir.path, ["--socket", socket]);
    const outcome = await requestDuringHandover(old, async () => {
      signal(old.pid, "SIGUSR2");
      return await old.child.status;
    });
    assertEquals(outcome, "status 0", "the request was dropped by the handover");
  },
);

Deno.test(
  "a client that connected before a --takeover and sends its request during the handover is answered",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const old = await t.broker(dir.path, ["--socket", socket]);
    const outcome = await requestDuringHandover(
      old,
      () => t.broker(dir.path, ["--socket", socket, "--takeover"]),
    );
    assertEquals(outcome, "status 0", "the request was dropped by the handover");
  },
);

Deno.test(
  "a GET waiting for a name in the old broker is released at a SIGUSR2 as not found without the wait bit, and asked again, is answered by the new one when the name is published",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const old = await t.broker(dir.path, ["--socket", socket]);
    await settle(old);
    // A raw GET --wait (what Client.get sends): once its bytes are sent and the broker has read
    // them all, it is parked.
    const getWait = request(
      { cmd: Cmd.GET, nameLen: 5, size: 30_000n, reserved: withExt(Flag.WAIT) },
      "later",
    );
    using waiter = await RawClient.connect(socket);
    await waiter.send(getWait);
    await waitFor(() => old.connections() === 1 && unreadBytes(socket) === 0, {
      what: "the GET to be parked in the old broker",
      everyMs: 50,
    });
    assertEquals(old.audit(), [], "nothing answered yet");
    signal(old.pid, "SIGUSR2");
    // The old broker answers as a broker that does not wait (Client.get then asks again).
    const released = await waiter.reply(30_000);
    closeAll(released.fds);
    assertEquals(
      [released.header.status, extFlags(released.header.reserved) & Flag.WAIT, released.fds.length],
      [2, 0, 0],
    );
    assertEquals((await old.child.status).code, 0);
    const next = await successor(socket, old.pid);
    using again = await RawClient.connect(socket);
    await again.send(getWait);
    await waitFor(() => acceptedConnections(next, socket) === 1 && unreadBytes(socket) === 0, {
      what: "the repeated GET to be parked in the new broker",
      everyMs: 50,
    });
    await using c = new Client({ socket, jobId: null });
    const r = await c.put(payload(1, 100), { name: "later" });
    const got = await again.reply(30_000);
    closeAll(got.fds);
    assertEquals(
      [got.header.status, got.header.objectId, new TextDecoder().decode(got.body), got.fds.length],
      [0, r.id, `later${r.digest}`, 1],
    );
  },
);

Deno.test(
  "a SIGUSR2 whose successor cannot start (its config file broke meanwhile) leaves the old broker serving, with an error record",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const config = `${dir.path}/memfdbus.jsonc`;
    Deno.writeTextFileSync(config, `{ "maxObjects": 10 }\n`);
    const b = await BrokerProcess.start(dir.path, ["--socket", socket, "--config", config]);
    t.brokers.push(b);
    t.sockets.add(socket);
    const first = await putOne(socket, 1, 10, null);
    await settle(b);
    // An upgrade with a broken configuration: the new process exits before taking over.
    Deno.writeTextFileSync(config, `{ "maxObjects": 0 }\n`);
    signal(b.pid, "SIGUSR2");
    await waitFor(() => takeoverRecords(b.lines).length > 0 || !alive(b.pid), {
      what: "the takeover record or the broker's exit",
      timeoutMs: 15_000,
    });
    ok(alive(b.pid), `the broker died: ${b.stderr}`);
    const [rec] = takeoverRecords(b.lines);
    assertEquals(rec?.result, "error");
    ok(String(rec?.error).startsWith("handover failed: "), String(rec?.error));
    ok(b.stderr.includes("maxObjects"), `the successor said why: ${b.stderr}`);
    const second = await putOne(socket, 2, 10, null);
    assertEquals([first.id, second.id], [1n, 2n]);
    assertEquals(listenerPids(socket), [b.pid]);
    const st = await b.stop("SIGTERM");
    assertEquals(st.code, 0);
    ok(!exists(socket));
  },
);

Deno.test(
  "a SIGUSR2 sent right after a broker starts serving hands over instead of killing the broker",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    // The window is a few milliseconds wide: try a few times, as an operator's script would.
    for (let attempt = 0; attempt < 4; attempt++) {
      const socket = `${dir.path}/bus-${attempt}.sock`;
      const old = await t.broker(dir.path, ["--socket", socket]);
      const obj = await putOne(socket, attempt, 100, null);
      signal(old.pid, "SIGUSR2");
      const status = await old.child.status;
      assertEquals(
        [status.code, status.signal],
        [0, null],
        `attempt ${attempt}: the broker died of the SIGUSR2 (its object ${obj.id} with it)`,
      );
      await successor(socket, old.pid);
      await using c = new Client({ socket, jobId: null });
      assertEquals((await c.list()).map((e) => e.id), [obj.id]);
    }
  },
);

Deno.test(
  "a second SIGUSR2 sent as soon as the new broker has logged its takeover hands over again and loses nothing",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    for (let attempt = 0; attempt < 3; attempt++) {
      const socket = `${dir.path}/bus-${attempt}.sock`;
      const old = await t.broker(dir.path, ["--socket", socket]);
      await settle(old);
      const objs = [
        await putOne(socket, 1, 100, null),
        await putOne(socket, 2, 2 * MiB, null),
      ];
      signal(old.pid, "SIGUSR2");
      await waitFor(() => takeoverRecords(old.lines).length > 0, {
        what: "the first takeover",
        timeoutMs: 15_000,
      });
      const second = await successor(socket, old.pid);
      signal(second, "SIGUSR2"); // an operator upgrading twice in a row
      assertEquals((await old.child.status).code, 0);
      await waitFor(() => !alive(second), { what: "the second broker to go", timeoutMs: 15_000 });
      const third = brokerPids(socket).filter(alive);
      assertEquals(
        third.length,
        1,
        `attempt ${attempt}: no broker serves the socket after the second SIGUSR2 (` +
          `${takeoverRecords(old.lines).length} takeover records): the objects are gone`,
      );
      await waitFor(() => takeoverRecords(old.lines).length > 1, { what: "the second record" });
      assertEquals(takeoverRecords(old.lines).map((r) => r.count), [2, 2]);
      await using c = new Client({ socket, jobId: null });
      assertEquals(
        (await c.list()).map((e) => [e.id, e.digest]),
        objs.map((o) => [o.id, o.digest]),
      );
    }
  },
);
