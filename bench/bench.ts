/**
 * `deno task bench`: measures memfdbus against floors taken in the same run and prints a table
 * plus a JSON file (`--out FILE`; by default bench/results/latest.json, which is not part of the
 * repository).
 *
 * Floors: a raw SCM_RIGHTS round trip between two processes (bench/floor.ts), node:crypto SHA-256
 * and a memcpy of the same bytes, and `deno run` of an empty script.
 *
 * Options: `--quick` (smaller sizes and counts, for a smoke run), `--out FILE`, section letters
 * (`a`..`h`) to run only those, `--help`. Anything else is refused before anything runs.
 * `--against PATH` (with `--c-bench PATH`, `--pin CPU`) runs the side-by-side comparison with
 * another memfdbus broker binary instead (bench/side_by_side.ts), printing both brokers' figures
 * and their ratio, pinned and unpinned, next to those of the Deno floor broker (bench/floor_broker.ts: the same requests with none of this broker's own work).
 *
 * @module
 */

import { Client } from "../src/client.ts";
import { DigestBuilder } from "../src/hash/digest.ts";
import { Memfd } from "../src/sys/memfd.ts";
import { BrokerProcess, CLI, CLI_PERMS, ROOT } from "../tests/support/harness.ts";
import { waitFor } from "../tests/support/wait.ts";
import { floorRoundTrips } from "./floor.ts";
import { sideBySide } from "./side_by_side.ts";

const BENCH_USAGE = `usage: deno task bench [--quick] [--out FILE] [SECTION...]
   or: deno task bench --against BROKER [--c-bench BENCH] [--pin CPU] [--quick] [SECTION...]

Measure this broker against floors taken in the same run; print a table on stdout and write
every number as JSON to FILE (bench/results/latest.json). Progress goes to stderr.

  --quick            smaller sizes and counts: a smoke run
  --out FILE         where the JSON goes
  SECTION            run only these sections (default: all, a full run takes a long time):
                       a GET latency              b PUT throughput
                       c GET by name, many objects; broker memory
                       d LIST and GET during a large publish
                       e 16 concurrent clients    f CLI wall time
                       g PUT with --shadow        h retention, dedup, watch events
  --against BROKER   side by side with another memfdbus broker binary (the C one), with its
                     bench client (--c-bench) and pinned to one CPU (--pin); then sections
                     run only when named
  -h, --help         show this help

example:
  deno task bench --quick a
`;

/** Refuses, before anything runs, what the bench does not understand (a typo ran a full bench). */
function checkArgs(args: readonly string[]): void {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--help" || a === "-h") {
      console.log(BENCH_USAGE);
      Deno.exit(0);
    }
    if (["--out", "--against", "--c-bench", "--pin"].includes(a)) {
      if (args[i + 1] === undefined) fail(`missing value for ${a}`);
      i++;
    } else if (a !== "--quick" && !/^[a-h]$/.test(a)) fail(`unknown argument: ${a}`);
  }
}

function fail(message: string): never {
  console.error(`${message}\n\n${BENCH_USAGE}`);
  Deno.exit(2);
}

checkArgs(Deno.args);
const quick = Deno.args.includes("--quick");
const outArg = Deno.args.indexOf("--out");
const outFile = outArg >= 0 ? Deno.args[outArg + 1] ?? "" : `${ROOT}/bench/results/latest.json`;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

interface Row {
  section: string;
  metric: string;
  value: number;
  unit: string;
  floor?: number;
  ratio?: number;
  target?: string;
  pass?: boolean;
}

const rows: Row[] = [];
const dir = Deno.makeTempDirSync({ prefix: "memfdbus-bench-" });

