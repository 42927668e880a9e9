/**
 * Descriptor accounting: after thousands of mixed operations (kept-alive and one-shot clients,
 * errors of every status, the CLI), the broker holds exactly one descriptor per stored object
 * plus the fixed set it had at start.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { type BrokerProcess, cli, tempDir } from "../support/harness.ts";
import { expectFdCount, startBroker } from "../support/faults.ts";
import { Rng } from "../support/fuzz_engine.ts";

const OPS = 10_000;

/** The broker's descriptors once idle, after one of each request (and a Worker-hashed PUT). */
async function fixedSet(broker: BrokerProcess): Promise<number> {
  {
    await using c = new Client({ socket: broker.socket, jobId: null });
    const small = await c.put(new Uint8Array(10), { name: "warm" });
    const big = await c.put(new Uint8Array(3 << 20), { name: "warm-big" });
    (await c.get(small.id)).close();
    await c.list();
    await c.drop(small.id);
    await c.drop(big.id);
  }
  return await broker.settledFdCount();
}

interface Live {
  id: bigint;
  name: string;
  owner: string | null;
  bytes: Uint8Array;
}

Deno.test(`after ${OPS} mixed operations the broker holds one descriptor per object plus its fixed set`, async () => {
  using dir = tempDir();
  // One descriptor per object: identical contents are not shared (dedup has its own tests).
  await using broker = await startBroker(dir.path, ["--no-dedup"]);
  const fixed = await fixedSet(broker);
  const live = new Map<bigint, Live>();
  const problems: string[] = [];
  const counts = new Map<string, number>();
  const count = (k: string): void => void counts.set(k, (counts.get(k) ?? 0) + 1);
  let done = 0;

  const worker = async (w: number, ops: number, keepAlive: boolean): Promise<void> => {
    const r = new Rng(0xfd00 + w);
    let client = new Client({ socket: broker.socket, jobId: null, keepAlive });
    try {
      for (let i = 0; i < ops; i++, done++) {
        if (i % 500 === 499) {
          // Drop this client (and its idle connections) and start a fresh one.
          client.close();
          client = new Client({ socket: broker.socket, jobId: null, keepAlive });
        }
        const op = r.int(100);
        const ids = [...live.keys()];
        const pick = ids[r.int(ids.length)];
        const target = pick === undefined ? undefined : live.get(pick);
        try {
          if (op < 40 || target === undefined) {
            const owner = r.chance(0.2) ? "alpha" : null;
            const size = r.chance(0.005) ? (2 << 20) + r.int(1000) : r.int(3000);
            const bytes = r.bytes(size);
            const name = `w${w}-${r.int(20)}`;
            const res = await client.put(bytes, { name, jobId: owner });
            live.set(res.id, { id: res.id, name, owner, bytes });
            count("put");
          } else if (op < 65) {
            // By id or newest by name; sometimes as a job that may not see it.
            const job = r.chance(0.1) ? "beta" : null;
            const byName = r.chance(0.3);
            try {
              using o = await client.get(byName ? { name: target.name } : target.id, {
                jobId: job,
              });
              if (!byName && o.size !== target.bytes.length) problems.push(`GET ${target.id} size`);
              count("get");
            } catch (e) {
              if (!(e instanceof BrokerError)) throw e;
              // Dropped meanwhile by another worker, or hidden from job "beta".
              if (e.status !== 2 && e.status !== 4) throw e;
              count(`get-${e.status}`);
            }
          } else if (op < 75) {
            await client.list({ jobId: r.chance(0.3) ? "alpha" : null });
            count("list");
          } else {
            try {
              live.delete(target.id);
              await client.drop(target.id, { jobId: r.chance(0.1) ? "beta" : null });
              count("drop");
            } catch (e) {
              if (!(e instanceof BrokerError)) throw e;
              if (e.status === 4) live.set(target.id, target); // "beta" may not drop it.
              else if (e.status !== 2) throw e;
              count(`drop-${e.status}`);
            }
          }
        } catch (e) {
          problems.push(`worker ${w} op ${i}: ${(e as Error).message}`);
          if (problems.length > 10) return;
        }
      }
    } finally {
      client.close();
    }
  };

  const checkpoint = async (label: string): Promise<void> => {
    // Idle kept-alive connections were closed with their clients; the broker sees the EOFs.
    await expectFdCount(broker, fixed + live.size).catch((e) => {
      throw new Error(`${label}: ${(e as Error).message}`);
    });
  };

  const perRound = OPS / 4;
  for (let round = 0; round < 4; round++) {
    await Promise.all([
      worker(round * 4 + 0, perRound / 4, true),
      worker(round * 4 + 1, perRound / 4, true),
      worker(round * 4 + 2, perRound / 4, false),
      worker(round * 4 + 3, perRound / 4, false),
    ]);
    assertEquals(problems, []);
    await checkpoint(`after round ${round + 1}`);
  }
  assertEquals(done, OPS);
  for (const k of ["put", "get", "list", "drop", "get-4"]) ok((counts.get(k) ?? 0) > 0, `no ${k}`);

  // The CLI: exec hands the descriptor to a command, and put/get/list/drop work as usual.
  const some = [...live.values()].filter((o) => o.owner === null).slice(0, 3);
  for (const o of some) {
    const r = await cli([
      "exec",
      String(o.id),
      "--socket",
      broker.socket,
      "--",
      "sh",
      "-c",
      'wc -c < /proc/self/fd/$MEMFDBUS_FD; test "$MEMFDBUS_OBJECT_ID" = ' + o.id,
    ]);
    assertEquals([r.code, r.stdout.trim(), r.stderr], [0, String(o.bytes.length), ""]);
  }
  Deno.writeFileSync(`${dir.path}/in.bin`, new Uint8Array([1, 2, 3]));
  const put = await cli(["put", `${dir.path}/in.bin`, "--socket", broker.socket]);
  assertEquals(put.code, 0);
  const cliId = BigInt(put.stdout.trim());
  const get = await cli(["get", String(cliId), "-", "--socket", broker.socket]);
  assertEquals([...get.stdoutBytes], [1, 2, 3]);
  assertEquals((await cli(["list", "--socket", broker.socket])).code, 0);
  assertEquals(
    (await cli(["drop", String(cliId), "--socket", broker.socket])).stdout,
    `${cliId}\n`,
  );
  await checkpoint("after the CLI");

  // Listing agrees with the model, and dropping everything returns to the fixed set.
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  assertEquals(
    (await c.list()).map((e) => e.id),
    [...live.keys()].sort((a, b) => (a < b ? -1 : 1)),
  );
  for (const id of live.keys()) await c.drop(id);
  live.clear();
  await checkpoint("after dropping everything");
  assertEquals((await broker.stop()).code, 0);
});
