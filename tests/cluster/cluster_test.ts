/**
 * The cluster tier against real nats-server processes: two or three ClusterTier instances with
 * different host ids stand in for hosts.
 */

import { assertEquals, ok as assert, rejects } from "../support/assert.ts";
import { createHash } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { Memfd, Seal } from "../../src/sys/memfd.ts";
import { ClusterTier } from "../../src/cluster/tier.ts";
import {
  applyClusterFlags,
  type ClusterOptions,
  defaultClusterOptions,
  parseClusterConfig,
} from "../../src/cluster/options.ts";
import {
  type ClusterEntry,
  type ClusterVersion,
  decodeRecord,
  encodeDrop,
  encodePut,
  fromObjectDigest,
  nameKey,
  replay,
  toObjectDigest,
} from "../../src/cluster/model.ts";
import {
  ClusterChangedError,
  ClusterCorruptError,
  ClusterDataError,
  ClusterQueueFullError,
  ClusterUnavailableError,
} from "../../src/cluster/errors.ts";
import { UsageError } from "../../src/errors.ts";
import { NATS_IGNORE, NatsCluster, NatsNode } from "../support/cluster.ts";
import { waitFor } from "../support/wait.ts";

const enc = new TextEncoder();

function digestOf(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

function sealed(bytes: Uint8Array): Memfd {
  const m = Memfd.create("cluster-test");
  m.writeAll(bytes);
  m.seal();
  return m;
}

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

let nextId = 1;
function entryFor(name: string, bytes: Uint8Array, host: string): ClusterEntry {
  return {
    name,
    digest: digestOf(bytes),
    size: bytes.length,
    owner: "job-a",
    allowed: null,
    originHost: host,
    originId: nextId++,
    createdNs: 1_700_000_000_000_000_000n + BigInt(nextId),
  };
}

function contents(m: Memfd): Uint8Array {
  using map = m.map();
  return map.bytes.slice();
}

/** Descriptors of pulled memfds (labelled `cluster:<digest>`) this process holds. */
function openFds(): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith("/memfd:cluster:")) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

let bucketSeq = 0;
async function tier(
  servers: string[],
  hostId: string,
  bucket: string,
  extra: Partial<ClusterOptions> = {},
  hooks: Parameters<typeof ClusterTier.open>[1] = {},
): Promise<ClusterTier> {
  const t = await ClusterTier.open(
    { ...defaultClusterOptions(servers, hostId), bucket, ...extra },
    hooks,
  );
  await t.ready(20_000);
  return t;
}

/** Publish `bytes` under `name` from `t` and wait for the commit. */
async function put(t: ClusterTier, name: string, bytes: Uint8Array): Promise<ClusterVersion> {
  using m = sealed(bytes);
  return await t.publish(entryFor(name, bytes, t.hostId), m.fd);
}

const natsTest = (name: string, fn: () => Promise<void>): void => {
  Deno.test({ name, ignore: NATS_IGNORE !== false, fn });
};

// --- pure parts ---

