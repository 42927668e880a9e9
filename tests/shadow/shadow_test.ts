/**
 * Issue 6, points 1-3: `broker --shadow PATH` mirrors every committed PUT and DROP to a shadow
 * process and recovers from it after a crash. Real broker, shadow and client processes; the
 * broker is killed with SIGKILL in the middle of a stream of requests.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client, type ListEntry } from "../../src/client.ts";
import { BrokerError, Status } from "../../src/errors.ts";
import { FrameConn } from "../../src/shadow/frame_conn.ts";
import { ShadowLink } from "../../src/shadow/link.ts";
import { Frame, toWire } from "../../src/protocol/shadow_frames.ts";
import { connectUnix, sockaddrUn, unixSocket } from "../../src/sys/unix_socket.ts";
import type { StoredObject } from "../../src/core/store.ts";
import {
  alive,
  type AuditLine,
  type BrokerProcess,
  CLI,
  cli,
  CLI_PERMS,
  digestOf,
  enc,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import {
  killAndWait,
  memfdCount,
  payload,
  settledFdCount,
  signal,
  theShadow,
  Tracker,
} from "../support/shadow.ts";

const MiB = 1 << 20;

/** What a publisher tried to publish, and what the broker acknowledged. */
interface Attempt {
  readonly seed: number;
  readonly size: number;
  readonly digest: string;
  readonly name: string;
  readonly owner: string | null;
  readonly allowed: string | null;
  /** Set once the PUT was acknowledged. */
  id: bigint | null;
  /** From a STAT right after the PUT, when it got that far. */
  createdNs: bigint | null;
}

/** Protocol v1 visibility, written out independently of src/policy.ts. */
function canSee(o: { owner: string | null; allowed: string | null }, job: string | null): boolean {
  return job === null || o.owner === null || o.owner === job || o.allowed === job;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function recoverRecords(b: BrokerProcess): AuditLine[] {
  return b.audit().filter((r) => r.op === "recover");
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    const v = await p;
    if (v !== null && typeof v === "object" && "close" in v) (v as { close(): void }).close();
    return 0;
  } catch (e) {
    if (e instanceof BrokerError) return e.status;
    throw e;
  }
}

/** SIGKILL the broker process and wait for it (its pipes stay open: the shadow holds them). */
async function kill9(b: BrokerProcess): Promise<void> {
  signal(b.pid, "SIGKILL");
  const st = await b.child.status;
  assertEquals(st.signal, "SIGKILL");
}

/** Start a broker with a shadow and wait for its recover record. */
async function shadowed(
  t: Tracker,
  dir: string,
  socket: string,
  shadow: string,
): Promise<{ b: BrokerProcess; rec: AuditLine }> {
  const b = await t.broker(dir, ["--socket", socket, "--shadow", shadow]);
  await waitFor(() => recoverRecords(b).length > 0, {
    what: "the recover record",
    timeoutMs: 15_000,
  });
  const rec = recoverRecords(b)[0] as AuditLine;
  return { b, rec };
}

class Mismatch extends Error {}

const NAMES = ["shared/config", "model/wéights", "log"];
const SIZES = [1, 100, 4096, 65_537, MiB + 5, 17, 3 * MiB + 1, 2048];
const JOBS = [null, "alpha", "beta", "gamma"];

interface Publisher {
  readonly index: number;
  readonly job: string | null;
  readonly allow: string | null;
  readonly keepAlive: boolean;
}

const PUBLISHERS: readonly Publisher[] = [
  { index: 0, job: "alpha", allow: "beta", keepAlive: true },
  { index: 1, job: "beta", allow: null, keepAlive: false },
  { index: 2, job: null, allow: null, keepAlive: true },
];

interface LoopEnd {
  readonly error: unknown;
  readonly at: number;
  readonly gets: number;
}

