/**
 * Cluster tier benchmark against a nats-server started here (one node, JetStream):
 *
 * - pull throughput into a sealed, verified memfd through ClusterTier vs a raw object-store get
 *   of the same blob (read to the end, its own digest check) — ratio, goal >= 0.8;
 * - raw KV put -> KV watch latency on another connection vs publish on A -> event on B through
 *   the tier (p50, p99);
 * - upload throughput (publish of a new blob, from a sealed memfd).
 *
 * Usage: `deno run --allow-all bench/cluster.ts [--quick] [--memory] [--out FILE]`.
 * Prints a table, then the JSON (also written to bench/results/cluster.json).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm, KvWatchInclude } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { Memfd } from "../src/sys/memfd.ts";
import { ClusterTier } from "../src/cluster/tier.ts";
import { defaultClusterOptions } from "../src/cluster/options.ts";
import type { ClusterEntry } from "../src/cluster/model.ts";
import { NATS_SERVER, NatsNode } from "../tests/cluster_support.ts";

const quick = Deno.args.includes("--quick");
const memory = Deno.args.includes("--memory");
const outArg = Deno.args.indexOf("--out");
const outFile = outArg >= 0
  ? Deno.args[outArg + 1] ?? ""
  : new URL("./results/cluster.json", import.meta.url).pathname;
const MiB = 1024 * 1024;
const SIZE = (quick ? 32 : 256) * MiB;
const RUNS = 3;
const SAMPLES = quick ? 50 : 300;

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

function blob(size: number, seed: number): Memfd {
  const m = Memfd.create("bench");
  const chunk = new Uint8Array(MiB);
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

let id = 0;
function entry(name: string, m: Memfd, host: string): ClusterEntry {
  return {
    name,
    digest: digestOf(m),
    size: m.size,
    owner: null,
    allowed: null,
    originHost: host,
    originId: ++id,
    createdNs: BigInt(Date.now()) * 1_000_000n,
  };
}

await using node = await NatsNode.single();
const opts = {
  ...defaultClusterOptions([node.url], "A"),
  storage: memory ? "memory" as const : "file" as const,
};
await using a = await ClusterTier.open(opts);
await using b = await ClusterTier.open({ ...opts, hostId: "B" });
await a.ready(10_000);
await b.ready(10_000);

// Upload throughput: new content each run.
const upload: number[] = [];
let last: ClusterEntry | null = null;
for (let r = 0; r < RUNS; r++) {
  using m = blob(SIZE, 1000 + r);
  const e = entry("bench/blob", m, "A");
  const t0 = performance.now();
  await a.publish(e, m.fd);
  upload.push(SIZE / MiB / ((performance.now() - t0) / 1000));
  last = e;
}
row("upload (publish, new blob) MiB/s", median(upload), "MiB/s");
if (last === null) throw new Error("nothing uploaded");

// Pull through the tier vs a raw object-store get of the same blob, interleaved.
const nc = await connect({ servers: node.url });
const js = jetstream(nc);
const os = await new Objm(js).open("memfdbus-blobs");
const tierPull: number[] = [];
const rawGet: number[] = [];
for (let r = 0; r < RUNS; r++) {
  let t0 = performance.now();
  const res = await os.get(last.digest);
  if (res === null) throw new Error("blob missing");
  let n = 0;
  for await (const c of res.data) n += c.length;
  await res.error;
  if (n !== SIZE) throw new Error(`raw get read ${n}`);
  rawGet.push(SIZE / MiB / ((performance.now() - t0) / 1000));
  t0 = performance.now();
  using m = await b.pull(last);
  tierPull.push(SIZE / MiB / ((performance.now() - t0) / 1000));
  if (m.size !== SIZE) throw new Error("short pull");
}
row("raw object-store get MiB/s", median(rawGet), "MiB/s");
row("tier pull into sealed memfd MiB/s", median(tierPull), "MiB/s");
row("pull / raw get ratio (goal >= 0.8)", median(tierPull) / median(rawGet), "x");

// Raw KV put -> watch on another connection.
const nc2 = await connect({ servers: node.url });
const kvW = await new Kvm(jetstream(nc2)).create("bench-raw", { history: 1 });
const kvP = await new Kvm(js).open("bench-raw");
const rawLat: number[] = [];
{
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
row("raw KV put -> watch p50", pct(rawLat, 0.5), "ms");
row("raw KV put -> watch p99", pct(rawLat, 0.99), "ms");

// Publish on A (4 KiB, new content) -> event on B through the tier.
const tierLat: number[] = [];
{
  let resolveEv: (() => void) | null = null;
  using _w = b.watch(0, (e) => {
    if (e.kind === "publish" && e.version.originHost === "A") resolveEv?.();
  });
  await new Promise((r) => setTimeout(r, 200)); // let the watch subscribe
  for (let i = 0; i < SAMPLES; i++) {
    using m = blob(4096, 50_000 + i);
    const e = entry(`lat/${i % 16}`, m, "A");
    const seen = new Promise<void>((r) => (resolveEv = r));
    const t0 = performance.now();
    await a.publish(e, m.fd);
    await seen;
    tierLat.push(performance.now() - t0);
  }
}
row("tier publish on A -> visible on B p50", pct(tierLat, 0.5), "ms");
row("tier publish on A -> visible on B p99", pct(tierLat, 0.99), "ms");
await nc.close();
await nc2.close();

const w = Math.max(...rows.map((r) => r.metric.length));
console.log(
  `cluster bench: ${SIZE / MiB} MiB blob, ${
    memory ? "memory" : "file"
  } storage, ${SAMPLES} latency samples`,
);
for (const r of rows) {
  console.log(`${r.metric.padEnd(w)}  ${String(r.value).padStart(9)} ${r.unit}`);
}
const json = JSON.stringify({ size: SIZE, storage: memory ? "memory" : "file", rows }, null, 2);
console.log(json);
if (outFile !== "") {
  await Deno.mkdir(new URL(".", `file://${outFile}`).pathname, { recursive: true });
  await Deno.writeTextFile(outFile, json + "\n");
}
