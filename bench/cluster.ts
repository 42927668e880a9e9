/**
 * Cluster tier benchmark (issue 14, point 10), in one run, against a nats-server started here
 * (one node, JetStream) and two real broker processes (`memfdbus broker --cluster` with host ids
 * A and B, the real CLI entry point) standing in for two hosts:
 *
 * - publish on A -> visible on B: a 4 KiB PUT on A (new content and a new name each time,
 *   through the client library) until a `get --name --wait` parked on B returns it (p50, p99),
 *   next to a raw KV put -> KV watch on another connection. (A `watch` on B would be the other
 *   way, but the client's watch decoder refuses the id 0 with which remote publishes are
 *   announced: see the report of this change.);
 * - pull throughput on B: `get --name` on B of a blob published on A (the broker streams it into
 *   a memfd, verifies its SHA-256, seals it and passes the descriptor), against a raw object-store
 *   get of the same blob read to the end with its own digest check (ratio, goal >= 0.8);
 * - upload throughput: a PUT of a new blob on A until a raw KV watch sees it committed (A's broker
 *   uploads from its sealed memfd after the reply; the KV write is the commit), and the tier's own
 *   `publish` of a new blob for comparison.
 *
 * Usage: `deno run --allow-all bench/cluster.ts [--quick] [--memory] [--runs N] [--pull-only]
 * [--out FILE]` (`--pull-only`: only the pull against the raw get, each run's ratio printed).
 * Prints a table, then the JSON (also written to bench/results/cluster.json).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm, KvWatchInclude } from "@nats-io/kv";
import { Objm, setSha256Backend } from "@nats-io/obj";
import { Memfd } from "../src/sys/memfd.ts";
import { Client } from "../src/client.ts";
import { ClusterTier } from "../src/cluster/tier.ts";
import { defaultClusterOptions } from "../src/cluster/options.ts";
import { decodeRecord } from "../src/cluster/model.ts";
import { NATS_SERVER, NatsNode } from "../tests/support/cluster.ts";
import { BrokerProcess } from "../tests/support/harness.ts";

const quick = Deno.args.includes("--quick");
const memory = Deno.args.includes("--memory");
const outArg = Deno.args.indexOf("--out");
const outFile = outArg >= 0
  ? Deno.args[outArg + 1] ?? ""
  : new URL("./results/cluster.json", import.meta.url).pathname;
const MiB = 1024 * 1024;
const SIZE = (quick ? 32 : 256) * MiB;
const runsArg = Deno.args.indexOf("--runs");
const RUNS = runsArg >= 0 ? Number(Deno.args[runsArg + 1]) : 3;
/** Only the pull against the raw get (for profiling the pull path). */
const pullOnly = Deno.args.includes("--pull-only");
const SAMPLES = quick ? 50 : 300;

// The raw get checks its digest with the same native SHA-256 the tier uses (a fair baseline).
setSha256Backend("native");

if (NATS_SERVER === null) {
  console.error("nats-server not found (apt-get install nats-server)");
  Deno.exit(1);
}

interface Row {
  metric: string;
  value: number;
  unit: string;
}
const rows: Row[] = [];
const row = (metric: string, value: number, unit: string): void => {
  rows.push({ metric, value: Math.round(value * 100) / 100, unit });
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN;
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
};
const enc = new TextEncoder();

function blob(size: number, seed: number): Memfd {
  const m = Memfd.create("bench");
  const chunk = new Uint8Array(Math.min(size, MiB));
  let x = seed;
  for (let off = 0; off < size; off += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4) {
      x = (x * 1103515245 + 12345) >>> 0;
      chunk[i] = x;
      chunk[i + 1] = x >> 8;
      chunk[i + 2] = x >> 16;
      chunk[i + 3] = x >> 24;
    }
    m.writeAll(chunk.subarray(0, Math.min(chunk.length, size - off)));
  }
  m.seal();
  return m;
}

function digestOf(m: Memfd): string {
  using map = m.map();
  const h = createHash("sha256");
  for (let off = 0; off < map.length; off += 16 * MiB) {
    h.update(map.bytes.subarray(off, off + 16 * MiB));
  }
  return "sha256:" + h.digest("hex");
}