/** PUT, STAT and GET in a loop until a request fails (the broker was killed). */
async function publishLoop(
  socket: string,
  pub: Publisher,
  attempts: Attempt[],
  nextSeed: () => number,
): Promise<LoopEnd> {
  await using client = new Client({ socket, jobId: pub.job, keepAlive: pub.keepAlive });
  const mine: Attempt[] = [];
  let gets = 0;
  try {
    for (let k = 0;; k++) {
      const seed = nextSeed();
      const size = SIZES[(k + 3 * pub.index) % SIZES.length] ?? 1;
      const name = NAMES[(k + pub.index) % NAMES.length] ?? "x";
      const bytes = payload(seed, size);
      const a: Attempt = {
        seed,
        size,
        digest: digestOf(bytes),
        name,
        owner: pub.job,
        allowed: pub.allow,
        id: null,
        createdNs: null,
      };
      attempts.push(a);
      const r = await client.put(bytes, {
        name,
        ...(pub.allow === null ? {} : { allowJob: pub.allow }),
      });
      a.id = r.id;
      if (r.digest !== a.digest) throw new Mismatch(`put digest ${r.digest} != ${a.digest}`);
      mine.push(a);
      const st = await client.stat(r.id);
      a.createdNs = st.createdNs;
      const old = mine[Math.floor(Math.random() * mine.length)] as Attempt;
      {
        using o = await client.get(old.id ?? 0n);
        gets++;
        if (o.digest !== old.digest || digestOf(o.view) !== old.digest) {
          throw new Mismatch(`GET ${old.id} returned other bytes`);
        }
      }
      try {
        using n = await client.get({ name });
        gets++;
        if (n.name !== name || !(await n.verify())) {
          throw new Mismatch(`GET by name ${name} is wrong`);
        }
      } catch (e) {
        // The newest version may belong to a job this one may not read.
        if (!(e instanceof BrokerError && e.status === Status.FORBIDDEN)) throw e;
      }
    }
  } catch (e) {
    return { error: e, at: performance.now(), gets };
  }
}