Deno.test("parseClusterConfig() applies every key and names the key of a mistake", () => {
  const o = parseClusterConfig({
    servers: "nats://a:4222,tls://b:4223",
    bucket: "b1",
    hostId: "h1",
    token: "s3cret",
    tls: { ca: "/ca.pem" },
    replicas: 3,
    storage: "memory",
    sync: true,
    maxQueueEntries: 5,
    maxBytes: 1 << 30,
  }, "host");
  assertEquals(o.maxBytes, 1 << 30);
  assertEquals(parseClusterConfig({ servers: "nats://x:1" }, "h").maxBytes, null);
  assertEquals(o.servers, ["nats://a:4222", "tls://b:4223"]);
  assertEquals([o.bucket, o.hostId, o.replicas, o.storage, o.sync], [
    "b1",
    "h1",
    3,
    "memory",
    true,
  ]);
  assertEquals(o.auth, { kind: "token", token: "s3cret" });
  assertEquals(o.tls, { ca: "/ca.pem" });
  assertEquals(parseClusterConfig({ servers: ["nats://x:1"] }, "myhost").hostId, "myhost");
  const bad: [unknown, string][] = [
    [
      { servers: ["http://x:1"] },
      'cluster.servers: expected URLs such as ["nats://127.0.0.1:4222"]',
    ],
    [{ servers: "nats://x:1", replicas: 7 }, "cluster.replicas: expected an integer from 1 to 5"],
    [
      { servers: "nats://x:1", maxBytes: 0 },
      "cluster.maxBytes: expected an integer from 1 to 9007199254740991",
    ],
    [{ servers: "nats://x:1", storage: "disk" }, 'cluster.storage: expected "file" or "memory"'],
    [
      { servers: "nats://x:1", token: "t", nkey: "/k" },
      "cluster.nkey: only one of credentials, token, nkey",
    ],
    [
      { servers: "nats://x:1", bucket: "a.b" },
      "cluster.bucket: expected 1 to 64 of A-Z a-z 0-9 _ -",
    ],
    [{ servers: "nats://x:1", tls: { cert: "/c" } }, "cluster.tls: cert and key go together"],
    [{ servers: "nats://x:1", colour: 1 }, "cluster.colour: unknown key"],
    [[], 'cluster.expected an object such as { "servers": ["nats://h:4222"] }'],
  ];
  for (const [v, msg] of bad) {
    try {
      parseClusterConfig(v, "h");
      assert(false, `accepted ${JSON.stringify(v)}`);
    } catch (e) {
      assert(e instanceof UsageError);
      assertEquals(e.message, msg);
    }
  }
});

Deno.test("applyClusterFlags() merges --cluster, --host-id and --cluster-sync", () => {
  assertEquals(applyClusterFlags({}, null, "h"), null);
  const o = applyClusterFlags(
    { cluster: "nats://127.0.0.1:4222,nats://[::1]:4223", hostId: "gpu-1", clusterSync: true },
    null,
    "h",
  );
  assertEquals(o?.servers, ["nats://127.0.0.1:4222", "nats://[::1]:4223"]);
  assertEquals([o?.hostId, o?.sync], ["gpu-1", true]);
  const fromFile = parseClusterConfig({ servers: "nats://f:1", bucket: "kept" }, "h");
  assertEquals(applyClusterFlags({ cluster: "nats://c:2" }, fromFile, "h")?.bucket, "kept");
  for (
    const [flags, msg] of [
      [{ cluster: "nats://x" }, "invalid --cluster: nats://x"],
      [{ cluster: "nats://x:1", hostId: "a b" }, "invalid --host-id: a b"],
      [{ hostId: "a" }, "--host-id needs --cluster"],
      [{ clusterSync: true }, "--cluster-sync needs --cluster"],
    ] as const
  ) {
    try {
      applyClusterFlags(flags, null, "h");
      assert(false);
    } catch (e) {
      assert(e instanceof UsageError);
      assertEquals(e.message, msg);
    }
  }
});

Deno.test("nameKey() encodes names losslessly in the KV alphabet; long names hash", () => {
  const name = "model/\u00ff\u0000 x.bin";
  const key = nameKey(name);
  assert(/^n\.[A-Za-z0-9_-]+$/.test(key), key);
  const back = atob(key.slice(2).replaceAll("-", "+").replaceAll("_", "/"));
  assertEquals(back, name);
  const long = "x".repeat(5000);
  assert(/^h\.[A-Za-z0-9_-]{43}$/.test(nameKey(long)));
  assert(nameKey(long) !== nameKey(long + "y"));
});

Deno.test("digests map between sha256:<hex> and the object store's SHA-256=<base64url>", () => {
  const d = digestOf(enc.encode("abc"));
  const o = toObjectDigest(d);
  assertEquals(o, "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=");
  assertEquals(fromObjectDigest(o), d);
  assertEquals(fromObjectDigest("SHA-256=short"), null);
  assertEquals(fromObjectDigest("MD5=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0="), null);
});

