/**
 * Broker memory per stored object, measured without garbage: an in-process broker holds N
 * objects published by a client in the same process, and the JavaScript heap and RSS are read
 * after forced garbage collections before and after. Run with `--v8-flags=--expose-gc`; prints
 * one JSON line. Used by bench/bench.ts. Arguments: the object count (10000) and, optionally, the
 * name length in bytes (default: short names `obj-<i>`, 5 to 8 bytes), as used to measure the
 * per-object metadata charge of `--max-metadata-bytes` (src/core/store.ts).
 *
 * @module
 */

import { Broker } from "../src/broker.ts";
import { Client } from "../src/client.ts";
import { digestBytes } from "../src/hash/digest.ts";
import { Memfd } from "../src/sys/memfd.ts";

const count = Number(Deno.args[0] ?? "10000");
const nameBytes = Deno.args[1] === undefined ? 0 : Number(Deno.args[1]);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");

function settle(): { heap: number; rss: number } {
  for (let i = 0; i < 4; i++) gc?.();
  const m = Deno.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

const dir = Deno.makeTempDirSync({ prefix: "memfdbus-mem-" });
const broker = await Broker.start({ socket: `${dir}/m.sock`, audit: null });
const client = new Client({ socket: `${dir}/m.sock`, jobId: null });
const bytes = new TextEncoder().encode("0123456789abcdef");
using memfd = Memfd.create("m");
memfd.writeAll(bytes);
memfd.seal();
const digest = digestBytes(bytes);
const nameOf = (i: number): string =>
  nameBytes === 0 ? `obj-${i}` : `obj-${i}-`.padEnd(nameBytes, "n");
const put = (i: number): Promise<bigint> =>
  client.putSealed(memfd.fd, { size: 16, digest, name: new TextEncoder().encode(nameOf(i)) });

// Warm up code paths and caches, then measure the store alone.
for (let i = 0; i < 200; i++) await client.drop(await put(i));
const before = settle();
for (let i = 0; i < count; i++) await put(i);
const after = settle();
client.close();
await broker.close();
Deno.removeSync(dir, { recursive: true });
console.log(JSON.stringify({
  count,
  nameBytes: nameBytes === 0 ? `obj-${count - 1}`.length : nameBytes,
  heapPerObject: (after.heap - before.heap) / count,
  rssPerObject: (after.rss - before.rss) / count,
}));