Deno.test(
  "every put acknowledged before a kill -9 in the middle of a stream of puts and gets is recovered with the same id, bytes, digest, owner and policy, and the descriptor counts match the objects",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const first = await shadowed(t, dir.path, socket, shadowPath);
    assertEquals([first.rec.result, first.rec.count], ["not_found", 0]);
    const shadowPid = await theShadow(shadowPath);
    // The shadow's fixed set: its descriptors while it holds nothing (the broker's link open).
    const shadowFixed = await settledFdCount(shadowPid);
    assertEquals(memfdCount(shadowPid), 0);

    const attempts: Attempt[] = [];
    let seed = 1000;
    const loops = PUBLISHERS.map((p) => publishLoop(socket, p, attempts, () => seed++));
    const acked = (): Attempt[] => attempts.filter((a) => a.id !== null);
    await waitFor(
      () => acked().length >= 15 && acked().some((a) => a.size > MiB),
      { what: "15 acknowledged puts, one of them large", timeoutMs: 45_000 },
    );
    // A random point in the stream, on purpose.
    const delay = Math.floor(Math.random() * 300);
    await letTimePass(delay);
    const killedAt = performance.now();
    await kill9(first.b);
    const ends = await Promise.all(loops);
    for (const end of ends) {
      ok(!(end.error instanceof Mismatch), `wrong data before the kill: ${end.error}`);
      ok(end.at >= killedAt, `a request failed before the kill: ${end.error}`);
    }
    ok(ends.every((e) => e.gets > 0), "every publisher did GETs");
    const ackedBefore = acked();
    console.log(
      `kill -9 after ${delay} ms extra: ${ackedBefore.length} acknowledged puts of ` +
        `${attempts.length} attempted`,
    );

    // The shadow outlives the broker; the restarted broker recovers from it.
    ok(alive(shadowPid), "the shadow survived the broker");
    const second = await shadowed(t, dir.path, socket, shadowPath);
    const b = second.b;
    assertEquals(await theShadow(shadowPath), shadowPid, "the same shadow serves the restart");
    await using client = new Client({ socket, jobId: null });
    const entries = await client.list();
    const byId = new Map<bigint, ListEntry>(entries.map((e) => [e.id, e]));
    assertEquals(second.rec.result, "ok");
    assertEquals(second.rec.error, null);
    assertEquals(second.rec.count, entries.length);
    assertEquals(second.rec.size, entries.reduce((n, e) => n + e.size, 0));

    // Every acknowledged object: same id, name, size, digest, owner, allowed, creation time.
    for (const a of ackedBefore) {
      const e = byId.get(a.id ?? 0n);
      ok(e !== undefined, `acknowledged object ${a.id} (${a.name}, ${a.size} B) was lost`);
      assertEquals(
        [e.name, e.size, e.digest, e.owner, e.allowed],
        [a.name, a.size, a.digest, a.owner, a.allowed],
      );
      if (a.createdNs !== null) assertEquals((await client.stat(e.id)).createdNs, a.createdNs);
    }
    // The metadata charges are rebuilt from the recovered objects: names, job ids, overhead.
    const bytes = (s: string | null) => enc(s ?? "").length;
    assertEquals(
      (await client.usage()).broker.metadataBytes,
      entries.reduce((n, e) => n + bytes(e.name) + bytes(e.owner) + bytes(e.allowed) + 768, 0),
    );
    // Anything else is a put that committed but whose reply never arrived: complete and correct.
    const ackedIds = new Set(ackedBefore.map((a) => a.id));
    const extras = entries.filter((e) => !ackedIds.has(e.id));
    ok(extras.length <= PUBLISHERS.length, `at most one put in flight per client: ${extras}`);
    const attemptOf = new Map<bigint, Attempt>(ackedBefore.map((a) => [a.id ?? 0n, a]));
    for (const e of extras) {
      const a = attempts.find((x) =>
        x.id === null && x.name === e.name && x.digest === e.digest && x.size === e.size &&
        x.owner === e.owner && x.allowed === e.allowed
      );
      ok(a !== undefined, `object ${e.id} matches no attempted put`);
      attemptOf.set(e.id, a);
    }
    // Every object's bytes, fetched again: identical to what was published.
    for (const e of entries) {
      using o = await client.get(e.id, { verify: true });
      const a = attemptOf.get(e.id) as Attempt;
      assertEquals([o.id, o.name, o.digest], [e.id, e.name, a.digest]);
      ok(sameBytes(o.view, payload(a.seed, a.size)), `object ${e.id} has other bytes`);
    }
    // By-name resolution picks the newest version, and policy is what the metadata says.
    for (const name of NAMES) {
      const versions = entries.filter((e) => e.name === name);
      const newest = versions[versions.length - 1];
      if (newest === undefined) continue;
      for (const job of JOBS) {
        const got = await client.get({ name }, { jobId: job }).then(
          (o) => (o.close(), o.id),
          (e) => e instanceof BrokerError ? `status ${e.status}` : Promise.reject(e),
        );
        assertEquals(got, canSee(newest, job) ? newest.id : `status ${Status.FORBIDDEN}`);
      }
    }
    for (const job of JOBS) {
      const visibleIds = (await client.list({ jobId: job })).map((e) => e.id);
      assertEquals(visibleIds, entries.filter((e) => canSee(e, job)).map((e) => e.id));
    }
    // New ids continue after the highest recovered one.
    const highest = entries.reduce((m, e) => (e.id > m ? e.id : m), 0n);
    const fresh = await client.put(enc("after recovery"), { name: "fresh" });
    ok(fresh.id > highest, `new id ${fresh.id} does not continue after ${highest}`);
    const total = entries.length + 1;

    // Exactly one recover record (no digest failed its background re-check).
    assertEquals(recoverRecords(b).length, 1);
    assertEquals(b.audit().filter((r) => r.op === "recover")[0]?.result, "ok");

    // Descriptors: the shadow holds its fixed set plus one per object; the broker one per object.
    client.close();
    assertEquals(await settledFdCount(shadowPid, shadowFixed + total), shadowFixed + total);
    assertEquals(memfdCount(shadowPid), total);
    const brokerWith = await settledFdCount(b.pid);
    assertEquals(memfdCount(b.pid), total);
    await using dropper = new Client({ socket, jobId: null });
    for (const e of [...entries.map((x) => x.id), fresh.id]) await dropper.drop(e);
    dropper.close();
    assertEquals(await settledFdCount(shadowPid, shadowFixed), shadowFixed);
    const brokerBaseline = await settledFdCount(b.pid);
    assertEquals(brokerWith - brokerBaseline, total, "the broker held one descriptor per object");
    assertEquals(memfdCount(b.pid), 0);
  },
);