Deno.test("records round-trip; hostile values are refused; replay folds tombstones", () => {
  const e1 = entryFor("n", enc.encode("1"), "A");
  const e2 = entryFor("n", enc.encode("2"), "B");
  assertEquals(decodeRecord(encodePut(e1)), { op: "put", entry: e1 });
  const v1 = { ...e1, revision: 1 };
  assertEquals(decodeRecord(encodeDrop("n", 2, "B", v1)), {
    op: "drop",
    name: "n",
    target: 2,
    byHost: "B",
    current: v1,
  });
  for (
    const bad of [
      "nope",
      "[]",
      '{"v":2,"op":"put"}',
      '{"v":1,"op":"put","name":"bg==","digest":"sha256:00","size":1,"host":"A","id":1,"created":"1"}',
      '{"v":1,"op":"put","name":"bg==","digest":"' + e1.digest +
      '","size":-1,"host":"A","id":1,"created":"1"}',
    ]
  ) {
    try {
      decodeRecord(enc.encode(bad));
      assert(false, bad);
    } catch (e) {
      assert(e instanceof ClusterDataError, String(e));
    }
  }
  const live = replay([
    { revision: 1, record: { op: "put", entry: e1 } },
    { revision: 2, record: { op: "put", entry: e2 } },
    { revision: 3, record: { op: "drop", name: "n", target: 2, byHost: "B", current: v1 } },
  ]);
  assertEquals(live, [v1]);
});

// --- against nats-server ---

natsTest("publish on A, resolve and pull on B: identical bytes in a sealed memfd", async () => {
  await using node = await NatsNode.single();
  const bucket = `t${bucketSeq++}`;
  await using a = await tier([node.url], "host-a", bucket);
  await using b = await tier([node.url], "host-b", bucket);
  const bytes = randomBytes(3 * 1024 * 1024 + 17, 7);
  const committed = await put(a, "model/weights.bin", bytes);
  const v = await b.resolve("model/weights.bin");
  assert(v !== null);
  assertEquals(v, committed);
  assertEquals([v.originHost, v.owner, v.size, v.digest], [
    "host-a",
    "job-a",
    bytes.length,
    digestOf(bytes),
  ]);
  using got = await b.pull(v);
  assertEquals(got.seals() & Seal.IMMUTABLE, Seal.IMMUTABLE);
  assertEquals(got.size, bytes.length);
  assert(Buffer.from(contents(got)).equals(Buffer.from(bytes)), "pulled bytes differ");
  assertEquals(await b.resolve("no-such-name"), null);
  assertEquals(b.stats.pulls, 1);
});

natsTest(
  "many concurrent pulls of one digest make one transfer, each gets its own fd",
  async () => {
    await using node = await NatsNode.single();
    const bucket = `t${bucketSeq++}`;
    await using a = await tier([node.url], "host-a", bucket);
    await using b = await tier([node.url], "host-b", bucket);
    const bytes = randomBytes(2 * 1024 * 1024, 3);
    const v = await put(a, "shared", bytes);
    const before = openFds();
    const fds = await Promise.all(Array.from({ length: 8 }, () => b.pull(v)));
    try {
      assertEquals(b.stats.pulls, 1);
      assertEquals(new Set(fds.map((m) => m.fd)).size, 8);
      for (const m of fds) assert(Buffer.from(contents(m)).equals(Buffer.from(bytes)));
      assertEquals(openFds(), before + 8);
    } finally {
      for (const m of fds) m.close();
    }
    assertEquals(openFds(), before);
  },
);

natsTest("latest wins both ways: the KV revision order decides", async () => {
  await using node = await NatsNode.single();
  const bucket = `t${bucketSeq++}`;
  await using a = await tier([node.url], "host-a", bucket);
  await using b = await tier([node.url], "host-b", bucket);
  const v1 = await put(a, "cfg", enc.encode("one"));
  const v2 = await put(b, "cfg", enc.encode("two"));
  assert(v2.revision > v1.revision);
  assertEquals((await a.resolve("cfg"))?.digest, digestOf(enc.encode("two")));
  assertEquals((await b.resolve("cfg"))?.originHost, "host-b");
  await put(a, "cfg", enc.encode("three"));
  for (const t of [a, b]) {
    const v = await t.resolve("cfg");
    assertEquals([v?.digest, v?.originHost], [digestOf(enc.encode("three")), "host-a"]);
  }
  const names = (await b.list()).map((v) => [v.name, v.originHost]);
  assertEquals(names, [["cfg", "host-a"]]);
});