function row(r: Row): void {
  rows.push(r);
  const ratio = r.ratio === undefined ? "" : ` ratio ${r.ratio.toFixed(2)}`;
  const verdict = r.pass === undefined ? "" : r.pass ? "  PASS" : "  MISS";
  console.error(`  ${r.section} | ${r.metric}: ${r.value.toFixed(2)} ${r.unit}${ratio}${verdict}`);
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

function stats(times: number[]): { p50: number; p99: number; max: number; mean: number } {
  const s = [...times].sort((a, b) => a - b);
  return {
    p50: pct(s, 0.5),
    p99: pct(s, 0.99),
    max: s[s.length - 1] ?? 0,
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
  };
}

async function timeIt(n: number, f: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    out.push((performance.now() - t0) * 1000);
  }
  return out;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m?.[1] ?? 0);
}

function patternBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  const block = new Uint8Array(Math.min(size, MiB));
  crypto.getRandomValues(block.subarray(0, Math.min(block.length, 65536)));
  for (let i = 65536; i < block.length; i += 65536) block.copyWithin(i, 0, 65536);
  for (let off = 0; off < size; off += block.length) out.set(block.subarray(0, size - off), off);
  return out;
}

// ---- a. GET latency against the raw round trip floor ------------------------------------------

async function latency(): Promise<void> {
  console.error("a. GET latency");
  const floorSock = `${dir}/floor.sock`;
  const floor = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/bench/floor.ts`, "server", floorSock],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = floor.stdout.getReader();
  await reader.read();
  const n = quick ? 500 : 3000;
  floorRoundTrips(floorSock, 200, false);
  const floorKept = stats(floorRoundTrips(floorSock, n, false));
  const floorNew = stats(floorRoundTrips(floorSock, n, true));
  floor.kill("SIGKILL");
  await floor.status;
  reader.releaseLock();
  await floor.stdout.cancel();

  await using broker = await BrokerProcess.start(dir);
  const setup = new Client({ socket: broker.socket, jobId: null });
  const { id } = await setup.put(patternBytes(4 * KiB), { name: "lat" });
  setup.close();

  const fresh = new Client({ socket: broker.socket, keepAlive: false, jobId: null });
  await timeIt(200, async () => (await fresh.get(id)).close());
  const newConn = stats(await timeIt(n, async () => (await fresh.get(id)).close()));
  const kept = new Client({ socket: broker.socket, keepAlive: true, jobId: null });
  await timeIt(200, async () => (await kept.get(id)).close());
  const keptConn = stats(await timeIt(n, async () => (await kept.get(id)).close()));
  kept.close();
  row({
    section: "a",
    metric: "floor round trip, kept connection p50",
    value: floorKept.p50,
    unit: "us",
  });
  row({
    section: "a",
    metric: "floor round trip, new connection p50",
    value: floorNew.p50,
    unit: "us",
  });
  row({
    section: "a",
    metric: "get, new connection p50",
    value: newConn.p50,
    unit: "us",
    floor: floorNew.p50,
    ratio: newConn.p50 / floorNew.p50,
    target: "<= 40 us",
    pass: newConn.p50 <= 40,
  });
  row({ section: "a", metric: "get, new connection p99", value: newConn.p99, unit: "us" });
  row({
    section: "a",
    metric: "get, kept connection p50",
    value: keptConn.p50,
    unit: "us",
    floor: floorKept.p50,
    ratio: keptConn.p50 / floorKept.p50,
    target: "<= 2x floor",
    pass: keptConn.p50 <= 2 * floorKept.p50,
  });
  row({ section: "a", metric: "get, kept connection p99", value: keptConn.p99, unit: "us" });
}

// ---- b. PUT throughput against SHA-256 and memcpy ---------------------------------------------

/** The machine's shared memory (tmpfs and memfd pages) in KiB, from /proc/meminfo. */
function shmemKiB(): number {
  return Number(/^Shmem:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1] ?? 0);
}

async function throughput(): Promise<void> {
  console.error("b. PUT throughput");
  await using broker = await BrokerProcess.start(dir, [], {});
  const client = new Client({ socket: broker.socket, jobId: null });
  const sizes = quick ? [4 * KiB, MiB, 64 * MiB] : [4 * KiB, MiB, 64 * MiB, GiB];
  for (const size of sizes) {
    const reps = size <= 4 * KiB ? 300 : size <= MiB ? 40 : size <= 64 * MiB ? 9 : 3;
    const bytes = patternBytes(size);
    const path = `${dir}/put-${size}.bin`;
    Deno.writeFileSync(path, bytes);
    const label = size >= GiB
      ? `${size / GiB} GiB`
      : size >= MiB
      ? `${size / MiB} MiB`
      : `${size / KiB} KiB`;

    const dst = new Uint8Array(size);
    const copy = await timeIt(reps, () => Promise.resolve(dst.set(bytes)));
    const copyGBs = size / (stats(copy).p50 / 1e6) / 1e9;

    // Only the put is timed: the drop after it frees the object's pages (about 0.5 µs a page
    // here, 8 ms for 64 MiB), which is the drop's cost, not the put's. The broker may free them
    // after answering (its hash Worker unmaps the object after replying, and the last unmap
    // frees a dropped object), so the next measurement waits until the machine's Shmem is back
    // near where it was: neither the floor nor the next put shares the machine with the freeing.
    const timedPut = async (source: Uint8Array | string): Promise<number> => {
      const before = shmemKiB();
      const t0 = performance.now();
      const r = await client.put(source, { name: `put-${size}` });
      const us = (performance.now() - t0) * 1000;
      await client.drop(r.id);
      if (size >= 16 * MiB) {
        await waitFor(() => shmemKiB() <= before + size / KiB / 4, {
          what: "the dropped object's pages to be freed",
          timeoutMs: 5000,
          everyMs: 2,
        }).catch(() => {}); // others' shared memory moved meanwhile: measure anyway
      }
      return us;
    };
    // One untimed run first: the first fresh gigabyte of memfd pages costs the kernel several
    // times more (reclaiming page cache) than steady state, which is what is measured.
    await timedPut(bytes);
    await timedPut(path);
    // The floor and the puts take turns, so a machine loaded by others slows both alike.
    const sha: number[] = [];
    const fromMem: number[] = [];
    const fromFile: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      new DigestBuilder().update(bytes).digest();
      sha.push((performance.now() - t0) * 1000);
      fromMem.push(await timedPut(bytes));
      fromFile.push(await timedPut(path));
    }
    const shaGBs = size / (stats(sha).p50 / 1e6) / 1e9;
    const memGBs = size / (stats(fromMem).p50 / 1e6) / 1e9;
    const fileGBs = size / (stats(fromFile).p50 / 1e6) / 1e9;
    const big = size >= 64 * MiB;
    row({ section: "b", metric: `sha256 floor ${label}`, value: shaGBs, unit: "GB/s" });
    row({ section: "b", metric: `memcpy floor ${label}`, value: copyGBs, unit: "GB/s" });
    row({
      section: "b",
      metric: `put from memory ${label}`,
      value: memGBs,
      unit: "GB/s",
      floor: shaGBs,
      ratio: memGBs / shaGBs,
      ...(big ? { target: ">= 0.6x sha256", pass: memGBs / shaGBs >= 0.6 } : {}),
    });
    row({
      section: "b",
      metric: `put from file ${label}`,
      value: fileGBs,
      unit: "GB/s",
      floor: shaGBs,
      ratio: fileGBs / shaGBs,
      ...(big ? { target: ">= 0.6x sha256", pass: fileGBs / shaGBs >= 0.6 } : {}),
    });
    Deno.removeSync(path);
  }
  client.close();
}

// ---- c + f. lookups with many objects, broker memory per object --------------------------------

async function manyObjects(): Promise<void> {
  console.error("c. GET by name with 10 and many objects; f. broker memory");
  await using broker = await BrokerProcess.start(dir);
  await new Promise((r) => setTimeout(r, 300));
  const rss0 = rssKiB(broker.pid);
  const client = new Client({ socket: broker.socket, jobId: null });
  using memfd = Memfd.create("tiny");
  memfd.writeAll(new TextEncoder().encode("0123456789abcdef"));
  memfd.seal();
  const digest = new DigestBuilder().update(new TextEncoder().encode("0123456789abcdef")).digest();
  const put = (name: string): Promise<bigint> =>
    client.putSealed(memfd.fd, { size: 16, digest, name: new TextEncoder().encode(name) });
  for (let i = 0; i < 10; i++) await put(`obj-${i}`);
  const n = quick ? 300 : 2000;
  const get = (name: string) => async () => (await client.get({ name })).close();
  // A long warm-up: the 10-object figure is the baseline the many-object ones are compared to.
  await timeIt(3000, get("obj-9"));
  const newest10 = stats(await timeIt(n, get("obj-9")));
  const oldest10 = stats(await timeIt(n, get("obj-0")));

  const hard = Number(
    Deno.readTextFileSync(`/proc/${broker.pid}/limits`).match(
      /Max open files\s+\d+\s+(\d+)/,
    )?.[1] ?? 1024,
  );
  const target = quick ? 5000 : Math.min(hard - 1000, 19_000);
  let rss10k = 0;
  for (let i = 10; i < target; i++) {
    await put(`obj-${i}`);
    if (i + 1 === 10_010) {
      await new Promise((r) => setTimeout(r, 200));
      rss10k = rssKiB(broker.pid);
    }
  }
  const last = `obj-${target - 1}`;
  await timeIt(200, get(last));
  const newestMany = stats(await timeIt(n, get(last)));
  const oldestMany = stats(await timeIt(n, get("obj-0")));
  client.close();
  row({
    section: "c",
    metric: "get by name, 10 objects (newest) p50",
    value: newest10.p50,
    unit: "us",
  });
  row({
    section: "c",
    metric: "get by name, 10 objects (oldest) p50",
    value: oldest10.p50,
    unit: "us",
  });
  for (
    const [what, s, base] of [["newest", newestMany, newest10], [
      "oldest",
      oldestMany,
      oldest10,
    ]] as const
  ) {
    row({
      section: "c",
      metric: `get by name, ${target} objects (${what}) p50`,
      value: s.p50,
      unit: "us",
      floor: base.p50,
      ratio: s.p50 / base.p50,
      target: "<= 1.3x the 10-object latency",
      pass: s.p50 / base.p50 <= 1.3,
    });
  }
  row({ section: "f", metric: "broker RSS idle", value: rss0 / 1024, unit: "MiB" });
  if (rss10k > 0) {
    const per = ((rss10k - rss0) * 1024) / 10_000;
    row({
      section: "f",
      metric: "broker RSS growth per object (incl. garbage)",
      value: per,
      unit: "bytes",
    });
  }
  // What the broker retains per object, without garbage: heap after forced collections.
  const mem = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", `${ROOT}/bench/memory.ts`, "10000"],
    stdout: "piped",
    stderr: "inherit",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).output();
  const m = JSON.parse(new TextDecoder().decode(mem.stdout)) as { heapPerObject: number };
  row({
    section: "f",
    metric: "broker heap retained per object (after GC)",
    value: m.heapPerObject,
    unit: "bytes",
    target: "<= 1024 bytes",
    pass: m.heapPerObject <= 1024,
  });
}

// ---- d. other clients' latency while one client publishes 1 GiB -------------------------------

async function duringBigPut(): Promise<void> {
  console.error("d. LIST and GET latency during a large publish");
  await using broker = await BrokerProcess.start(dir);
  const size = quick ? 256 * MiB : GiB;
  const path = `${dir}/big.bin`;
  Deno.writeFileSync(path, patternBytes(size));
  const client = new Client({ socket: broker.socket, keepAlive: false, jobId: null });
  const { id } = await client.put(patternBytes(4 * KiB), { name: "small" });
  const publisher = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, "put", path, "--name", "big", "--socket", broker.socket],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let done = false;
  const status = publisher.output().then((o) => {
    done = true;
    return o;
  });
  const lists: number[] = [];
  const gets: number[] = [];
  while (!done) {
    let t0 = performance.now();
    await client.listRaw();
    lists.push((performance.now() - t0) * 1000);
    t0 = performance.now();
    (await client.get(id)).close();
    gets.push((performance.now() - t0) * 1000);
  }
  const out = await status;
  if (out.code !== 0) throw new Error(`publisher failed: ${new TextDecoder().decode(out.stderr)}`);
  client.close();
  Deno.removeSync(path);
  for (const [what, t] of [["LIST", lists], ["GET", gets]] as const) {
    const s = stats(t);
    row({ section: "d", metric: `${what} during publish p50`, value: s.p50 / 1000, unit: "ms" });
    row({
      section: "d",
      metric: `${what} during publish p99`,
      value: s.p99 / 1000,
      unit: "ms",
      target: "<= 20 ms",
      pass: s.p99 / 1000 <= 20,
    });
    row({ section: "d", metric: `${what} during publish max`, value: s.max / 1000, unit: "ms" });
  }
}

// ---- e. 16 concurrent clients ---------------------------------------------------------------

async function concurrent(): Promise<void> {
  console.error("e. 16 concurrent clients");
  await using broker = await BrokerProcess.start(dir);
  const client = new Client({ socket: broker.socket, jobId: null });
  const { id } = await client.put(patternBytes(4 * KiB), { name: "c" });
  client.close();
  const ms = quick ? 1500 : 3000;
  for (const keep of [false, true]) {
    const procs = Array.from({ length: 4 }, () =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}/bench/load.ts`,
          broker.socket,
          "4",
          String(ms),
          String(keep),
          String(id),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output());
    const outs = (await Promise.all(procs)).map((o) =>
      JSON.parse(new TextDecoder().decode(o.stdout)) as { ok: number; errors: number; p99: number }
    );
    const ok = outs.reduce((a, o) => a + o.ok, 0);
    const errors = outs.reduce((a, o) => a + o.errors, 0);
    const label = keep ? "kept connections" : "new connection per get";
    row({
      section: "e",
      metric: `16 clients, ${label}: gets/s`,
      value: ok / (ms / 1000),
      unit: "ops/s",
    });
    row({
      section: "e",
      metric: `16 clients, ${label}: errors`,
      value: errors,
      unit: "",
      target: "0",
      pass: errors === 0,
    });
    row({
      section: "e",
      metric: `16 clients, ${label}: p99`,
      value: Math.max(...outs.map((o) => o.p99)),
      unit: "us",
    });
  }
}