/** Ask every read-only question of every job: LIST text, STAT and GET by name and by id. */
async function snapshot(
  c: Client,
  jobs: readonly (string | null)[],
  names: readonly string[],
  maxId: number,
): Promise<unknown[]> {
  const out: unknown[] = [];
  const status = (e: unknown): number | Promise<never> =>
    e instanceof BrokerError ? e.status : Promise.reject(e);
  for (const job of jobs) {
    out.push(await c.listText({ jobId: job }));
    for (const name of names) {
      out.push(await c.stat({ name }, { jobId: job }).catch(status));
      out.push(await statusOf(c.get({ name }, { jobId: job })));
    }
    for (let id = 1; id <= maxId; id++) out.push(await c.stat(id, { jobId: job }).catch(status));
  }
  // Refused drops change nothing: the allowed job and strangers may not drop.
  out.push(await statusOf(c.drop(1, { jobId: "beta" })));
  out.push(await statusOf(c.drop(2, { jobId: "gamma" })));
  out.push(await statusOf(c.drop({ name: "cfg" }, { jobId: "alpha" })));
  return out;
}

Deno.test(
  "drops are mirrored, ids are never reused, and names, jobs, creation times and every policy answer are the same after a kill -9",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const first = await shadowed(t, dir.path, socket, shadowPath);
    const jobs = [null, "alpha", "beta", "gamma", "jöb-ß"];
    const names = ["cfg", "naïve/ü", "tmp", "gone"];
    const c = new Client({ socket, jobId: null });
    const puts: [string, string | null, string | null][] = [
      ["cfg", "alpha", "beta"],
      ["cfg", "beta", null],
      ["naïve/ü", null, null],
      ["cfg", "jöb-ß", "alpha"],
      ["tmp", "alpha", null],
      ["tmp", "alpha", null],
      ["gone", null, null],
    ];
    for (const [i, [name, job, allow]] of puts.entries()) {
      const r = await c.put(payload(i, 1000 + i), {
        name,
        jobId: job,
        ...(allow === null ? {} : { allowJob: allow }),
      });
      assertEquals(r.id, BigInt(i + 1));
    }
    assertEquals((await c.drop(7)).id, 7n); // the highest id
    assertEquals((await c.drop({ name: "tmp" }, { jobId: "alpha" })).id, 6n);
    const before = await snapshot(c, jobs, names, 8);
    c.close();

    await kill9(first.b);
    const second = await shadowed(t, dir.path, socket, shadowPath);
    assertEquals([second.rec.result, second.rec.count], ["ok", 5]);
    assertEquals(second.rec.size, 1000 + 1001 + 1002 + 1003 + 1004);
    await using c2 = new Client({ socket, jobId: null });
    assertEquals(await snapshot(c2, jobs, names, 8), before);
    assertEquals((await c2.list()).map((e) => e.id), [1n, 2n, 3n, 4n, 5n]);
    const next = await c2.put(enc("next"), { name: "next" });
    assertEquals(next.id, 8n, "ids 6 and 7 were dropped, not reused");
  },
);

/** Put `n` objects of the given sizes (cycled) with one client; returns what was acknowledged. */
async function putMany(
  socket: string,
  n: number,
  sizes: readonly number[],
  seedBase: number,
): Promise<Attempt[]> {
  await using c = new Client({ socket, jobId: null });
  const out: Attempt[] = [];
  for (let i = 0; i < n; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    const seed = seedBase + i;
    const bytes = payload(seed, size);
    const name = `obj-${i % 7}`;
    const r = await c.put(bytes, { name });
    out.push({
      seed,
      size,
      digest: r.digest,
      name,
      owner: null,
      allowed: null,
      id: r.id,
      createdNs: null,
    });
  }
  return out;
}

/** Every attempt is stored under its id with identical bytes, and nothing else is. */
async function assertHolds(socket: string, expected: readonly Attempt[]): Promise<void> {
  await using c = new Client({ socket, jobId: null });
  const entries = await c.list();
  assertEquals(
    entries.map((e) => [e.id, e.name, e.size, e.digest]),
    expected.map((a) => [a.id, a.name, a.size, a.digest]),
  );
  for (const a of expected) {
    using o = await c.get(a.id ?? 0n);
    ok(sameBytes(o.view, payload(a.seed, a.size)), `object ${a.id} has other bytes`);
  }
}

