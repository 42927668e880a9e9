/**
 * The cluster tier through real broker processes: a real nats-server (started here on a free
 * loopback port with a temporary store), two or three `memfdbus broker --cluster` processes with
 * their own sockets and host ids standing in for hosts, and the real CLI. Skipped with the reason
 * when nats-server is missing.
 *
 * @module
 */

import { assertEquals, ok as assert } from "../support/assert.ts";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import {
  BrokerProcess,
  CLI,
  cli,
  CLI_PERMS,
  digestOf,
  enc,
  fdTable,
  ROOT,
} from "../support/harness.ts";
import { clusterTest, freePorts, NatsNode } from "../support/cluster.ts";
import parsePrometheus from "parse-prometheus-text-format";
import { waitFor } from "../support/wait.ts";

// The tests decide the job id of every call themselves.
Deno.env.delete("MEMFDBUS_JOB_ID");

function clusterArgs(url: string, host: string, extra: readonly string[] = []): string[] {
  return ["--cluster", url, "--host-id", host, ...extra];
}

/** `--metrics 127.0.0.1:PORT` on a free port, and the URL to scrape. */
function metricsArgs(): { args: string[]; url: string } {
  const [port] = freePorts(1);
  return { args: ["--metrics", `127.0.0.1:${port}`], url: `http://127.0.0.1:${port}/metrics` };
}

/** The `memfdbus_cluster_*` samples of a scrape (without the prefix), label-free ones only. */
async function clusterMetrics(url: string): Promise<Record<string, number>> {
  const r = await fetch(url);
  assertEquals(r.status, 200);
  const fams = parsePrometheus(await r.text()) as {
    name: string;
    metrics: { value?: string; labels?: Record<string, string> }[];
  }[];
  const out: Record<string, number> = {};
  for (const f of fams) {
    const m = f.metrics[0];
    if (f.name.startsWith("memfdbus_cluster_") && m !== undefined) {
      out[f.name.slice("memfdbus_cluster_".length)] = Number(m.value);
    }
  }
  return out;
}

/** Memfds the broker pulled from the cluster (their label says so). */
function pulledMemfds(pid: number): string[] {
  return [...fdTable(pid).values()].filter((l) => l.startsWith("/memfd:cluster:"));
}

async function put(
  b: BrokerProcess,
  file: string,
  name: string,
  extra: readonly string[] = [],
): Promise<void> {
  const r = await cli(["put", file, "--name", name, "--socket", b.socket, ...extra]);
  assertEquals([r.code, r.stderr], [0, ""]);
}

async function getBytes(
  b: BrokerProcess,
  name: string,
  out: string,
  extra: readonly string[] = [],
): Promise<{ code: number; stderr: string; bytes: Uint8Array | null }> {
  const r = await cli(["get", "--name", name, out, "--socket", b.socket, ...extra]);
  let bytes: Uint8Array | null = null;
  if (r.code === 0) bytes = await Deno.readFile(out);
  return { code: r.code, stderr: r.stderr, bytes };
}

interface ClusterLine {
  revision: number;
  host: string;
  name: string;
  digest: string;
}

async function clusterList(b: BrokerProcess, job?: string): Promise<ClusterLine[]> {
  const r = await cli([
    "list",
    "--cluster",
    "--json",
    "--socket",
    b.socket,
    ...(job === undefined ? [] : ["--job-id", job]),
  ]);
  assertEquals([r.code, r.stderr], [0, ""]);
  return JSON.parse(r.stdout) as ClusterLine[];
}

/** Wait until the cluster's latest version of `name` has `digest`. */
async function committed(b: BrokerProcess, name: string, digest: string): Promise<void> {
  await waitFor(
    async () => (await clusterList(b)).some((l) => l.name === name && l.digest === digest),
    { what: `"${name}" with ${digest} committed in the cluster` },
  );
}

/** How many blobs the engine's object store holds (one per digest). */
async function blobCount(url: string): Promise<number> {
  const nc = await connect({ servers: url });
  try {
    const os = await new Objm(jetstream(nc)).open("memfdbus-blobs");
    let n = 0;
    for (const info of await os.list()) if (!info.deleted) n++;
    return n;
  } finally {
    await nc.close();
  }
}