// ---- f. CLI wall time against an empty deno run ----------------------------------------------

async function cliWall(): Promise<void> {
  console.error("f. CLI wall time");
  await using broker = await BrokerProcess.start(dir);
  const empty = `${dir}/empty.ts`;
  Deno.writeTextFileSync(empty, "");
  const runs = quick ? 5 : 15;
  const wall = async (args: string[]): Promise<number> => {
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const o = await new Deno.Command(Deno.execPath(), { args, stdout: "null", stderr: "null" })
        .output();
      if (o.code !== 0) throw new Error(`${args.join(" ")} failed`);
      times.push(performance.now() - t0);
    }
    return stats(times).p50;
  };
  const floor = await wall(["run", empty]);
  const list = await wall(["run", ...CLI_PERMS, CLI, "list", "--socket", broker.socket]);
  row({ section: "f", metric: "deno run empty script (floor)", value: floor, unit: "ms" });
  row({
    section: "f",
    metric: "memfdbus list (one CLI command)",
    value: list,
    unit: "ms",
    floor,
    target: "<= floor + 40 ms",
    pass: list <= floor + 40,
  });
}

// ---- g. cost of the shadow per PUT -----------------------------------------------------------

async function shadowCost(): Promise<void> {
  console.error("g. PUT latency with and without --shadow");
  const n = quick ? 300 : 2000;
  const bytes = patternBytes(4 * KiB);
  const measure = async (args: string[]): Promise<number> => {
    await using broker = await BrokerProcess.start(dir, args);
    const client = new Client({ socket: broker.socket, jobId: null });
    await timeIt(100, async () => void (await client.put(bytes, { name: "warm" })));
    const s = stats(await timeIt(n, async () => void (await client.put(bytes, { name: "p" }))));
    client.close();
    return s.p50;
  };
  const plain = await measure([]);
  const shadowPath = `${dir}/shadow-${crypto.randomUUID().slice(0, 8)}.sock`;
  // The shadow outlives its broker by design. Start it here, so this process knows its pid and
  // ends exactly it (the broker attaches to a running shadow instead of starting one).
  const shadow = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, "shadow", "--socket", shadowPath],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  let mirrored: number;
  try {
    await waitFor(
      () => {
        try {
          return Deno.lstatSync(shadowPath).isSocket;
        } catch {
          return false;
        }
      },
      { what: `the shadow's socket ${shadowPath}`, timeoutMs: 30_000 },
    );
    mirrored = await measure(["--shadow", shadowPath]);
  } finally {
    shadow.kill("SIGTERM");
    await shadow.status;
  }
  row({ section: "g", metric: "put 4 KiB, kept connection p50", value: plain, unit: "us" });
  row({
    section: "g",
    metric: "put 4 KiB with --shadow p50",
    value: mirrored,
    unit: "us",
    floor: plain,
    ratio: mirrored / plain,
  });
  row({ section: "g", metric: "shadow cost per put", value: mirrored - plain, unit: "us" });
}

