/**
 * WATCH on the real broker process and CLI (issue 12, points 5 and 8): every event of a burst of
 * 1,000 publishes in order, the kinds (publish, drop, retention release, eviction), the policy
 * (a job sees what it may list), `memfdbus watch --once --json`, a clean close on break, and a
 * watch that carries on across `memfdbus broker --takeover`.
 */
import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import type { BusEvent } from "../../src/client/watch.ts";
import { BrokerProcess, CLI, CLI_PERMS, enc, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

/** Collect events of a watch in the background. */
function collect(watch: AsyncIterable<BusEvent>): { events: BusEvent[]; done: Promise<void> } {
  const events: BusEvent[] = [];
  const done = (async () => {
    for await (const e of watch) events.push(e);
  })();
  return { events, done };
}

async function watchersOk(broker: BrokerProcess, n: number): Promise<void> {
  await waitFor(
    () => broker.audit().filter((l) => l.op === "watch" && l.result === "ok").length >= n,
    { what: `${n} accepted watch requests in the audit log`, timeoutMs: 10_000 },
  );
}

Deno.test("a watcher receives every event of a burst of 1,000 publishes, in order", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  await using client = new Client({ socket: broker.socket, jobId: null });
  using watch = await client.watch({ prefix: "burst/" });
  const seen = collect(watch);
  const ids: bigint[] = [];
  await client.put(enc("other"), { name: "elsewhere" }); // not under the prefix
  for (let i = 0; i < 1000; i++) {
    ids.push((await client.put(enc(`v${i}`), { name: `burst/${i % 7}` })).id);
  }
  await waitFor(() => seen.events.length >= 1000, { what: "1,000 events", timeoutMs: 30_000 });
  assertEquals(seen.events.map((e) => BigInt(e.id)), ids);
  ok(
    seen.events.every((e, i) =>
      e.kind === "publish" && e.missed === 0 && e.name === `burst/${i % 7}`
    ),
  );
  assertEquals(seen.events[0]?.size, 2);
  watch.close();
  await seen.done;
  await waitFor(() => broker.audit().length >= 1002, { what: "audit records" });
});

Deno.test("drop, retention release and eviction arrive as their own kinds; a job sees only what it may list", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, [
    "--keep-versions",
    "2",
    "--evict",
    "superseded",
    "--max-objects",
    "4",
  ]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  using all = await client.watch({});
  using beta = await client.watch({}, { jobId: "beta" });
  const a = collect(all);
  const b = collect(beta);
  const n1 = await client.put(enc("1"), { name: "n" });
  await client.put(enc("2"), { name: "n" });
  await client.put(enc("3"), { name: "n" }); // retention releases n1
  await client.put(enc("s"), { name: "secret", jobId: "alpha" });
  const shared = await client.put(enc("v"), { name: "shared", jobId: "alpha", allowJob: "beta" });
  // A fifth object would exceed four: the superseded n2 is evicted.
  await client.put(enc("z"), { name: "z" });
  await client.drop(shared.id);
  await waitFor(() => a.events.length >= 9, {
    what: "nine events for the unscoped watcher",
    timeoutMs: 10_000,
  });
  assertEquals(a.events.map((e) => `${e.kind}:${e.name}:${e.id}`), [
    "publish:n:1",
    "publish:n:2",
    "publish:n:3",
    `release:n:${n1.id}`,
    "publish:secret:4",
    "publish:shared:5",
    "publish:z:6",
    "evict:n:2",
    "drop:shared:5",
  ]);
  await waitFor(() => b.events.length >= 8, { what: "eight events for beta", timeoutMs: 10_000 });
  assertEquals(b.events.map((e) => `${e.kind}:${e.name}:${e.id}`), [
    "publish:n:1",
    "publish:n:2",
    "publish:n:3",
    "release:n:1",
    "publish:shared:5",
    "publish:z:6",
    "evict:n:2",
    "drop:shared:5",
  ]);
  ok(!b.events.some((e) => e.name === "secret"), "beta saw alpha's private object");
  all.close();
  beta.close();
  await Promise.all([a.done, b.done]);
});

Deno.test("memfdbus watch --once --json prints the first event as one JSON line and exits 0", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...CLI_PERMS,
      CLI,
      "watch",
      "--name",
      "w",
      "--json",
      "--once",
      "--socket",
      broker.socket,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  await watchersOk(broker, 1);
  await using client = new Client({ socket: broker.socket, jobId: null });
  await client.put(enc("x"), { name: "other" });
  const put = await client.put(enc("hello"), { name: "w" });
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  assertEquals([out.code, new TextDecoder().decode(out.stderr)], [0, ""]);
  const lines = text.trimEnd().split("\n");
  assertEquals(lines.length, 1);
  const v = JSON.parse(lines[0] ?? "");
  assertEquals([v.kind, v.id, v.name, v.size, v.digest, v.missed], [
    "publish",
    Number(put.id),
    "w",
    5,
    put.digest,
    0,
  ]);
});

Deno.test("a watch carries on across memfdbus broker --takeover: the client reconnects to the successor", async () => {
  using dir = tempDir();
  const old = await BrokerProcess.start(dir.path);
  const socket = old.socket;
  await using client = new Client({ socket, jobId: null, keepAlive: false });
  using watch = await client.watch({ name: "t" });
  const seen = collect(watch);
  const t1 = await client.put(enc("one"), { name: "t" });
  await waitFor(() => seen.events.length >= 1, { what: "the first event", timeoutMs: 10_000 });
  await using successor = await BrokerProcess.start(dir.path, ["--socket", socket, "--takeover"]);
  await old.exited();
  await old[Symbol.asyncDispose]();
  // The watch reconnected: the successor accepted a WATCH of its own.
  await watchersOk(successor, 1);
  const t2 = await client.put(enc("two"), { name: "t" });
  await client.drop(t1.id);
  await waitFor(() => seen.events.length >= 3, {
    what: "events from the successor",
    timeoutMs: 10_000,
  });
  assertEquals(seen.events.map((e) => `${e.kind}:${e.id}`), [
    `publish:${t1.id}`,
    `publish:${t2.id}`,
    `drop:${t1.id}`,
  ]);
  watch.close();
  await seen.done;
});

Deno.test("--max-watchers refuses one watch stream too many, naming the limit; a closed one frees its place", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--max-watchers", "2"]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  using first = await client.watch({ name: "a" });
  using second = await client.watch({ prefix: "b" });
  const refusal =
    "the broker has 2 of 2 watchers (the broker-wide limit, --max-watchers or maxWatchers)";
  const err = await client.watch({ name: "c" }).then(() => null, (e) => e as Error);
  ok(err instanceof BrokerError, `refused with a BrokerError, not ${err}`);
  assertEquals(err.text, refusal);
  const refused = await waitFor(() => {
    const l = broker.audit().filter((l) => l.op === "watch" && l.result === "error");
    return l.length > 0 ? l : null;
  }, { what: "the refused watch's audit record", timeoutMs: 10_000 });
  assertEquals(refused.map((l) => l.error), [refusal]);
  // Other requests still work, and a watcher that goes away frees its place.
  await client.put(enc("x"), { name: "a" });
  first.close();
  await waitFor(async () => {
    try {
      (await client.watch({ name: "c" })).close();
      return true;
    } catch (e) {
      if (!(e instanceof BrokerError) || e.text !== refusal) throw e;
      return false;
    }
  }, { what: "a third watch accepted once the first closed", timeoutMs: 10_000 });
  second.close();
});