clusterTest(
  "cluster: publish on A, get on B, latest wins both ways, drop on B, wait, policy, dedup",
  async (dir) => {
    await using nats = await NatsNode.single();
    const ma = metricsArgs();
    const mb = metricsArgs();
    await using a = await BrokerProcess.start(dir.path, clusterArgs(nats.url, "host-a", ma.args));
    await using b = await BrokerProcess.start(dir.path, clusterArgs(nats.url, "host-b", mb.args));
    const d = dir.path;
    const v1 = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    await Deno.writeFile(`${d}/v1`, v1);

    // Publish on A; the upload happens after the ack, so wait for the commit.
    await put(a, `${d}/v1`, "model");
    await committed(a, "model", digestOf(v1));

    // Eight concurrent gets on B: identical bytes, one pull, one local object.
    const gets = await Promise.all(
      Array.from({ length: 8 }, (_, i) => getBytes(b, "model", `${d}/out${i}`)),
    );
    for (const g of gets) {
      assertEquals([g.code, g.stderr], [0, ""]);
      assertEquals(g.bytes, v1);
    }
    assertEquals(pulledMemfds(b.pid).length, 1);
    // The metrics say so: one upload on A (queue drained), one pull on B, both connected.
    const quiet = {
      connected: 1,
      queue_objects: 0,
      queue_bytes: 0,
      queue_overflows_total: 0,
      dedup_hits_total: 0,
    };
    let aMetrics: Record<string, number> = {};
    await waitFor(async () => {
      aMetrics = await clusterMetrics(ma.url);
      return aMetrics.queue_objects === 0;
    }, { what: "A's upload queue drained in its metrics" });
    assertEquals(aMetrics, {
      ...quiet,
      uploads_total: 1,
      uploaded_bytes_total: v1.length,
      pulls_total: 0,
      pulled_bytes_total: 0,
    });
    assertEquals(await clusterMetrics(mb.url), {
      ...quiet,
      uploads_total: 0,
      uploaded_bytes_total: 0,
      pulls_total: 1,
      pulled_bytes_total: v1.length,
    });
    const bList = await cli(["list", "--socket", b.socket]);
    assertEquals(bList.stdout.trim().split("\n").length, 1);
    const st = await cli(["stat", "--name", "model", "--socket", b.socket, "--json"]);
    const stat = JSON.parse(st.stdout) as { origin: { host: string; id: number } };
    assertEquals([stat.origin.host, stat.origin.id], ["host-a", 1]);

    // Latest wins: B publishes v2, A now serves v2; A publishes v3, B serves v3.
    const v2 = enc("version two from B");
    await Deno.writeFile(`${d}/v2`, v2);
    await put(b, `${d}/v2`, "model");
    await committed(b, "model", digestOf(v2));
    assertEquals((await getBytes(a, "model", `${d}/a2`)).bytes, v2);
    const v3 = enc("version three from A");
    await Deno.writeFile(`${d}/v3`, v3);
    await put(a, `${d}/v3`, "model");
    await committed(b, "model", digestOf(v3));
    assertEquals((await getBytes(b, "model", `${d}/b3`)).bytes, v3);
    const listed = (await clusterList(b)).find((l) => l.name === "model");
    assertEquals(listed?.host, "host-a");

    // Drop on B drops the cluster's newest (A's v3): v2 is latest on both hosts again.
    const dropped = await cli(["drop", "--name", "model", "--socket", b.socket]);
    assertEquals([dropped.code, dropped.stderr], [0, ""]);
    await committed(a, "model", digestOf(v2));
    await waitFor(async () => {
      const g = await getBytes(a, "model", `${d}/a4`);
      return g.bytes !== null && digestOf(g.bytes) === digestOf(v2);
    }, { what: "A to serve v2 after the drop on B" });
    assertEquals((await getBytes(b, "model", `${d}/b4`)).bytes, v2);

    // A get --wait on B is answered when A publishes the name.
    const sockets = (): number =>
      [...fdTable(b.pid).values()].filter((l) => l.startsWith("socket:")).length;
    const idle = sockets();
    const waiting = cli([
      "get",
      "--name",
      "later",
      `${d}/later`,
      "--wait=60",
      "--socket",
      b.socket,
    ]);
    await waitFor(() => sockets() > idle, { what: "the waiting get's connection on B" });
    const later = enc("published while B waited");
    await Deno.writeFile(`${d}/later.src`, later);
    await put(a, `${d}/later.src`, "later");
    const w = await waiting;
    assertEquals([w.code, w.stderr], [0, ""]);
    assertEquals(await Deno.readFile(`${d}/later`), later);

    // Dedup: known content under another name is not uploaded again.
    const before = await blobCount(nats.url);
    await put(a, `${d}/v1`, "model-copy");
    await committed(a, "model-copy", digestOf(v1));
    assertEquals(await blobCount(nats.url), before);

    // Policy travels: owner alice, allowed bob; B refuses carol (without pulling) and serves bob.
    const secret = enc("for bob only");
    await Deno.writeFile(`${d}/secret`, secret);
    await put(a, `${d}/secret`, "secret", ["--job-id", "alice", "--allow-job", "bob"]);
    await committed(a, "secret", digestOf(secret));
    const pulls = pulledMemfds(b.pid).length;
    const carol = await getBytes(b, "secret", `${d}/c`, ["--job-id", "carol"]);
    assertEquals([carol.code, carol.stderr], [1, "broker error: access denied\n"]);
    assertEquals(pulledMemfds(b.pid).length, pulls);
    assert(!(await clusterList(b, "carol")).some((l) => l.name === "secret"));
    const bob = await getBytes(b, "secret", `${d}/bob`, ["--job-id", "bob"]);
    assertEquals(bob.bytes, secret);
    // As for local objects, a caller without a job id is not scoped.
    assertEquals((await getBytes(b, "secret", `${d}/anon`)).bytes, secret);
    const dropCarol = await cli([
      "drop",
      "--name",
      "secret",
      "--job-id",
      "carol",
      "--socket",
      b.socket,
    ]);
    assertEquals([dropCarol.code, dropCarol.stderr], [1, "broker error: access denied\n"]);

    // put --local keeps an object on its host; unnamed (content-addressed) objects too.
    const mine = enc("stays on A");
    await Deno.writeFile(`${d}/mine`, mine);
    await put(a, `${d}/mine`, "mine", ["--local"]);
    const ca = await cli(["put", `${d}/mine`, "--content-addressed", "--socket", a.socket]);
    assertEquals(ca.code, 0);
    // A later shared publish proves the queue got past both without sharing them.
    await put(a, `${d}/v2`, "fence");
    await committed(a, "fence", digestOf(v2));
    const names = (await clusterList(a)).map((l) => l.name);
    assert(!names.includes("mine") && !names.includes(digestOf(mine)), names.join(","));
    const notThere = await getBytes(b, "mine", `${d}/m`);
    assertEquals([notThere.code, notThere.stderr], [1, "broker error: object not found\n"]);
  },
);