Deno.test(
  "a shadow killed while the broker runs is replaced by a new one seeded with every object, the next put succeeds, and a later kill -9 of the broker loses nothing",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const first = await shadowed(t, dir.path, socket, shadowPath);
    const b = first.b;
    const before = await putMany(socket, 5, [1, 3 * MiB, 4096], 1);
    const oldShadow = await theShadow(shadowPath);
    const fixed = (await settledFdCount(oldShadow)) - 5;

    await killAndWait(oldShadow);
    const after = await putMany(socket, 2, [777, 2 * MiB], 100);
    assertEquals(after.map((a) => a.id), [6n, 7n], "ids continue across the shadow's death");
    const newShadow = await theShadow(shadowPath);
    ok(newShadow !== oldShadow, "a new shadow was started");
    // Seeded with the five objects from before its time, plus the two put since.
    assertEquals(await settledFdCount(newShadow, fixed + 7), fixed + 7);
    assertEquals(memfdCount(newShadow), 7);
    // One record per revival. The broker may first reach the dying shadow's listener (the
    // kernel tears a killed process's descriptors down one by one) and revive again when that
    // link breaks too; the last revival is the one that started the new shadow.
    const trouble = recoverRecords(b).filter((r) => r.result === "error");
    ok(trouble.length >= 1 && trouble.length <= 2, JSON.stringify(trouble));
    for (const r of trouble) {
      ok(String(r.error).startsWith(`shadow at ${shadowPath} was lost: `), String(r.error));
    }
    assertEquals(
      trouble[trouble.length - 1]?.error,
      `shadow at ${shadowPath} was lost: started a new one and seeded it`,
    );

    await kill9(b);
    const second = await shadowed(t, dir.path, socket, shadowPath);
    assertEquals([second.rec.result, second.rec.count], ["ok", 7]);
    assertEquals(await theShadow(shadowPath), newShadow);
    await assertHolds(socket, [...before, ...after]);
    const more = await putMany(socket, 1, [10], 200);
    assertEquals(more[0]?.id, 8n);
  },
);

Deno.test(
  "when broker and shadow are both killed the restarted broker says plainly that nothing was recovered and starts empty",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const first = await shadowed(t, dir.path, socket, shadowPath);
    await putMany(socket, 3, [10, MiB + 1], 1);
    const shadowPid = await theShadow(shadowPath);
    await kill9(first.b); // the broker first, so it cannot revive the shadow
    await killAndWait(shadowPid);

    const second = await shadowed(t, dir.path, socket, shadowPath);
    const rec = second.rec;
    assertEquals([rec.result, rec.count, rec.size], ["not_found", 0, 0]);
    assertEquals(
      rec.error,
      `no shadow state at ${shadowPath}: started a new shadow, no objects recovered`,
    );
    await waitFor(() => second.b.stderr.includes("nothing to recover"), {
      what: "the stderr line",
    });
    ok(
      second.b.stderr.includes(
        `memfdbus broker: no shadow was running on ${shadowPath}; started one, nothing to recover\n`,
      ),
      second.b.stderr,
    );
    assertEquals(recoverRecords(second.b).length, 1);
    await using c = new Client({ socket, jobId: null });
    assertEquals(await c.listText(), "");
    assertEquals(await statusOf(c.get(1)), Status.NOT_FOUND);
    const fresh = await theShadow(shadowPath);
    ok(fresh !== shadowPid);
    assertEquals(memfdCount(fresh), 0);
  },
);

