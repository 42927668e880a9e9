/**
 * `deno task soak`: mixed load against one broker for --seconds (default 120): clients with and
 * without keep-alive publishing, fetching, listing, describing and dropping objects of all sizes
 * under several jobs, while a disconnector abandons requests in every way it can (mid-header,
 * mid-body, before reading a reply, right after sending a large PUT). Every --check-seconds the
 * load pauses and the broker must hold exactly its fixed descriptors plus one per stored object
 * (by its audit log's account), answer promptly, and keep its RSS from growing past
 * --max-rss-growth-mib. Ends with SIGTERM (exit 0). Exit status 1 on any failure.
 *
 * @module
 */

import { type BusObject, Client } from "../src/client.ts";
import { Connection } from "../src/client/connection.ts";
import { digestBytes } from "../src/hash/digest.ts";
import { BrokerError } from "../src/errors.ts";
import { libc } from "../src/ffi.ts";
import { SHUT_WR } from "../src/sys/linux.ts";
import { Memfd } from "../src/sys/memfd.ts";
import { Cmd, DIGEST_LEN, encodeHeader, Flag } from "../src/protocol/wire.ts";
import { rssKiB } from "../tests/support/faults.ts";
import { letTimePass as sleep } from "../tests/support/wait.ts";
import { Rng } from "../tests/support/fuzz_engine.ts";
import { numberFlags, StreamingBroker } from "../tests/support/long_run.ts";

const USAGE = `usage: deno task soak [--seconds 120] [--clients 6] [--check-seconds 15]
                      [--max-live 400] [--max-rss-growth-mib 128] [--seed N]`;
const flags = numberFlags(Deno.args, {
  seconds: 120,
  clients: 6,
  checkSeconds: 15,
  maxLive: 400,
  maxRssGrowthMib: 128,
  seed: Number.NaN,
}, USAGE);
const seed = Number.isNaN(flags.seed)
  ? crypto.getRandomValues(new Uint32Array(1))[0] ?? 1
  : flags.seed >>> 0;
console.log(`soak: seed ${seed}, ${flags.seconds} s, ${flags.clients} clients`);

const dir = Deno.makeTempDirSync({ prefix: "memfdbus-soak-" });
const broker = await StreamingBroker.start(`${dir}/soak.sock`, [
  "--request-timeout-ms",
  "2000",
  "--idle-timeout-ms",
  "3000",
]);

const counts = new Map<string, number>();
const count = (k: string, n = 1): void => void counts.set(k, (counts.get(k) ?? 0) + n);
const failures: string[] = [];
const fail = (what: string): void => {
  if (failures.length < 50) failures.push(what);
};

// ---- pausing for checkpoints ------------------------------------------------------------------

let paused = false;
let resume: () => void = () => {};
let resumed = Promise.resolve();
let busy = 0;
let stopping = false;

async function gate(): Promise<void> {
  while (paused) await resumed;
}

async function quiesce(): Promise<void> {
  paused = true;
  resumed = new Promise((r) => (resume = r));
  while (busy > 0) await sleep(10);
}

function unpause(): void {
  paused = false;
  resume();
}

// ---- the load ----------------------------------------------------------------------------------

interface Obj {
  id: bigint;
  name: string;
  owner: string | null;
  allowed: string | null;
  digest: string;
}
const live = new Map<bigint, Obj>();
const JOBS = ["alpha", "beta", "gamma"];

function sizeOf(r: Rng): number {
  const k = r.int(1000);
  if (k < 5) return (1 << 20) + r.int(3 << 20); // hashed on a Worker
  if (k < 100) return r.int(256 << 10);
  return r.int(4096);
}

async function clientWorker(w: number): Promise<void> {
  const r = new Rng(seed ^ (w * 0x9e3779b9));
  const keepAlive = w % 2 === 0;
  let client: Client | null = null;
  while (!stopping) {
    if (paused) {
      client?.close();
      client = null;
      await gate();
      continue;
    }
    client ??= new Client({ socket: broker.socket, jobId: null, keepAlive, timeoutMs: 15_000 });
    busy++;
    try {
      await oneOp(r, client);
    } catch (e) {
      if (e instanceof BrokerError && (e.status === 2 || e.status === 4)) {
        count(`status-${e.status}`);
      } else {
        fail(`client ${w}: ${(e as Error).stack ?? e}`);
      }
    } finally {
      busy--;
    }
  }
  client?.close();
}

