/**
 * Memory governance on the real broker process and CLI (issue 12, points 1-4 and 8): retention
 * releasing the oldest version while a consumer holds its descriptor, a job over its quota
 * refused while another job publishes, the order of eviction, and dedup halving the memory the
 * broker holds and charges (memfds and their sizes read from /proc/PID/fd of the broker).
 */
import { assertEquals, ok, rejects } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { BrokerProcess, cli, digestOf, enc, fdTable, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

/** The memfds open in a process: descriptor number to size. */
function memfds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const [fd, target] of fdTable(pid)) {
    if (!target.startsWith("/memfd:")) continue;
    try {
      out.set(fd, Deno.statSync(`/proc/${pid}/fd/${fd}`).size);
    } catch {
      // Closed while listing.
    }
  }
  return out;
}

/** Distinct bytes of `size` for `seed`. */
function blob(seed: number, size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (seed * 131 + i * 7) & 0xff;
  return out;
}

async function memfdsSettle(
  broker: BrokerProcess,
  count: number,
  what: string,
): Promise<Map<number, number>> {
  let last = new Map<number, number>();
  await waitFor(() => (last = memfds(broker.pid)).size === count, { what: what, timeoutMs: 10_000 })
    .catch((e) => {
      throw new Error(`${(e as Error).message}: the broker holds ${last.size} memfds`);
    });
  return last;
}

Deno.test("--keep-versions 2 releases the oldest version while a consumer still holds its descriptor", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--keep-versions", "2"]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  const v1 = await client.put(blob(1, 4096), { name: "model/w" });
  const v2 = await client.put(blob(2, 4096), { name: "model/w" });
  using held = await client.get(v1.id);
  const v3 = await client.put(blob(3, 4096), { name: "model/w" });

  assertEquals((await client.list()).map((e) => e.id), [v2.id, v3.id]);
  await rejects(
    client.get(v1.id),
    (e) => e instanceof BrokerError && e.text === "object not found",
  );
  // The consumer's descriptor still reads the released version's bytes.
  assertEquals(digestOf(held.view), digestOf(blob(1, 4096)));
  await memfdsSettle(broker, 2, "the broker to hold two memfds");

  const lines = await broker.waitAudit(6);
  const release = lines.find((l) => l.op === "release");
  ok(release !== undefined, JSON.stringify(lines));
  assertEquals(
    [release.result, release.object_id, release.name, release.reason, release.cause_id],
    ["ok", Number(v1.id), "model/w", "retention", Number(v3.id)],
  );
  assertEquals(release.error, null);
});

Deno.test("per-prefix retention in the config keeps 1 of model/* and all of other names", async () => {
  using dir = tempDir();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(config, `{ "retention": { "model/*": 1 } }`);
  await using broker = await BrokerProcess.start(dir.path, ["--config", config]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  for (let i = 0; i < 3; i++) {
    await client.put(blob(10 + i, 64), { name: "model/a" });
    await client.put(blob(20 + i, 64), { name: "logs/a" });
  }
  assertEquals((await client.list()).map((e) => `${e.name}:${e.id}`), [
    "logs/a:2",
    "logs/a:4",
    "model/a:5",
    "logs/a:6",
  ]);
});

Deno.test("a job over its quota is refused with a text naming the quota while another job publishes", async () => {
  using dir = tempDir();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(
    config,
    `{ "quotas": { "jobs": { "alpha": { "objects": 2, "bytes": "1MiB" } } } }`,
  );
  await using broker = await BrokerProcess.start(dir.path, ["--config", config]);
  const files = [1, 2, 3, 4].map((i) => {
    const path = `${dir.path}/f${i}`;
    Deno.writeFileSync(path, blob(i, 1000));
    return path;
  });
  const s = ["--socket", broker.socket];
  for (const f of files.slice(0, 2)) {
    const r = await cli(["put", f, "--name", "a", "--job-id", "alpha", ...s]);
    assertEquals([r.code, r.stderr], [0, ""]);
  }
  const refused = await cli(["put", files[2] ?? "", "--name", "a", "--job-id", "alpha", ...s]);
  assertEquals(refused.code, 1);
  assertEquals(
    refused.stderr,
    "broker error: job quota exceeded: job alpha holds 2 of 2 objects; " +
      "drop old versions or raise quotas.jobs\n",
  );
  // Another job (and an unscoped client) still publishes.
  for (const job of ["beta", "gamma"]) {
    const r = await cli(["put", files[3] ?? "", "--name", job, "--job-id", job, ...s]);
    assertEquals([r.code, r.stderr], [0, ""]);
  }
  // Once alpha drops a version, it may publish again.
  assertEquals((await cli(["drop", "1", "--job-id", "alpha", ...s])).code, 0);
  assertEquals(
    (await cli(["put", files[2] ?? "", "--name", "a", "--job-id", "alpha", ...s])).code,
    0,
  );
  const put = (await broker.waitAudit(7)).filter((l) => l.op === "put");
  assertEquals(put.map((l) => l.result), ["ok", "ok", "error", "ok", "ok", "ok"]);
});

Deno.test("--evict superseded releases superseded versions least recently fetched first, then refuses", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, [
    "--evict",
    "superseded",
    "--max-objects",
    "4",
  ]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  const a1 = await client.put(blob(1, 100), { name: "a" });
  await client.put(blob(2, 100), { name: "a" });
  const b1 = await client.put(blob(3, 100), { name: "b" });
  await client.put(blob(4, 100), { name: "b" });
  (await client.get(a1.id)).close(); // a1 was fetched; b1 never was
  const c1 = await client.put(blob(5, 100), { name: "c" }); // evicts b1
  await client.put(blob(6, 100), { name: "c" }); // c1 (never fetched) goes before a1
  await client.put(blob(7, 100), { name: "d" }); // only a1 is superseded now
  await rejects(
    client.put(blob(8, 100), { name: "e" }),
    (e) => e instanceof BrokerError && e.text === "broker object quota exceeded",
  );
  assertEquals((await client.list()).map((e) => e.name).join(","), "a,b,c,d");
  const evicted = (await broker.waitAudit(12)).filter((l) => l.op === "evict");
  assertEquals(
    evicted.map((l) => [l.object_id, l.reason]),
    [[Number(b1.id), "broker_objects"], [Number(c1.id), "broker_objects"], [
      Number(a1.id),
      "broker_objects",
    ]],
  );
  await memfdsSettle(broker, 4, "four memfds after the evictions");
});