await using node = await NatsNode.single();
const dir = await Deno.makeTempDir({ prefix: "memfdbus-cbench-" });
const storage = memory ? "memory" : "file";
const conf = (host: string): string => {
  const file = `${dir}/${host}.jsonc`;
  Deno.writeTextFileSync(
    file,
    JSON.stringify({ cluster: { servers: [node.url], hostId: host, storage } }),
  );
  return file;
};
// --keep-versions 1: each run's blob replaces the last on both hosts (memory stays bounded).
const brokerArgs = (host: string): string[] => ["--config", conf(host), "--keep-versions", "1"];
await using brokerA = await BrokerProcess.start(dir, brokerArgs("A"));
await using brokerB = await BrokerProcess.start(dir, brokerArgs("B"));
await using clientA = new Client({ socket: brokerA.socket, jobId: null });
await using clientB = new Client({ socket: brokerB.socket, jobId: null });

/**
 * The names bucket, watched raw: resolves `committed(name)` when a put of it lands (the KV write
 * is the cluster's commit point). Used to see uploads finish without pulling them.
 */
const waiting = new Map<string, () => void>();
const committed = (name: string): Promise<void> =>
  new Promise((resolve) => waiting.set(name, resolve));
const ncW = await connect({ servers: node.url });
const names = await new Kvm(jetstream(ncW)).create("memfdbus-names", { history: 64 });
const namesWatch = await names.watch({ include: KvWatchInclude.UpdatesOnly });
const watching = (async () => {
  for await (const e of namesWatch) {
    if (e.operation !== "PUT") continue;
    const r = decodeRecord(e.value);
    if (r.op !== "put") continue;
    waiting.get(r.entry.name)?.();
    waiting.delete(r.entry.name);
  }
})();
// The brokers connect to the engine in the background: wait until B serves a publish of A.
for (let i = 0;; i++) {
  const name = `warmup/${i}`;
  await clientA.put(enc.encode(`warm ${i}`), { name });
  const got = await clientB.get({ name }, { wait: 2000 }).then((o) => {
    o.close();
    return true;
  }, () => false);
  if (got) break;
  if (i > 30) throw new Error("a publish on A never became visible on B");
}

// Upload through broker A (PUT, then upload from its sealed memfd, commit, B's watch), then
// pull through broker B (get --name) against a raw object-store get of the same blob.
const nc = await connect({ servers: node.url });
const js = jetstream(nc);
const os = await new Objm(js).open("memfdbus-blobs");
const upload: number[] = [];
const tierPull: number[] = [];
const rawGet: number[] = [];
for (let r = 0; r < RUNS; r++) {
  const digest = await (async () => {
    using m = blob(SIZE, 1000 + r);
    const digest = digestOf(m);
    const visible = committed("bench/big");
    const t0 = performance.now();
    await clientA.putSealed(m.fd, { size: SIZE, digest, name: enc.encode("bench/big") });
    await visible;
    upload.push(SIZE / MiB / ((performance.now() - t0) / 1000));
    return digest;
  })();
  // Raw get first on odd runs, second on even ones (the server's page cache favours neither).
  const raw = async (): Promise<void> => {
    const t0 = performance.now();
    const res = await os.get(digest);
    if (res === null) throw new Error("blob missing");
    let n = 0;
    for await (const c of res.data) n += c.length;
    await res.error;
    if (n !== SIZE) throw new Error(`raw get read ${n}`);
    rawGet.push(SIZE / MiB / ((performance.now() - t0) / 1000));
  };
  const pull = async (): Promise<void> => {
    for (;;) {
      const t0 = performance.now();
      using obj = await clientB.get({ name: "bench/big" });
      const t = performance.now() - t0;
      if (obj.size !== SIZE) throw new Error(`short pull: ${obj.size}`);
      // B's watch may not have seen the new version yet (the raw watcher above did): B then
      // serves its previous copy at once. Not a pull: ask again.
      if (obj.digest !== digest) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      tierPull.push(SIZE / MiB / (t / 1000));
      return;
    }
  };
  if (r % 2 === 0) {
    await raw();
    await pull();
  } else {
    await pull();
    await raw();
  }
  if (pullOnly) {
    const [p, g] = [tierPull.at(-1) ?? NaN, rawGet.at(-1) ?? NaN];
    console.log(
      `run ${r}: pull ${p.toFixed(0)} MiB/s, raw get ${g.toFixed(0)} MiB/s, ${(p / g).toFixed(2)}`,
    );
  }
}
row("upload: PUT on A -> committed in the cluster MiB/s", median(upload), "MiB/s");