async function oneOp(r: Rng, client: Client): Promise<void> {
  const op = r.int(100);
  const ids = [...live.keys()];
  const target = live.get(ids[r.int(ids.length)] ?? 0n);
  const job = r.chance(0.5) ? null : r.pick(JOBS);
  if (op < 30 || target === undefined) {
    if (live.size >= flags.maxLive) return;
    const bytes = r.bytes(sizeOf(r));
    const owner = r.chance(0.6) ? null : r.pick(JOBS);
    const allowed = owner !== null && r.chance(0.3) ? r.pick(JOBS) : null;
    const name = `obj-${r.int(50)}`;
    const res = await client.put(bytes, {
      name,
      jobId: owner,
      ...(allowed === null ? {} : { allowJob: allowed }),
    });
    live.set(res.id, { id: res.id, name, owner, allowed, digest: res.digest });
    count("put");
  } else if (op < 60) {
    let o: BusObject;
    if (r.chance(0.7)) o = await client.get(target.id, { jobId: job });
    else o = await client.get({ name: target.name }, { jobId: job });
    try {
      if (o.id === target.id && o.digest !== target.digest) fail(`GET ${o.id}: wrong digest`);
      if (r.chance(0.1) && !(await o.verify())) fail(`GET ${o.id}: bytes do not match the digest`);
    } finally {
      o.close();
    }
    count("get");
  } else if (op < 70) {
    await client.list({ jobId: job });
    count("list");
  } else if (op < 78) {
    await client.stat(target.id, { jobId: job });
    count("stat");
  } else {
    live.delete(target.id);
    try {
      await client.drop(target.id, { jobId: job });
      count("drop");
    } catch (e) {
      if (e instanceof BrokerError && e.status === 4) live.set(target.id, target);
      throw e;
    }
  }
}

/** Requests abandoned in every way: the broker must clean up after each. */
async function disconnector(): Promise<void> {
  const r = new Rng(seed ^ 0xd15c);
  while (!stopping) {
    if (paused) {
      await gate();
      continue;
    }
    busy++;
    try {
      await oneDisconnect(r);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== "EPIPE" && code !== "ECONNRESET") fail(`disconnector: ${(e as Error).message}`);
    } finally {
      busy--;
    }
    await sleep(r.int(5));
  }
}

async function oneDisconnect(r: Rng): Promise<void> {
  const c = await Connection.connect(broker.socket, 5000);
  const deadline = performance.now() + 5000;
  try {
    const ids = [...live.keys()];
    const id = ids[r.int(ids.length)] ?? 1n;
    switch (r.int(7)) {
      case 0: // connect and leave
        count("dc-connect");
        break;
      case 1: // half a header
        await c.send(encodeHeader({ cmd: Cmd.LIST }).subarray(0, 1 + r.int(46)), deadline, "s");
        count("dc-half-header");
        break;
      case 2: { // a PUT with its memfd, cut in the name
        using m = Memfd.create("soak");
        m.writeAll(new Uint8Array(10));
        m.seal();
        await c.send(
          encodeHeader({ cmd: Cmd.PUT, size: 10n, nameLen: 20, textLen: DIGEST_LEN }),
          deadline,
          "s",
          [m.fd],
        );
        await c.send(new Uint8Array(5), deadline, "s");
        count("dc-put-cut");
        break;
      }
      case 3: // a GET whose reply (and descriptor) is never read
        await c.send(encodeHeader({ cmd: Cmd.GET, objectId: id }), deadline, "s");
        count("dc-get-unread");
        break;
      case 4: { // a large PUT abandoned while the broker hashes it
        const bytes = r.bytes((1 << 20) + r.int(1 << 20));
        using m = Memfd.create("soak-big");
        m.writeAll(bytes);
        m.seal();
        const name = new TextEncoder().encode(`abandoned-${r.int(10)}`);
        const digest = new TextEncoder().encode(digestBytes(bytes));
        const body = new Uint8Array(name.length + DIGEST_LEN);
        body.set(name);
        body.set(digest, name.length);
        await c.send(
          new Uint8Array([
            ...encodeHeader({
              cmd: Cmd.PUT,
              size: BigInt(bytes.length),
              nameLen: name.length,
              textLen: DIGEST_LEN,
            }),
            ...body,
          ]),
          deadline,
          "s",
          [m.fd],
        );
        count("dc-big-put");
        break;
      }
      case 5: // a kept-alive connection: one request answered, the next one cut
        await c.send(encodeHeader({ cmd: Cmd.LIST, reserved: Flag.KEEP_ALIVE }), deadline, "s");
        await c.recvExact(48, deadline, "r");
        await c.send(encodeHeader({ cmd: Cmd.GET, nameLen: 9 }), deadline, "s");
        count("dc-keepalive-cut");
        break;
      default: // a complete request, then a half-close and nothing read
        await c.send(encodeHeader({ cmd: Cmd.STAT, objectId: id }), deadline, "s");
        libc.symbols.shutdown(c.fd, SHUT_WR);
        count("dc-half-close");
    }
  } finally {
    c.close();
  }
}

// ---- checkpoints ---------------------------------------------------------------------------------

async function settle(expected: number, ms: number): Promise<number> {
  const end = performance.now() + ms;
  let n = broker.fdCount();
  while (n !== expected && performance.now() < end) {
    await sleep(50);
    n = broker.fdCount();
  }
  return n;
}

async function flushAudit(): Promise<void> {
  let seen = -1;
  while (seen !== broker.records) {
    seen = broker.records;
    await sleep(200);
  }
}