Deno.test("identical content is stored once: half the memfds and bytes, charged once, stat says shared", async () => {
  using dir = tempDir();
  const size = 1 << 20;
  const data = blob(42, size);
  const config = `${dir.path}/bus.jsonc`;
  // 1.5 MiB for alpha: two identical 1 MiB objects fit only when charged once.
  Deno.writeTextFileSync(config, `{ "quotas": { "jobs": { "alpha": { "bytes": 1572864 } } } }`);
  const held: number[][] = [];
  for (const dedup of [false, true]) {
    await using broker = await BrokerProcess.start(
      dir.path,
      dedup ? ["--config", config] : ["--config", config, "--no-dedup"],
    );
    await using client = new Client({ socket: broker.socket, jobId: "alpha" });
    const first = await client.put(data, { name: "x" });
    const second = dedup
      ? await client.put(data, { name: "y" })
      : await client.put(data, { name: "y" }).catch((e) => e as BrokerError);
    if (!dedup) {
      // Without dedup alpha is charged twice and the second copy does not fit.
      ok(second instanceof BrokerError, "the second copy was refused");
      assertEquals(
        second.text,
        `job quota exceeded: job alpha holds ${size} of 1572864 bytes, this put needs ${size}; ` +
          "drop old versions or raise quotas.jobs",
      );
      await using unscoped = new Client({ socket: broker.socket, jobId: null });
      await unscoped.put(data, { name: "y" });
    }
    const fds = await memfdsSettle(broker, dedup ? 1 : 2, "memfds for two identical objects");
    held.push([...fds.values()]);
    using x = await client.get({ name: "x" });
    using y = await client.get({ name: "y" });
    assertEquals([digestOf(x.view), digestOf(y.view)], [digestOf(data), digestOf(data)]);
    const st = await client.stat(first.id);
    assertEquals(st.shared, dedup);
    if (dedup) {
      assertEquals(st.ownerUsage, { objects: 2, bytes: size });
      ok(!(second instanceof BrokerError));
      // Dropping one keeps the shared memfd; dropping both closes it.
      await client.drop(second.id);
      await memfdsSettle(broker, 1, "the shared memfd kept after one drop");
      assertEquals(digestOf(x.view), digestOf(data), "the consumer's bytes after the drops");
      await client.drop(first.id);
      x.close();
      y.close();
      await memfdsSettle(broker, 0, "no memfd after both drops");
    }
  }
  assertEquals(held, [[size, size], [size]]);
});

Deno.test("a uid quota in the config refuses a publisher by its kernel-reported uid", async () => {
  using dir = tempDir();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(config, `{ "quotas": { "perUid": { "objects": 1 } } }`);
  await using broker = await BrokerProcess.start(dir.path, ["--config", config]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  await client.put(enc("one"), { name: "u" });
  const uid = Deno.uid();
  await rejects(
    client.put(enc("two"), { name: "u" }),
    (e) =>
      e instanceof BrokerError &&
      e.text ===
        `uid quota exceeded: uid ${uid} holds 1 of 1 objects; drop old versions or raise quotas.perUid`,
  );
});

Deno.test("eviction skips the versions of a pinned name, evicts the next one, and refuses when only pinned ones remain", async () => {
  using dir = tempDir();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(config, `{ "pin": ["model/*"], "evict": "superseded" }`);
  await using broker = await BrokerProcess.start(dir.path, [
    "--config",
    config,
    "--max-objects",
    "4",
  ]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  const m1 = await client.put(blob(1, 100), { name: "model/w" }); // superseded, least recent
  await client.put(blob(2, 100), { name: "model/w" });
  const b1 = await client.put(blob(3, 100), { name: "b" });
  await client.put(blob(4, 100), { name: "b" });
  await client.put(blob(5, 100), { name: "c" }); // evicts b1, not the pinned m1
  await rejects(
    client.put(blob(6, 100), { name: "d" }), // only m1 is superseded: pinned
    (e) => e instanceof BrokerError && e.text === "broker object quota exceeded",
  );
  using kept = await client.get(m1.id);
  assertEquals(digestOf(kept.view), digestOf(blob(1, 100)));
  const evicted = (await broker.waitAudit(7)).filter((l) => l.op === "evict");
  assertEquals(evicted.map((l) => [l.object_id, l.reason]), [[Number(b1.id), "broker_objects"]]);
  await memfdsSettle(broker, 4, "four memfds: the pinned version kept");
});

Deno.test("a pin in the config must be a name or a prefix ending in one *", async () => {
  using dir = tempDir();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(config, `{\n  "pin": ["model/*", "a*b"]\n}`);
  const r = await cli(["broker", "--config", config, "--socket", `${dir.path}/s.sock`]);
  assertEquals(r.code, 2);
  ok(
    r.stderr.includes(`${config}:2: pin: expected names, or prefixes ending in one *`),
    r.stderr,
  );
});