async function governanceCost(): Promise<void> {
  console.error("h. cost of retention and dedup per PUT; publish -> watcher event latency");
  const n = quick ? 300 : 2000;
  const bytes = patternBytes(4 * KiB);
  let seq = 0;
  const fresh = (): Uint8Array => {
    // Distinct contents (no dedup hit) unless asked otherwise.
    new DataView(bytes.buffer, bytes.byteOffset).setUint32(0, ++seq, true);
    return bytes;
  };
  const measure = async (args: string[], same: boolean): Promise<number> => {
    await using broker = await BrokerProcess.start(dir, ["--max-objects", "1000000", ...args]);
    const client = new Client({ socket: broker.socket, jobId: null });
    const data = (): Uint8Array => (same ? bytes : fresh());
    await timeIt(100, async () => void (await client.put(data(), { name: "warm" })));
    const s = stats(await timeIt(n, async () => void (await client.put(data(), { name: "p" }))));
    client.close();
    return s.p50;
  };
  const plain = await measure(["--no-dedup"], false);
  const dedupMiss = await measure([], false);
  const dedupHit = await measure([], true);
  const retention = await measure(["--no-dedup", "--keep-versions", "2"], false);
  row({ section: "h", metric: "put 4 KiB, no dedup, keep all p50", value: plain, unit: "us" });
  for (
    const [metric, value] of [
      ["put 4 KiB, dedup on, new content p50", dedupMiss],
      ["put 4 KiB, dedup hit (same content) p50", dedupHit],
      ["put 4 KiB, --keep-versions 2 (one release each) p50", retention],
    ] as const
  ) {
    row({ section: "h", metric, value, unit: "us", floor: plain, ratio: value / plain });
  }

  await using broker = await BrokerProcess.start(dir, ["--keep-versions", "1"]);
  const client = new Client({ socket: broker.socket, jobId: null });
  const watchClient = new Client({ socket: broker.socket, jobId: null });
  using watch = await watchClient.watch({ name: "w" });
  let arrived = (): void => {};
  const loop = (async () => {
    for await (const ev of watch) if (ev.kind === "publish") arrived();
  })();
  await client.put(fresh(), { name: "w" });
  const events: number[] = [];
  for (let i = 0; i < n; i++) {
    const got = new Promise<void>((resolve) => (arrived = resolve));
    const t0 = performance.now();
    await Promise.all([got, client.put(fresh(), { name: "w" })]);
    events.push((performance.now() - t0) * 1000);
  }
  const gets = await timeIt(n, async () => void (await client.get({ name: "w" })).close());
  watch.close();
  await loop;
  client.close();
  watchClient.close();
  const e = stats(events);
  const g = stats(gets);
  row({
    section: "h",
    metric: "get round trip, kept connection p50 (floor)",
    value: g.p50,
    unit: "us",
  });
  row({
    section: "h",
    metric: "publish -> watcher event p50",
    value: e.p50,
    unit: "us",
    floor: g.p50,
    ratio: e.p50 / g.p50,
  });
  row({ section: "h", metric: "publish -> watcher event p99", value: e.p99, unit: "us" });
}