natsTest("drop on B makes the previous version latest everywhere, down to none", async () => {
  await using node = await NatsNode.single();
  const bucket = `t${bucketSeq++}`;
  await using a = await tier([node.url], "host-a", bucket);
  await using b = await tier([node.url], "host-b", bucket);
  const events: string[] = [];
  using _w = a.watch(0, (e) => {
    events.push(e.kind === "publish" ? `publish ${e.version.originHost}` : `drop ${e.byHost}`);
  });
  const v1 = await put(a, "ds", enc.encode("v1"));
  const v2 = await put(a, "ds", enc.encode("v2"));
  const r = await b.drop("ds");
  assertEquals(r?.dropped, v2);
  assertEquals(r?.current, v1);
  assertEquals(await a.resolve("ds"), v1);
  assertEquals(await b.resolve("ds"), v1);
  const v3 = await put(b, "ds", enc.encode("v3"));
  assertEquals((await a.resolve("ds"))?.revision, v3.revision);
  assertEquals((await a.drop("ds"))?.dropped, v3);
  assertEquals(await b.resolve("ds"), v1);
  assertEquals((await b.drop("ds"))?.current, null);
  assertEquals(await a.resolve("ds"), null);
  assertEquals(await a.drop("ds"), null);
  assertEquals(await a.list(), []);
  await waitFor(() => events.length >= 6, { what: "six watch events on A" });
  assertEquals(events, [
    "publish host-a",
    "publish host-a",
    "drop host-b",
    "publish host-b",
    "drop host-a",
    "drop host-b",
  ]);
});

natsTest("a drop that names a revision refuses once another version became newest", async () => {
  await using node = await NatsNode.single();
  const bucket = `t${bucketSeq++}`;
  await using a = await tier([node.url], "host-a", bucket);
  await using b = await tier([node.url], "host-b", bucket);
  // B checks its policy against v1; A publishes v2 before B's drop lands.
  const v1 = await put(a, "race", enc.encode("checked version"));
  const checked = await b.resolve("race");
  assertEquals(checked, v1);
  const v2 = await put(a, "race", enc.encode("published after the check"));
  await rejects(b.drop("race", v1.revision), (e: unknown) => {
    assert(e instanceof ClusterChangedError, String(e));
    assertEquals([e.expected, e.newest], [v1.revision, v2]);
    assertEquals(
      e.message,
      `cluster name changed: expected revision ${v1.revision}, newest is ${v2.revision}`,
    );
    return true;
  });
  // Nothing was dropped: v2 is still latest on both hosts, v1 still live behind it.
  assertEquals(await a.resolve("race"), v2);
  assertEquals(await b.resolve("race"), v2);
  const r = await b.drop("race", v2.revision);
  assertEquals([r?.dropped, r?.current], [v2, v1]);
  assertEquals(await a.resolve("race"), v1);
});

natsTest(
  "cluster.maxBytes sets the blob bucket's max_bytes, also on an existing bucket",
  async () => {
    await using node = await NatsNode.single();
    const bucket = `t${bucketSeq++}`;
    const maxBytes = async (): Promise<number> => {
      const nc = await connect({ servers: node.url });
      try {
        const jsm = await jetstreamManager(nc);
        return (await jsm.streams.info(`OBJ_${bucket}-blobs`)).config.max_bytes;
      } finally {
        await nc.close();
      }
    };
    {
      await using _a = await tier([node.url], "host-a", bucket);
      assertEquals(await maxBytes(), -1);
    }
    await using b = await tier([node.url], "host-b", bucket, { maxBytes: 4 << 20 });
    assertEquals(await maxBytes(), 4 << 20);
    // A blob that fits is stored as usual.
    const v = await put(b, "small", randomBytes(1 << 20, 7));
    assertEquals((await b.resolve("small"))?.digest, v.digest);
  },
);

