/**
 * The cluster tier across a broker's replacement (issue 14, points 7 and 4): uploads queued while
 * the engine is down survive `memfdbus broker --takeover` and a recovery from the shadow after a
 * kill -9, and are committed exactly once; pulled copies keep their origin through both (stat
 * says where they came from, and they are not uploaded as if published here). Real nats-server,
 * real broker processes, the real CLI.
 *
 * @module
 */

import { assertEquals } from "../support/assert.ts";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { BrokerProcess, cli, digestOf, enc } from "../support/harness.ts";
import { clusterTest, NatsNode } from "../support/cluster.ts";
import { signal, Tracker } from "../support/shadow.ts";
import { waitFor } from "../support/wait.ts";
import { decodeRecord, nameKey } from "../../src/cluster/model.ts";

Deno.env.delete("MEMFDBUS_JOB_ID");

const clusterArgs = (url: string, host: string): string[] => [
  "--cluster",
  url,
  "--host-id",
  host,
];

/** Every put entry of a name in the engine's KV history: [origin host, origin id, digest]. */
async function history(url: string, name: string): Promise<[string, number, string][]> {
  const nc = await connect({ servers: url });
  try {
    const kv = await new Kvm(jetstream(nc)).open("memfdbus-names");
    const out: [string, number, string][] = [];
    for await (const e of await kv.history({ key: nameKey(name) })) {
      if (e.operation !== "PUT") continue;
      const r = decodeRecord(e.value);
      if (r.op === "put") out.push([r.entry.originHost, r.entry.originId, r.entry.digest]);
    }
    return out;
  } finally {
    await nc.close();
  }
}

interface Put {
  readonly id: number;
  readonly digest: string;
}

interface Scene {
  readonly files: Record<"pulled" | "early" | "queued" | "kept", Uint8Array>;
  readonly originBefore: unknown;
  readonly pulled: Put;
  readonly early: Put;
  readonly queued: Put;
}

async function put(
  socket: string,
  file: string,
  name: string,
  extra: string[] = [],
): Promise<Put> {
  const r = await cli(["put", file, "--name", name, "--socket", socket, "--json", ...extra]);
  assertEquals([r.code, r.stderr], [0, ""]);
  return JSON.parse(r.stdout) as Put;
}

async function getBytes(socket: string, name: string, out: string): Promise<Uint8Array | null> {
  const r = await cli(["get", "--name", name, out, "--socket", socket]);
  return r.code === 0 ? await Deno.readFile(out) : null;
}

async function statOrigin(socket: string, name: string): Promise<unknown> {
  const r = await cli(["stat", "--name", name, "--json", "--socket", socket]);
  assertEquals([r.code, r.stderr], [0, ""]);
  return (JSON.parse(r.stdout) as { origin?: unknown }).origin ?? null;
}

/** Wait until `name`'s history in the engine has an entry with `digest`. */
async function committed(url: string, name: string, digest: string): Promise<void> {
  await waitFor(async () => (await history(url, name)).some((h) => h[2] === digest), {
    what: `"${name}" (${digest}) committed in the engine`,
  });
}

/**
 * The scene both tests share, on host A (B publishes `pulled`, A pulls it): `early` published
 * on A and committed while the engine is up, then the engine goes down and A publishes
 * `queued` (its upload waits) and `kept` (`put --local`).
 */
async function scene(d: string, nats: NatsNode, a: string, b: string): Promise<Scene> {
  const files = {
    pulled: enc("published on B, pulled by A"),
    early: enc("committed before the outage"),
    queued: enc("queued during the outage"),
    kept: enc("kept on A"),
  };
  for (const [k, v] of Object.entries(files)) await Deno.writeFile(`${d}/${k}`, v);
  const pulled = await put(b, `${d}/pulled`, "pulled");
  await committed(nats.url, "pulled", digestOf(files.pulled));
  assertEquals(await getBytes(a, "pulled", `${d}/a-pulled`), files.pulled);
  const originBefore = await statOrigin(a, "pulled");
  assertEquals((originBefore as { host: string }).host, "ho-b");
  const early = await put(a, `${d}/early`, "early");
  await committed(nats.url, "early", digestOf(files.early));
  await nats.kill();
  const queued = await put(a, `${d}/queued`, "queued");
  await put(a, `${d}/kept`, "kept", ["--local"]);
  return { files, originBefore, pulled, early, queued };
}