// The tier's own publish of a new blob (no broker, no hashing by the broker), for comparison.
const tierUpload: number[] = [];
if (!pullOnly) {
  await using t = await ClusterTier.open({
    ...defaultClusterOptions([node.url], "T"),
    storage,
  });
  await t.ready(10_000);
  for (let r = 0; r < RUNS; r++) {
    using m = blob(SIZE, 2000 + r);
    const digest = digestOf(m);
    const t0 = performance.now();
    await t.publish({
      name: "bench/tier",
      digest,
      size: SIZE,
      owner: null,
      allowed: null,
      originHost: "T",
      originId: r + 1,
      createdNs: BigInt(Date.now()) * 1_000_000n,
    }, m.fd);
    tierUpload.push(SIZE / MiB / ((performance.now() - t0) / 1000));
  }
}
if (!pullOnly) row("upload: tier publish (raw) MiB/s", median(tierUpload), "MiB/s");
row("raw object-store get MiB/s", median(rawGet), "MiB/s");
row("pull: get --name on B into sealed memfd MiB/s", median(tierPull), "MiB/s");
row("pull / raw get ratio (goal >= 0.8)", median(tierPull) / median(rawGet), "x");
row(
  "pull / raw get ratio, median of the runs' own ratios",
  median(tierPull.map((p, i) => p / (rawGet[i] ?? NaN))),
  "x",
);

// Raw KV put -> watch on another connection.
const nc2 = await connect({ servers: node.url });
const kvW = await new Kvm(jetstream(nc2)).create("bench-raw", { history: 1 });
const kvP = await new Kvm(js).open("bench-raw");
const rawLat: number[] = [];
if (!pullOnly) {
  const iter = await kvW.watch({ include: KvWatchInclude.UpdatesOnly });
  const payload = new Uint8Array(4096);
  const it = iter[Symbol.asyncIterator]();
  for (let i = 0; i < SAMPLES; i++) {
    const t0 = performance.now();
    await kvP.put(`k${i % 16}`, payload);
    await it.next();
    rawLat.push(performance.now() - t0);
  }
  iter.stop();
}
if (!pullOnly) {
  row("raw KV put -> watch p50", pct(rawLat, 0.5), "ms");
  row("raw KV put -> watch p99", pct(rawLat, 0.99), "ms");
}

// Publish on A (4 KiB, new content, a new name) -> a `get --name --wait` parked on B returns it.
const busLat: number[] = [];
for (let i = 0; i < (pullOnly ? 0 : SAMPLES); i++) {
  using m = blob(4096, 50_000 + i);
  const digest = digestOf(m);
  const name = `lat/${i}`;
  const parked = clientB.get({ name }, { wait: 60_000 });
  // Give the get a moment to reach B and park (if it has not, B finds the name by a lookup).
  await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  await clientA.putSealed(m.fd, { size: 4096, digest, name: enc.encode(name) });
  (await parked).close();
  busLat.push(performance.now() - t0);
}
if (!pullOnly) {
  row("publish on A -> get --wait on B returns p50", pct(busLat, 0.5), "ms");
  row("publish on A -> get --wait on B returns p99", pct(busLat, 0.99), "ms");
}
namesWatch.stop();
await watching.catch(() => {});
await ncW.close();
await nc.close();
await nc2.close();

const w = Math.max(...rows.map((r) => r.metric.length));
console.log(
  `cluster bench: ${SIZE / MiB} MiB blob, ${storage} storage, ${SAMPLES} latency samples, ` +
    `brokers A and B over one nats-server`,
);
for (const r of rows) {
  console.log(`${r.metric.padEnd(w)}  ${String(r.value).padStart(9)} ${r.unit}`);
}
const json = JSON.stringify({ size: SIZE, storage, samples: SAMPLES, rows }, null, 2);
console.log(json);
if (outFile !== "") {
  await Deno.mkdir(new URL(".", `file://${outFile}`).pathname, { recursive: true });
  await Deno.writeTextFile(outFile, json + "\n");
}
await Deno.remove(dir, { recursive: true }).catch(() => {});