natsTest("known content is not uploaded twice, from any host", async () => {
  await using node = await NatsNode.single();
  const bucket = `t${bucketSeq++}`;
  await using a = await tier([node.url], "host-a", bucket);
  await using b = await tier([node.url], "host-b", bucket);
  const bytes = randomBytes(1024 * 1024 + 5, 11);
  await put(a, "first", bytes);
  const nc = await connect({ servers: node.url });
  try {
    const os = await new Objm(jetstream(nc)).open(`${bucket}-blobs`);
    const info1 = await os.info(digestOf(bytes));
    await put(a, "second", bytes);
    await put(b, "third", bytes);
    const info2 = await os.info(digestOf(bytes));
    assertEquals([info2?.nuid, info2?.revision], [info1?.nuid, info1?.revision]);
    assertEquals([a.stats.uploads, a.stats.dedupHits, b.stats.uploads, b.stats.dedupHits], [
      1,
      1,
      0,
      1,
    ]);
    assertEquals((await b.resolve("third"))?.digest, digestOf(bytes));
  } finally {
    await nc.close();
  }
});

natsTest("a corrupted chunk or a blob that is not its digest is refused", async () => {
  await using node = await NatsNode.single();
  const bucket = `t${bucketSeq++}`;
  await using a = await tier([node.url], "host-a", bucket);
  await using b = await tier([node.url], "host-b", bucket);
  const bytes = randomBytes(3 * 1024 * 1024, 5);
  const v = await put(a, "victim", bytes);
  const other = enc.encode("something else entirely");
  const liar = entryFor("liar", enc.encode("the claimed bytes"), "host-x");
  const nc = await connect({ servers: node.url });
  try {
    // Flip one byte of the last chunk: delete it and publish the altered copy in its place.
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const os = await new Objm(js).open(`${bucket}-blobs`);
    const info = await os.info(v.digest);
    assert(info !== null);
    const subj = `$O.${bucket}-blobs.C.${info.nuid}`;
    const last = await jsm.streams.getMessage(`OBJ_${bucket}-blobs`, { last_by_subj: subj });
    assert(last !== null);
    const altered = last.data.slice();
    altered[100] = (altered[100] ?? 0) ^ 0xff;
    await jsm.streams.deleteMessage(`OBJ_${bucket}-blobs`, last.seq);
    await js.publish(subj, altered);
    // And a blob stored under a digest it does not have, named by a KV entry.
    await os.putBlob({ name: liar.digest }, other);
    const kv = await import("@nats-io/kv").then(({ Kvm }) => new Kvm(js).open(`${bucket}-names`));
    await kv.put(nameKey("liar"), encodePut(liar));
  } finally {
    await nc.close();
  }
  const before = openFds();
  await rejects(b.pull(v), (e: unknown) => {
    assert(e instanceof ClusterCorruptError, String(e));
    assertEquals(e.expected, v.digest);
    return true;
  });
  const lv = await b.resolve("liar");
  assert(lv !== null);
  await rejects(b.pull(lv), (e: unknown) => {
    assert(e instanceof ClusterCorruptError, String(e));
    assertEquals(
      e.message.startsWith(`cluster object corrupt: expected ${liar.digest}, got SHA-256=`),
      true,
    );
    return true;
  });
  assertEquals(openFds(), before);
  assertEquals(b.stats.pulls, 0);
});