/** After A was replaced: the engine comes back, and B gets what A had queued, exactly once. */
async function afterwards(
  d: string,
  nats: NatsNode,
  a: string,
  b: string,
  s: Scene,
): Promise<void> {
  // While the engine is still down, the pulled copy says where it came from.
  assertEquals(await statOrigin(a, "pulled"), s.originBefore);
  await nats.start();
  await waitFor(async () => (await getBytes(b, "queued", `${d}/b-queued`)) !== null, {
    what: "B to get the upload A had queued before it was replaced",
    timeoutMs: 30_000,
  });
  assertEquals(await Deno.readFile(`${d}/b-queued`), s.files.queued);
  assertEquals(await history(nats.url, "queued"), [["ho-a", s.queued.id, s.queued.digest]]);
  // A's committed object is not committed a second time (that would make it "latest" again),
  // the pulled copy is not uploaded as A's, the local one stays on A.
  const early = await history(nats.url, "early");
  assertEquals(early, [["ho-a", s.early.id, s.early.digest]]);
  assertEquals(await history(nats.url, "pulled"), [["ho-b", s.pulled.id, s.pulled.digest]]);
  assertEquals(await history(nats.url, "kept"), []);
  assertEquals(await getBytes(b, "kept", `${d}/b-kept`), null);
  assertEquals(await statOrigin(a, "pulled"), s.originBefore);
  assertEquals(await statOrigin(a, "early"), null);
}

clusterTest(
  "cluster: broker --takeover keeps the uploads queued while the engine is down, commits each once, and keeps pulled copies' origin",
  async (dir) => {
    const d = dir.path;
    await using nats = await NatsNode.single();
    const old = await BrokerProcess.start(d, clusterArgs(nats.url, "ho-a"));
    await using b = await BrokerProcess.start(d, clusterArgs(nats.url, "ho-b"));
    try {
      const s = await scene(d, nats, old.socket, b.socket);
      await using successor = await BrokerProcess.start(d, [
        "--socket",
        old.socket,
        "--takeover",
        ...clusterArgs(nats.url, "ho-a"),
      ]);
      await old.exited();
      await afterwards(d, nats, successor.socket, b.socket, s);
    } finally {
      await old[Symbol.asyncDispose]();
    }
  },
);

clusterTest(
  "cluster: a broker recovered from its shadow after kill -9 re-queues uploads not known to be committed, without committing any twice",
  async (dir) => {
    const d = dir.path;
    await using t = new Tracker();
    await using nats = await NatsNode.single();
    const socket = `${d}/a.sock`;
    const shadow = `${d}/shadow.sock`;
    const args = ["--socket", socket, "--shadow", shadow, ...clusterArgs(nats.url, "ho-a")];
    const first = await t.broker(d, args);
    await using b = await BrokerProcess.start(d, clusterArgs(nats.url, "ho-b"));
    // The shadow learns of "early" before its commit: it hands it back as not known to be
    // committed, and the successor finds its entry in the name's history.
    const s = await scene(d, nats, socket, b.socket);
    signal(first.pid, "SIGKILL");
    assertEquals((await first.child.status).signal, "SIGKILL");
    const second = await t.broker(d, args);
    await waitFor(() => second.audit().some((r) => r.op === "recover"), {
      what: "the recover record",
    });
    await afterwards(d, nats, socket, b.socket, s);
  },
);