Deno.test(
  "a broker stopped with SIGTERM leaves the shadow running with all its objects (more than one descriptor batch), and a restart recovers them",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const first = await shadowed(t, dir.path, socket, shadowPath);
    const shadowPid = await theShadow(shadowPath);
    const fixed = await settledFdCount(shadowPid);
    // 450 objects: the state travels in batches of at most 200 descriptors.
    const objs = await putMany(socket, 450, [1, 64, 300, 5000], 1);
    objs.push(...await putMany(socket, 2, [2 * MiB + 3], 10_000));
    assertEquals(await settledFdCount(shadowPid, fixed + 452), fixed + 452);
    // Identical contents share one memfd in the broker (dedup); the shadow holds one descriptor
    // per object.
    const held = memfdCount(first.b.pid);
    ok(held < 452, `identical contents share memfds in the broker (${held})`);

    signal(first.b.pid, "SIGTERM");
    assertEquals((await first.b.child.status).code, 0);
    ok(!exists(socket), "SIGTERM unlinked the broker socket");
    ok(alive(shadowPid), "the shadow outlives a graceful stop");
    assertEquals(memfdCount(shadowPid), 452);

    // Recovery happens before any client is served: a LIST sent as soon as the broker prints
    // its listening line already sees every object.
    const restarted = await t.broker(dir.path, ["--socket", socket, "--shadow", shadowPath]);
    {
      await using early = new Client({ socket, jobId: null });
      assertEquals((await early.list()).length, 452);
    }
    await waitFor(() => recoverRecords(restarted).length > 0, {
      what: "the recover record",
      timeoutMs: 15_000,
    });
    const second = { b: restarted, rec: recoverRecords(restarted)[0] as AuditLine };
    assertEquals([second.rec.result, second.rec.count], ["ok", 452]);
    assertEquals(second.rec.size, objs.reduce((n, a) => n + a.size, 0));
    assertEquals(await theShadow(shadowPath), shadowPid);
    await assertHolds(socket, objs);
    // Recovered objects that shared a memfd share it again: the same memfds as before.
    assertEquals(memfdCount(second.b.pid), held);
    assertEquals(await settledFdCount(shadowPid, fixed + 452), fixed + 452);
    assertEquals(recoverRecords(second.b).length, 1);
  },
);

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Start `memfdbus shadow --socket PATH` by hand and wait for its line. */
async function handShadow(t: Tracker, path: string): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, "shadow", "--socket", path],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  t.children.push(child);
  t.shadowPaths.add(path);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  assertEquals(value, `memfdbus shadow listening on ${path}\n`);
  reader.releaseLock();
  void child.stdout.cancel().catch(() => {});
  return child;
}

Deno.test(
  "recovered digests are verified before any client is served: an object whose bytes do not match is removed from broker and shadow with an audit record",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const shadow = await handShadow(t, shadowPath);
    // Seed the shadow as a broker would, with two objects whose digests lie.
    const good = sealedMemfd(enc("good bytes"));
    const bad = sealedMemfd(enc("bad bytes"));
    const bigBad = sealedMemfd(payload(5, 2 * MiB + 1));
    const obj = (id: number, fd: number, size: number, digest: string): StoredObject => ({
      id,
      size,
      fd,
      digest,
      name: `n${id}`,
      owner: null,
      allowed: null,
      createdNs: 1_000_000_000n * BigInt(id),
    });
    const attached = ShadowLink.attach({ path: shadowPath, command: null });
    assertEquals([attached.started, attached.objects.length], [false, 0]);
    let seeded = false;
    attached.link.seed(
      [
        obj(3, good.fd, 10, digestOf(enc("good bytes"))),
        obj(5, bad.fd, 9, digestOf(enc("other bytes"))),
        obj(7, bigBad.fd, 2 * MiB + 1, digestOf(payload(6, 2 * MiB + 1))),
      ],
      9,
      () => (seeded = true),
    );
    await waitFor(() => (attached.link.onEvent(), seeded), { what: "the seed's ACK" });
    attached.link.close();
    for (const m of [good, bad, bigBad]) m.close();
    assertEquals(memfdCount(shadow.pid), 3);

    const { b, rec } = await shadowed(t, dir.path, socket, shadowPath);
    assertEquals([rec.result, rec.count], ["ok", 1], "only the verified object is recovered");
    await waitFor(
      () => recoverRecords(b).filter((r) => r.result === "error").length >= 2,
      { what: "two digest mismatch records", timeoutMs: 10_000 },
    );
    const bad2 = recoverRecords(b).filter((r) => r.result === "error");
    assertEquals(
      bad2.map((r) => [r.object_id, r.name, r.error]).sort(),
      [
        [5, "n5", "digest mismatch after recovery: object removed"],
        [7, "n7", "digest mismatch after recovery: object removed"],
      ],
    );
    await using c = new Client({ socket, jobId: null });
    assertEquals((await c.list()).map((e) => e.id), [3n]);
    assertEquals(await statusOf(c.get(5)), Status.NOT_FOUND);
    assertEquals((await c.stat(3)).createdNs, 3_000_000_000n, "creation time recovered");
    await waitFor(() => memfdCount(shadow.pid) === 1, { what: "the shadow to drop the two" });
    assertEquals((await c.put(enc("x"), { name: "x" })).id, 9n, "next id from the shadow");
  },
);