natsTest(
  "engine killed: resolve fails fast, uploads queue (bounded) and flush on restart",
  async () => {
    await using node = await NatsNode.single();
    const bucket = `t${bucketSeq++}`;
    const overflows: string[] = [];
    await using a = await tier([node.url], "host-a", bucket, { maxQueueEntries: 2 }, {
      onQueueOverflow: (e, err) => overflows.push(`${e.name}: ${err.message}`),
    });
    await using b = await tier([node.url], "host-b", bucket);
    const seen: string[] = [];
    using w = b.watch(0, (e) => {
      if (e.kind === "publish") seen.push(e.version.name);
    });
    await put(a, "before", enc.encode("x"));
    await waitFor(() => seen.length === 1, { what: "B's watch to see 'before'" });
    await node.kill();
    await waitFor(() => !a.connected && !b.connected, {
      what: "A and B to notice the engine is gone",
    });
    await rejects(b.resolve("before"), ClusterUnavailableError);
    await rejects(b.pull({ digest: digestOf(enc.encode("x")), size: 1 }), ClusterUnavailableError);
    await rejects(b.list(), ClusterUnavailableError);
    await rejects(b.drop("before"), ClusterUnavailableError);
    const q1 = enc.encode("queued one");
    const q2 = enc.encode("queued two");
    {
      using m1 = sealed(q1);
      using m2 = sealed(q2);
      const noRoom = enc.encode("no room");
      using m3 = sealed(noRoom);
      assert(a.enqueue(entryFor("q1", q1, "host-a"), m1.fd));
      assert(a.enqueue(entryFor("q2", q2, "host-a"), m2.fd));
      assertEquals(a.enqueue(entryFor("q3", noRoom, "host-a"), m3.fd), false);
      await rejects(a.publish(entryFor("q4", noRoom, "host-a"), m3.fd), ClusterQueueFullError);
    } // the caller's descriptors are closed: the queue holds its own
    assertEquals([a.stats.queueEntries, a.stats.queueBytes], [2, q1.length + q2.length]);
    assertEquals(overflows, [
      "q3: cluster upload queue full: 2 objects, 20 bytes waiting",
      "q4: cluster upload queue full: 2 objects, 20 bytes waiting",
    ]);
    await node.start();
    await waitFor(() => a.stats.queueEntries === 0, {
      what: "A's queue to flush after the restart",
    });
    await waitFor(() => b.connected, { what: "B to reconnect" });
    using got = await b.pull((await b.resolve("q2")) ?? { digest: "", size: 0 });
    assertEquals(new TextDecoder().decode(contents(got)), "queued two");
    assertEquals((await b.resolve("before"))?.originHost, "host-a");
    await waitFor(() => seen.length === 3, { what: "B's watch to resume and see q1, q2" });
    assertEquals(seen, ["before", "q1", "q2"]);
    assert(w.lastRevision >= 3);
  },
);

natsTest("one node of three killed: work continues after retry", async () => {
  await using cluster = await NatsCluster.start();
  const bucket = `t${bucketSeq++}`;
  const opts = { replicas: 3 };
  await using a = await tier(cluster.urls, "host-a", bucket, opts);
  await using b = await tier([...cluster.urls].reverse(), "host-b", bucket, opts);
  const bytes = randomBytes(1536 * 1024, 9);
  await put(a, "ha", bytes);
  await cluster.nodes[0]?.kill();
  // Publishing waits and retries by itself; interactive calls fail fast and are retried here.
  const v2 = await put(a, "ha", randomBytes(512 * 1024, 10));
  let got: Memfd | null = null;
  await waitFor(async () => {
    try {
      const v = await b.resolve("ha");
      if (v?.revision !== v2.revision) return false;
      got = await b.pull(v);
      return true;
    } catch (e) {
      if (e instanceof ClusterUnavailableError) return false;
      throw e;
    }
  }, { what: "B to resolve and pull the new version", timeoutMs: 60_000 });
  using pulled = got as unknown as Memfd;
  assertEquals(digestOf(contents(pulled)), v2.digest);
});

natsTest("back-to-back publishes all commit (none is left waiting in the queue)", async () => {
  await using node = await NatsNode.single();
  await using a = await tier([node.url], "host-a", `t${bucketSeq++}`);
  const fds = Array.from({ length: 20 }, (_, i) => sealed(enc.encode(`v${i}`)));
  try {
    let last = 0;
    for (const [i, m] of fds.entries()) {
      const v = await a.publish(entryFor("seq", enc.encode(`v${i}`), "host-a"), m.fd);
      assert(v.revision > last);
      last = v.revision;
    }
    assertEquals((await a.resolve("seq"))?.digest, digestOf(enc.encode("v19")));
  } finally {
    for (const m of fds) m.close();
  }
});