clusterTest(
  "cluster: pulled copies fall under retention like local objects and can be pulled again",
  async (dir) => {
    const d = dir.path;
    await using nats = await NatsNode.single();
    await using a = await BrokerProcess.start(d, clusterArgs(nats.url, "keep-a"));
    const mb = metricsArgs();
    await using b = await BrokerProcess.start(
      d,
      clusterArgs(nats.url, "keep-b", ["--keep-versions", "1", ...mb.args]),
    );
    const m1 = enc("weights, first version");
    const m2 = enc("weights, second version!");
    await Deno.writeFile(`${d}/m1`, m1);
    await Deno.writeFile(`${d}/m2`, m2);
    await put(a, `${d}/m1`, "w");
    await committed(a, "w", digestOf(m1));
    assertEquals((await getBytes(b, "w", `${d}/b1`)).bytes, m1);
    await put(a, `${d}/m2`, "w");
    await committed(a, "w", digestOf(m2));
    assertEquals((await getBytes(b, "w", `${d}/b2`)).bytes, m2);

    // B keeps one version of "w": pulling m2 released the copy of m1, with an audit record, and
    // its memfd is gone from the broker's descriptor table.
    const release = b.audit().filter((r) => r.op === "release");
    assertEquals(
      release.map((r) => [r.name, r.digest, r.reason]),
      [["w", digestOf(m1), "retention"]],
    );
    assertEquals(pulledMemfds(b.pid).length, 1);
    const listed = await cli(["list", "--socket", b.socket]);
    assertEquals(listed.stdout.trim().split("\n").length, 1);
    assert(listed.stdout.includes(digestOf(m2)), listed.stdout);
    const m = await clusterMetrics(mb.url);
    assertEquals([m.pulls_total, m.pulled_bytes_total], [2, m1.length + m2.length]);

    // The released copy is only a cache: once m2 is dropped, B pulls m1 again.
    const dropped = await cli(["drop", "--name", "w", "--socket", a.socket]);
    assertEquals([dropped.code, dropped.stderr], [0, ""]);
    await waitFor(async () => {
      const g = await getBytes(b, "w", `${d}/b3`);
      return g.bytes !== null && digestOf(g.bytes) === digestOf(m1);
    }, { what: "B to serve m1 again after the drop on A" });
    assertEquals((await clusterMetrics(mb.url)).pulls_total, 3);
  },
);

