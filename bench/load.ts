/**
 * A load generator process for the benchmark: `load.ts SOCKET CLIENTS MILLISECONDS KEEPALIVE ID`
 * runs CLIENTS concurrent loops of GET by id for the given time and prints one JSON line with
 * the count of successful gets, errors and latency percentiles (microseconds).
 *
 * @module
 */

import { Client } from "../src/client.ts";

const [socket = "/tmp/memfdbus.sock", clients = "4", ms = "3000", keep = "true", id = "1"] =
  Deno.args;
const end = performance.now() + Number(ms);
let ok = 0;
let errors = 0;
const times: number[] = [];
const firstError: string[] = [];

async function loop(): Promise<void> {
  await using client = new Client({ socket, keepAlive: keep === "true", jobId: null });
  while (performance.now() < end) {
    const t0 = performance.now();
    try {
      using obj = await client.get(BigInt(id));
      if (obj.size < 0) throw new Error("impossible");
      ok++;
      times.push((performance.now() - t0) * 1000);
    } catch (e) {
      errors++;
      if (firstError.length === 0) firstError.push(String(e));
    }
  }
}

await Promise.all(Array.from({ length: Number(clients) }, loop));
times.sort((a, b) => a - b);
const pct = (p: number): number =>
  times[Math.min(times.length - 1, Math.floor(p * times.length))] ?? 0;
console.log(
  JSON.stringify({ ok, errors, p50: pct(0.5), p99: pct(0.99), firstError: firstError[0] ?? null }),
);