Deno.test(
  "a put is not acknowledged until the shadow holds it: with the shadow stopped the put waits while gets are served",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    await shadowed(t, dir.path, socket, shadowPath);
    const shadowPid = await theShadow(shadowPath);
    await using c = new Client({ socket, jobId: null });
    await c.put(enc("one"), { name: "one" });
    signal(shadowPid, "SIGSTOP");
    let putDone = false;
    let dropDone = false;
    try {
      const put = c.put(enc("two"), { name: "two" }).then((r) => ((putDone = true), r));
      await letTimePass(600); // a window on purpose: the put must NOT be acknowledged in it
      // The broker is not blocked: another client is served meanwhile.
      await using other = new Client({ socket, jobId: null });
      using o = await other.get({ name: "one" });
      assertEquals(o.text(), "one");
      ok(!putDone, "the put was acknowledged before the shadow held it");
      const drop = other.drop(1).then(() => (dropDone = true));
      await letTimePass(300); // a window on purpose: the drop must NOT be acknowledged in it
      ok(!dropDone, "the drop was acknowledged before the shadow knew of it");
      signal(shadowPid, "SIGCONT");
      assertEquals((await put).id, 2n);
      await drop;
    } finally {
      signal(shadowPid, "SIGCONT");
    }
    assertEquals(memfdCount(shadowPid), 1);
  },
);

Deno.test(
  "mirroring to the shadow costs a bounded amount per put (measured, printed)",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const plain = await t.broker(dir.path, ["--socket", `${dir.path}/plain.sock`]);
    const shadowPath = `${dir.path}/shadow.sock`;
    const mirrored = (await shadowed(t, dir.path, `${dir.path}/mirrored.sock`, shadowPath)).b;
    const shadowPid = await theShadow(shadowPath);
    const bytes = enc("small object");
    await using cp = new Client({ socket: plain.socket, jobId: null });
    await using cm = new Client({ socket: mirrored.socket, jobId: null });
    const round = async (c: Client, n: number): Promise<number> => {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await c.put(bytes, { name: "m" });
      return (performance.now() - t0) / n;
    };
    await round(cp, 50);
    await round(cm, 50);
    const tp: number[] = [];
    const tm: number[] = [];
    const N = 200;
    for (let r = 0; r < 6; r++) {
      // Alternate the order, so neither broker always runs on a warmer machine.
      if (r % 2 === 0) {
        tp.push(await round(cp, N));
        tm.push(await round(cm, N));
      } else {
        tm.push(await round(cm, N));
        tp.push(await round(cp, N));
      }
    }
    const median = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1] ?? 0;
    const p = median(tp) * 1000;
    const m = median(tm) * 1000;
    console.log(
      `mirroring cost per put: ${p.toFixed(0)} µs without --shadow, ${m.toFixed(0)} µs with ` +
        `(+${(m - p).toFixed(0)} µs, ratio ${(m / p).toFixed(2)}; median of 6 rounds of ${N})`,
    );
    // Every one of them is held by the shadow, once it has handled the last frames (the broker
    // replies after sending a frame, not after the shadow handled it; one full run under load
    // read 1251 at once).
    const held = 50 + 6 * N;
    await waitFor(() => memfdCount(shadowPid) === held, {
      what: `the shadow to hold ${held} memfds`,
    });
    ok(m > 0 && p > 0);
  },
);

Deno.test(
  "a second shadow started on a running shadow's path refuses, and the running shadow keeps its broker and objects",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const { b } = await shadowed(t, dir.path, socket, shadowPath);
    await putMany(socket, 2, [10, 20], 1);
    const shadowPid = await theShadow(shadowPath);
    t.shadowPaths.add(shadowPath);
    const second = await cli(["shadow", "--socket", shadowPath]);
    assertEquals(
      [second.code, second.stderr],
      [1, `refusing to replace the socket of a running shadow: ${shadowPath}\n`],
    );
    const more = await putMany(socket, 1, [30], 10);
    assertEquals(more[0]?.id, 3n);
    await letTimePass(200); // a window on purpose: no revival may happen in it
    assertEquals(recoverRecords(b).map((r) => r.result), ["not_found"], "no revival was needed");
    assertEquals(await theShadow(shadowPath), shadowPid);
    assertEquals(memfdCount(shadowPid), 3);
  },
);