clusterTest(
  "cluster: --cluster-sync acknowledges after the commit; a broker without --cluster says so",
  async (dir) => {
    await using nats = await NatsNode.single();
    await using a = await BrokerProcess.start(
      dir.path,
      clusterArgs(nats.url, "sync-a", ["--cluster-sync"]),
    );
    await using b = await BrokerProcess.start(dir.path, clusterArgs(nats.url, "sync-b"));
    await using plain = await BrokerProcess.start(dir.path);
    const bytes = enc("committed before the ack");
    await Deno.writeFile(`${dir.path}/f`, bytes);
    await put(a, `${dir.path}/f`, "synced");
    // No waiting: the PUT's reply came after the commit, so B resolves it at once.
    assertEquals((await getBytes(b, "synced", `${dir.path}/o`)).bytes, bytes);
    const r = await cli(["list", "--cluster", "--socket", plain.socket]);
    assertEquals([r.code, r.stderr], [1, "broker error: broker has no cluster tier\n"]);
  },
);

clusterTest(
  "cluster: with the engine killed local work goes on, queued uploads flush when it returns",
  async (dir) => {
    const d = dir.path;
    await using nats = await NatsNode.single();
    // A bounded queue (config file), so an overflow can be seen.
    await Deno.writeTextFile(
      `${d}/a.jsonc`,
      JSON.stringify({
        cluster: { servers: [nats.url], hostId: "down-a", maxQueueEntries: 1, timeoutMs: 500 },
      }),
    );
    const ma = metricsArgs();
    await using a = await BrokerProcess.start(d, ["--config", `${d}/a.jsonc`, ...ma.args]);
    await using b = await BrokerProcess.start(d, clusterArgs(nats.url, "down-b"));
    await using c = await BrokerProcess.start(
      d,
      clusterArgs(nats.url, "down-c", ["--cluster-sync"]),
    );
    await nats.kill();
    await waitFor(() => a.stderr.includes("cluster disconnected"), {
      what: "A to notice the engine is gone",
    });
    await waitFor(() => b.stderr.includes("cluster disconnected"), {
      what: "B to notice the engine is gone",
    });
    await waitFor(() => c.stderr.includes("cluster disconnected"), {
      what: "C to notice the engine is gone",
    });

    // Local work goes on.
    const one = enc("queued during the outage");
    const two = enc("refused by the full queue");
    await Deno.writeFile(`${d}/one`, one);
    await Deno.writeFile(`${d}/two`, two);
    await put(a, `${d}/one`, "outage-1");
    await put(a, `${d}/two`, "outage-2");
    assertEquals((await getBytes(a, "outage-2", `${d}/a2`)).bytes, two);
    const overflow = a.audit().find((r) => r.op === "put" && r.name === "outage-2" && r.error);
    assertEquals(overflow?.error, "cluster upload queue full: 1 objects, 24 bytes waiting");
    // ...and so do A's metrics: one object queued, one refused, not connected.
    const down = await clusterMetrics(ma.url);
    assertEquals(
      [down.connected, down.queue_objects, down.queue_bytes, down.queue_overflows_total],
      [0, 1, one.length, 1],
    );
    // A remote lookup fails at once, saying why.
    const miss = await getBytes(b, "outage-1", `${d}/b1`);
    assertEquals([miss.code, miss.stderr], [
      1,
      "broker error: cluster unavailable: resolve: not connected\n",
    ]);
    // --cluster-sync cannot commit: the PUT fails and nothing stays behind.
    const sync = await cli(["put", `${d}/one`, "--name", "s", "--socket", c.socket]);
    assertEquals(
      [sync.code, sync.stderr],
      [1, "broker error: cluster unavailable: publish: not connected\n"],
    );
    assertEquals((await cli(["list", "--socket", c.socket])).stdout, "");

    // The engine returns (same port, same store): the queued upload flushes, B finds it.
    await nats.start();
    await waitFor(async () => {
      const g = await getBytes(b, "outage-1", `${d}/b1`);
      return g.code === 0 && digestOf(g.bytes ?? new Uint8Array()) === digestOf(one);
    }, { what: "B to fetch the object queued on A", timeoutMs: 30_000 });
    const up = await clusterMetrics(ma.url);
    assertEquals(
      [up.connected, up.queue_objects, up.queue_bytes, up.queue_overflows_total, up.uploads_total],
      [1, 0, 0, 1, 1],
    );
    const refused = await getBytes(b, "outage-2", `${d}/b2`);
    assertEquals([refused.code, refused.stderr], [1, "broker error: object not found\n"]);
  },
);