const sections: Record<string, () => Promise<void>> = {
  a: latency,
  b: throughput,
  c: manyObjects,
  d: duringBigPut,
  e: concurrent,
  f: cliWall,
  g: shadowCost,
  h: governanceCost,
};
const only = Deno.args.filter((a) => /^[a-h]$/.test(a));
const against = Deno.args.includes("--against");
try {
  if (against) {
    console.error("x. side by side with another broker binary");
    const side = await sideBySide(Deno.args, dir);
    for (const r of side) {
      if (r.broker === "other") continue;
      const other = side.find((o) =>
        o.broker === "other" && o.metric === r.metric && o.mode === r.mode
      );
      const base = other?.value ?? 0;
      // Ratio as "our cost over theirs": time over time, or their rate over ours.
      const ratio = base === 0 ? undefined : r.unit === "us" ? r.value / base : base / r.value;
      const floor = r.broker === "floor";
      row({
        section: "x",
        metric: `${r.mode}: ${floor ? "Deno floor broker, " : ""}${r.metric} (other ${
          base.toFixed(1)
        })`,
        value: r.value,
        unit: r.unit,
        ...(ratio === undefined ? {} : { floor: base, ratio }),
        ...(floor ? {} : { target: "<= 1.0x other" }),
        ...(ratio === undefined || floor ? {} : { pass: ratio <= 1 }),
      });
    }
  }
  for (const [name, run] of Object.entries(sections)) {
    if (against && only.length === 0) break;
    if (only.length === 0 || only.includes(name)) await run();
  }
} finally {
  Deno.removeSync(dir, { recursive: true });
}

const widths = [8, 64, 12, 7, 8, 30, 5];
const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 10)).join(" ");
console.log(line(["section", "metric", "value", "unit", "ratio", "target", "ok"]));
for (const r of rows) {
  console.log(line([
    r.section,
    r.metric,
    r.value.toFixed(r.value >= 100 ? 0 : 2),
    r.unit,
    r.ratio === undefined ? "" : r.ratio.toFixed(2),
    r.target ?? "",
    r.pass === undefined ? "" : r.pass ? "yes" : "NO",
  ]));
}
const report = {
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  cpus: navigator.hardwareConcurrency,
  kernel: Deno.osRelease(),
  quick,
  rows,
};
Deno.mkdirSync(outFile.slice(0, outFile.lastIndexOf("/")), { recursive: true });
Deno.writeTextFileSync(outFile, JSON.stringify(report, null, 2) + "\n");
console.log(`\nJSON: ${outFile}`);
await waitFor(() => true, { what: "nothing (one turn of the event loop)" });