Deno.test(
  "a shadow that cannot be restarted does not stall the broker: requests are served promptly, and the shadow is revived and seeded once it can start again",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowDir = `${dir.path}/shadow`;
    Deno.mkdirSync(shadowDir);
    const shadowPath = `${shadowDir}/shadow.sock`;
    const { b } = await shadowed(t, dir.path, socket, shadowPath);
    await using c = new Client({ socket, jobId: null, timeoutMs: 60_000 });
    const first = await c.put(enc("before"), { name: "a" });
    const shadowPid = await theShadow(shadowPath);
    // Take the shadow away together with its directory, so a new one cannot bind there.
    signal(b.pid, "SIGSTOP");
    try {
      await killAndWait(shadowPid);
      Deno.removeSync(shadowDir, { recursive: true });
    } finally {
      signal(b.pid, "SIGCONT");
    }
    let slowest = 0;
    const timed = async <T>(p: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      const v = await p();
      const ms = performance.now() - t0;
      slowest = Math.max(slowest, ms);
      ok(ms < 10_000, `the broker stalled for ${ms.toFixed(0)} ms`);
      return v;
    };
    for (let i = 0; i < 6; i++) {
      assertEquals((await timed(() => c.list())).length, 1);
      await letTimePass(400); // requests spread over the shadow's restart attempts, on purpose
    }
    const second = await timed(() => c.put(enc("while down"), { name: "b" }));
    console.log(`slowest request while the shadow could not start: ${slowest.toFixed(0)} ms`);
    await waitFor(
      () => recoverRecords(b).some((r) => String(r.error).includes("is unavailable")),
      { what: "an 'unavailable' record" },
    );
    // Once the directory is back, the broker starts a shadow and seeds it with both objects.
    Deno.mkdirSync(shadowDir);
    const revived = await theShadow(shadowPath, 40_000);
    await waitFor(() => memfdCount(revived) === 2, {
      what: "the revived shadow to hold both",
      timeoutMs: 10_000,
    });
    assertEquals([first.id, second.id], [1n, 2n]);
  },
);

Deno.test(
  "a seed cut off before its end (the seeding broker died) leaves the shadow's objects as they were",
  async () => {
    using dir = tempDir();
    await using t = new Tracker();
    const socket = `${dir.path}/bus.sock`;
    const shadowPath = `${dir.path}/shadow.sock`;
    const first = await shadowed(t, dir.path, socket, shadowPath);
    const objs = await putMany(socket, 5, [10, 1000], 1);
    const shadowPid = await theShadow(shadowPath);
    await kill9(first.b);
    // A broker that begins to seed (as after a takeover or a revival) and dies after one batch.
    const addr = sockaddrUn(shadowPath);
    ok(addr !== null);
    const fd = unixSocket(true);
    assertEquals(connectUnix(fd, addr), 0);
    {
      using conn = new FrameConn(fd);
      using m = sealedMemfd(enc("partial"));
      const partial: StoredObject = {
        id: 99,
        size: 7,
        fd: m.fd,
        digest: digestOf(enc("partial")),
        name: "partial",
        owner: null,
        allowed: null,
        createdNs: 1n,
      };
      conn.queue(Frame.SEED, null);
      conn.queue(Frame.OBJECTS, [toWire(partial)], [m.fd]);
      conn.flushBlocking(5000);
      // The shadow has read the batch once it holds the partial seed's descriptor too.
      await waitFor(() => memfdCount(shadowPid) === 6, { what: "the shadow to receive the batch" });
    }
    // The connection is closed: the shadow lets the staged object go and keeps its own five.
    await waitFor(() => memfdCount(shadowPid) !== 6, {
      what: "the shadow to let go of the cut-off seed",
    });
    assertEquals(memfdCount(shadowPid), 5, "the shadow dropped its objects for a partial seed");
    const second = await shadowed(t, dir.path, socket, shadowPath);
    assertEquals([second.rec.result, second.rec.count], ["ok", 5]);
    await assertHolds(socket, objs);
  },
);