Deno.test("cluster: without --cluster the CLI's static module graph holds nothing of NATS", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${ROOT}/cli.ts`],
    stdout: "piped",
    stderr: "null",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).output();
  assertEquals(out.code, 0);
  interface Dep {
    readonly isDynamic?: boolean;
    readonly code?: { readonly specifier?: string };
  }
  interface Mod {
    readonly specifier: string;
    readonly dependencies?: readonly Dep[];
  }
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: Mod[];
    redirects?: Record<string, string>;
  };
  const bySpec = new Map(info.modules.map((m) => [m.specifier, m]));
  // What `memfdbus broker` loads: cli.ts and the broker command (which main.ts imports
  // dynamically), with their static imports that have code (not types, not dynamic imports).
  const seen = new Set<string>();
  const todo = [...info.roots, `file://${ROOT}/src/cli/broker.ts`];
  while (todo.length > 0) {
    const spec = todo.pop() ?? "";
    const s = info.redirects?.[spec] ?? spec;
    if (seen.has(s)) continue;
    seen.add(s);
    for (const dep of bySpec.get(s)?.dependencies ?? []) {
      const target = dep.code?.specifier;
      if (target !== undefined && dep.isDynamic !== true) todo.push(target);
    }
  }
  const loaded = [...seen];
  assert(loaded.some((s) => s.endsWith("/src/broker.ts")), "the walk reaches the broker");
  const nats = loaded.filter((s) =>
    s.includes("@nats-io") || s.endsWith("/src/cluster/tier.ts") ||
    s.endsWith("/src/broker/cluster_bridge.ts")
  );
  assertEquals(nats, []);
  // ...while the dynamic import is there, for --cluster.
  assert(info.modules.some((m) => m.specifier.endsWith("/src/cluster/tier.ts")));
});

Deno.test("cluster: --host-id and --cluster-sync need --cluster; a bad URL is refused", async () => {
  for (
    const [args, text] of [
      [["--host-id", "x"], "--host-id needs --cluster"],
      [["--cluster-sync"], "--cluster-sync needs --cluster"],
      [["--cluster", "http://x:1"], "invalid --cluster: http://x:1"],
    ] as const
  ) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...CLI_PERMS, CLI, "broker", "--socket", "/nonexistent/dir/s", ...args],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(20_000),
    }).output();
    const stderr = new TextDecoder().decode(r.stderr);
    assert(stderr.includes(text), stderr);
    assert(r.code !== 0);
  }
});