// The fixed set: one of every request (and a Worker hash) done, every connection closed.
{
  await using c = new Client({ socket: broker.socket, jobId: null });
  const big = await c.put(new Uint8Array(2 << 20), { name: "warm" });
  (await c.get(big.id)).close();
  await c.stat(big.id);
  await c.list();
  await c.drop(big.id);
}
await sleep(500);
const baseline = broker.fdCount();
const rss: number[] = [];
const listMs: number[] = [];
let checks = 0;
let fdOk = 0;

async function checkpoint(): Promise<void> {
  await quiesce();
  try {
    checks++;
    if (!broker.running) {
      fail(`the broker exited: ${JSON.stringify(broker.exited)} ${broker.stderr}`);
      return;
    }
    await flushAudit();
    // Abandoned requests end within the request timeout (2 s) or the linger time.
    const stored = broker.live.size;
    const n = await settle(baseline + stored, 8000);
    if (n === baseline + stored) fdOk++;
    else fail(`checkpoint ${checks}: ${n} descriptors for ${stored} objects (fixed ${baseline})`);
    // Abandoned large PUTs still commit (the C semantics, D16): nobody knows their ids but the
    // audit log. Everything else must match the clients' own account.
    const abandoned = [...broker.live].filter(([, name]) => name.startsWith("abandoned-"));
    if (broker.live.size - abandoned.length !== live.size) {
      fail(
        `checkpoint ${checks}: the audit log counts ${broker.live.size} objects ` +
          `(${abandoned.length} abandoned), the clients ${live.size}`,
      );
    }
    const t = performance.now();
    await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
    const listed = await c.list();
    listMs.push(performance.now() - t);
    if (listed.length !== broker.live.size) {
      fail(`checkpoint ${checks}: LIST shows ${listed.length}`);
    }
    for (const [id] of abandoned) await c.drop(BigInt(id));
    count("abandoned-dropped", abandoned.length);
    rss.push(rssKiB(broker.pid));
    console.log(
      `  ${elapsed().toFixed(0)} s: ${stored} objects, ${n} fds (fixed ${baseline}), ` +
        `rss ${rss.at(-1)} KiB, list ${listMs.at(-1)?.toFixed(1)} ms, ` +
        `${[...counts].map(([k, v]) => `${k}=${v}`).join(" ")}`,
    );
  } finally {
    unpause();
  }
}

const t0 = performance.now();
const elapsed = (): number => (performance.now() - t0) / 1000;
const workers = [
  ...Array.from({ length: flags.clients }, (_, w) => clientWorker(w)),
  disconnector(),
];
while (elapsed() < flags.seconds && failures.length === 0 && broker.running) {
  await sleep(Math.min(flags.checkSeconds * 1000, Math.max(0, (flags.seconds - elapsed()) * 1000)));
  await checkpoint();
}
stopping = true;
unpause();
await Promise.all(workers);
await checkpoint();
const seconds = elapsed();

const status = await broker.stop("SIGTERM");
if (status.code !== 0) fail(`broker exit status ${status.code} (${status.signal})`);
if (broker.stderr !== "") fail(`broker stderr: ${broker.stderr}`);
if (broker.badLines.length > 0) fail(`bad audit lines: ${broker.badLines.slice(0, 3).join(" | ")}`);
Deno.removeSync(dir, { recursive: true });

// Memory: compare the last sample with the first one taken after warm-up.
const first = rss[1] ?? rss[0] ?? 0;
const last = rss.at(-1) ?? 0;
const growthMib = (last - first) / 1024;
if (growthMib > flags.maxRssGrowthMib) {
  fail(`broker RSS grew by ${growthMib.toFixed(1)} MiB (${first} -> ${last} KiB)`);
}
for (const f of failures) console.log(`FAILURE ${f}`);
const ops = ["put", "get", "list", "stat", "drop"].reduce((a, k) => a + (counts.get(k) ?? 0), 0);
const dcs = [...counts].filter(([k]) => k.startsWith("dc-")).reduce((a, [, v]) => a + v, 0);
const okRun = failures.length === 0;
console.log(
  `soak ${okRun ? "PASS" : "FAIL"}: seed=${seed} duration=${seconds.toFixed(1)}s ops=${ops} ` +
    `(${
      ["put", "get", "list", "stat", "drop"].map((k) => `${k}=${counts.get(k) ?? 0}`).join(" ")
    }) ` +
    `refusals=${
      (counts.get("status-2") ?? 0) + (counts.get("status-4") ?? 0)
    } disconnects=${dcs} ` +
    `checkpoints=${checks} fd_checks_ok=${fdOk}/${checks} fd_fixed_set=${baseline} ` +
    `broker_rss_kib=${first}->${last} (${growthMib >= 0 ? "+" : ""}${growthMib.toFixed(1)} MiB, ` +
    `max ${Math.max(...rss)}) list_ms_max=${Math.max(...listMs).toFixed(1)} ` +
    `audit_records=${broker.records} failures=${failures.length}`,
);
Deno.exit(okRun ? 0 : 1);
