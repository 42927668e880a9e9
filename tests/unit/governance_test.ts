/**
 * Memory governance as pure decisions: shared contents and fetch order in the store, retention,
 * per-job and per-uid quotas, eviction under pressure, dedup charging, the refusal texts, the
 * release audit record and the configuration keys that set them.
 */
import { assertEquals, ok, rejects } from "../support/assert.ts";
import { type NewObject, Store, type StoredObject } from "../../src/core/store.ts";
import {
  type Admission,
  type GovernanceRules,
  Governor,
  keepFor,
  MAX_ERROR_TEXT,
  type Quotas,
} from "../../src/core/governance.ts";
import { formatRecord, releaseRecord } from "../../src/core/audit.ts";
import { openRules } from "../support/governance.ts";
import { parseConfig } from "../../src/core/config.ts";
import { defaultBrokerOptions } from "../../src/core/options.ts";
import { UsageError } from "../../src/errors.ts";

const U64_MAX = 18446744073709551615n;
const D = (c: string): string => "sha256:" + c.repeat(64);

let nextFd = 100;
function obj(name: string, size: number, extra: Partial<NewObject> = {}): NewObject {
  return {
    size,
    fd: nextFd++,
    digest: D(String(nextFd % 10)),
    name,
    owner: null,
    allowed: null,
    createdNs: 0n,
    ...extra,
  };
}

const rules = openRules;

/** A store and governor with `rules`, and an `add` that keeps both in step. */
function setup(r: GovernanceRules): {
  store: Store;
  gov: Governor;
  add: (o: NewObject) => StoredObject;
  remove: (o: StoredObject) => boolean;
} {
  const store = new Store({ maxObjects: r.maxObjects, maxTotalBytes: r.maxTotalBytes });
  const gov = new Governor(r, store);
  return {
    store,
    gov,
    add: (o) => {
      const s = store.add(o);
      gov.added(s);
      return s;
    },
    remove: (o) => {
      const last = store.remove(o);
      gov.removed(o);
      return last;
    },
  };
}

function ids(a: Admission): { release: number[]; evict: number[] } | string {
  if (!a.ok) return a.text;
  return { release: a.release.map((r) => r.obj.id), evict: a.evict.map((r) => r.obj.id) };
}

const put = (name: string, size: number, extra: Partial<{
  digest: string;
  owner: string | null;
  uid: number | null;
}> = {}) => ({ name, size, digest: D("f"), owner: null, uid: null, ...extra });

Deno.test("Store counts a shared content once and closes it only with its last object", () => {
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  const a = store.add(obj("a", 100, { fd: 7, digest: D("a") }));
  assertEquals(store.contentOf(D("a"), 100)?.fd, 7);
  assertEquals(store.contentOf(D("a"), 99), undefined, "a size mismatch never shares");
  const b = store.add(obj("b", 100, { fd: 7, digest: D("a") }));
  const c = store.add(obj("c", 50, { fd: 8, digest: D("c") }));
  assertEquals([store.totalBytes, store.uniqueBytes, store.count], [250, 150, 3]);
  assertEquals([store.isShared(a), store.isShared(b), store.isShared(c)], [true, true, false]);
  assertEquals(store.content(7)?.refs, 2);
  assertEquals(store.remove(a), false, "b still uses fd 7");
  assertEquals([store.totalBytes, store.uniqueBytes], [150, 150]);
  assertEquals(store.isShared(b), false);
  assertEquals(store.remove(b), true);
  assertEquals(store.remove(b), false, "removing twice changes nothing");
  assertEquals(store.contentOf(D("a"), 100), undefined);
  assertEquals([store.totalBytes, store.uniqueBytes], [50, 50]);
});

Deno.test("Store orders fetches by a counter and forgets removed objects", () => {
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  const a = store.add(obj("a", 1));
  const b = store.add(obj("a", 1));
  assertEquals([store.lastFetched(a), store.lastFetched(b)], [0, 0]);
  store.touch(b);
  store.touch(a);
  ok(store.lastFetched(a) > store.lastFetched(b));
  store.remove(a);
  assertEquals(store.lastFetched(a), 0);
  store.touch(a);
  assertEquals(store.lastFetched(a), 0, "a removed object is not touched");
  assertEquals(store.versionsOf("a").map((o) => o.id), [b.id]);
});

Deno.test("keepFor: an exact name beats every prefix, the longest prefix beats shorter ones", () => {
  const r = [
    { pattern: "model/", prefix: true, keep: 2 },
    { pattern: "model/big/", prefix: true, keep: 1 },
    { pattern: "model/big/pinned", prefix: false, keep: null },
    { pattern: "logs/", prefix: true, keep: 10 },
  ];
  assertEquals(keepFor(r, null, "model/a"), 2);
  assertEquals(keepFor(r, null, "model/big/a"), 1);
  assertEquals(keepFor(r, 5, "model/big/pinned"), null);
  assertEquals(keepFor(r, 5, "logs/x"), 10);
  assertEquals(keepFor(r, 5, "other"), 5);
  assertEquals(keepFor(r, null, "model"), null, "a prefix matches only names that start with it");
});

Deno.test("retention releases the oldest versions beyond the number kept, never pinned ones", () => {
  const { gov, add } = setup(rules({ retention: [{ pattern: "m/", prefix: true, keep: 2 }] }));
  const v1 = add(obj("m/a", 10));
  const v2 = add(obj("m/a", 10));
  add(obj("other", 10));
  assertEquals(gov.retentionFor("m/a").map((r) => r.obj.id), [v1.id]);
  const v3 = add(obj("m/a", 10));
  assertEquals(gov.retentionFor("m/a").map((r) => r.obj.id), [v1.id, v2.id]);
  // A pinned version counts as kept: the new one and v1 stay, v2 and v3 go.
  assertEquals(gov.retentionFor("m/a", (o) => o === v1).map((r) => r.obj.id), [v2.id, v3.id]);
  assertEquals(gov.retentionFor("other"), [], "no rule and no keepVersions keeps everything");
  assertEquals(ids(gov.admitPut(put("m/a", 10))), { release: [v1.id, v2.id], evict: [] });
});

Deno.test("a job over its byte quota is refused with a text naming the job, while another job publishes", () => {
  const quotas: Quotas = {
    perUid: null,
    uids: new Map(),
    jobs: new Map([["trainer", { bytes: 1000n, objects: null }]]),
  };
  const { gov, add } = setup(rules({ quotas }));
  add(obj("w", 900, { owner: "trainer" }));
  assertEquals(gov.jobUsage("trainer"), { objects: 1, bytes: 900 });
  const refused = gov.admitPut(put("w2", 200, { owner: "trainer" }));
  assertEquals(refused, {
    ok: false,
    limit: "job",
    text: "job quota exceeded: job trainer holds 900 of 1000 bytes, this put needs 200; " +
      "drop old versions or raise quotas.jobs",
  });
  assertEquals(ids(gov.admitPut(put("w2", 100, { owner: "trainer" }))), { release: [], evict: [] });
  assertEquals(ids(gov.admitPut(put("x", 5000, { owner: "other" }))), { release: [], evict: [] });
});

Deno.test("uid quotas: a uid entry overrides perUid, and object counts are checked too", () => {
  const quotas: Quotas = {
    perUid: { bytes: null, objects: 2n },
    uids: new Map([[1001, { bytes: 100n, objects: null }]]),
    jobs: new Map(),
  };
  const { gov, add } = setup(rules({ quotas }));
  add(obj("a", 10, { uid: 1000 }));
  add(obj("b", 10, { uid: 1000 }));
  assertEquals(
    ids(gov.admitPut(put("c", 1, { uid: 1000 }))),
    "uid quota exceeded: uid 1000 holds 2 of 2 objects; drop old versions or raise quotas.perUid",
  );
  assertEquals(
    ids(gov.admitPut(put("c", 101, { uid: 1001 }))),
    "uid quota exceeded: uid 1001 holds 0 of 100 bytes, this put needs 101; " +
      "drop old versions or raise quotas.uids",
  );
  assertEquals(ids(gov.admitPut(put("c", 1, { uid: null }))), { release: [], evict: [] });
});

Deno.test("broker limits keep the C text, and retention counts as freed room", () => {
  const { gov, add } = setup(rules({ maxTotalBytes: 100n, keepVersions: 1 }));
  const v1 = add(obj("a", 80));
  assertEquals(ids(gov.admitPut(put("b", 30))), "broker object quota exceeded");
  assertEquals(ids(gov.admitPut(put("a", 30))), { release: [v1.id], evict: [] });
  const r = gov.admitPut(put("b", 30));
  ok(!r.ok && r.limit === "broker");
});

Deno.test("eviction releases superseded versions, least recently fetched first, never a newest", () => {
  const { store, gov, add } = setup(rules({ maxTotalBytes: 100n, evict: "superseded" }));
  const a1 = add(obj("a", 20));
  const a2 = add(obj("a", 20));
  const b1 = add(obj("b", 20));
  const b2 = add(obj("b", 20));
  const c1 = add(obj("c", 20));
  store.touch(a1);
  store.touch(b1);
  // 100 stored, 30 more needed: b1 was fetched after a1, so a1 goes first, then b1.
  const r = gov.admitPut(put("d", 30));
  assertEquals(ids(r), { release: [], evict: [a1.id, b1.id] });
  ok(r.ok && r.evict.every((e) => e.reason === "broker_bytes"));
  // Never fetched beats fetched: with nothing touched the lowest id goes first.
  store.touch(a1);
  assertEquals(ids(gov.admitPut(put("d", 10))), { release: [], evict: [b1.id] });
  // Pinned objects are never evicted.
  assertEquals(ids(gov.admitPut(put("d", 10), (o) => o === b1)), { release: [], evict: [a1.id] });
  // Only the newest of each name left to free is not enough: refuse and evict nothing.
  assertEquals(ids(gov.admitPut(put("d", 61))), "broker object quota exceeded");
  void a2, b2, c1;
});

/** A store that counts how often the governor walks its names and looks up contents. */
class CountingStore extends Store {
  walks = 0;
  lookups = 0;
  override names(): IterableIterator<[string, readonly StoredObject[]]> {
    this.walks++;
    return super.names();
  }
  override content(fd: number): ReturnType<Store["content"]> {
    this.lookups++;
    return super.content(fd);
  }
}

Deno.test("with eviction on, a PUT that fits walks no stored object, and one that must evict is linear in the objects", () => {
  // A uid holding thousands of superseded versions made every PUT, anyone's, collect and sort
  // them all (a broker with 20,000 of them answered root's PUTs 13 times slower); and trying
  // k evictions recomputed the projection over all k each time, k² steps.
  const r = rules({ maxTotalBytes: 10_000n, evict: "superseded" });
  const store = new CountingStore({ maxObjects: r.maxObjects, maxTotalBytes: r.maxTotalBytes });
  const gov = new Governor(r, store);
  const k = 2000;
  for (let i = 0; i < k; i++) {
    gov.added(store.add(obj("v", 1, { digest: D("a").slice(0, -8) + String(i).padStart(8, "0") })));
  }
  assertEquals(store.uniqueBytes, k);
  assertEquals(ids(gov.admitPut(put("w", 100))), { release: [], evict: [] });
  assertEquals(store.walks, 0);
  // 10,000 bytes cannot fit even with every superseded version gone: refused after one walk,
  // each candidate's content looked up a bounded number of times (not once per earlier one).
  store.lookups = 0;
  assertEquals(ids(gov.admitPut(put("w", 10_000))), "broker object quota exceeded");
  assertEquals(store.walks, 1);
  ok(store.lookups <= 4 * k, `${store.lookups} content lookups for ${k} candidates`);
  // One that fits once 1,000 are evicted evicts exactly those, oldest first.
  const e = gov.admitPut(put("w", 9_000));
  ok(e.ok && e.evict.length === 1000 && e.evict[0]?.obj.id === 1, ids(e).toString());
});

Deno.test("eviction may take the version a PUT of the same name supersedes", () => {
  const { gov, add } = setup(rules({ maxObjects: 1n, evict: "superseded" }));
  const a1 = add(obj("a", 1));
  assertEquals(ids(gov.admitPut(put("b", 1))), "broker object quota exceeded");
  const r = gov.admitPut(put("a", 1));
  assertEquals(ids(r), { release: [], evict: [a1.id] });
  ok(r.ok && r.evict[0]?.reason === "broker_objects");
});

Deno.test("a job's pressure evicts only that job's superseded versions", () => {
  const quotas: Quotas = {
    perUid: null,
    uids: new Map(),
    jobs: new Map([["j", { bytes: 50n, objects: null }]]),
  };
  const { gov, add } = setup(rules({ quotas, evict: "superseded" }));
  add(obj("x", 20)); // unowned, superseded below
  add(obj("x", 20));
  const j1 = add(obj("m", 20, { owner: "j" }));
  add(obj("m", 20, { owner: "j" }));
  const r = gov.admitPut(put("n", 20, { owner: "j" }));
  assertEquals(ids(r), { release: [], evict: [j1.id] });
  ok(r.ok && r.evict[0]?.reason === "job_bytes");
});

Deno.test("dedup: a PUT of stored content shares its memfd and adds no bytes to the broker or a job already holding it", () => {
  const quotas: Quotas = {
    perUid: null,
    uids: new Map(),
    jobs: new Map([["j", { bytes: 150n, objects: null }]]),
  };
  const { store, gov, add, remove } = setup(rules({ maxTotalBytes: 150n, quotas }));
  const a = add(obj("a", 100, { fd: 40, digest: D("a"), owner: "j" }));
  const r = gov.admitPut(put("b", 100, { digest: D("a"), owner: "j" }));
  ok(r.ok);
  assertEquals(r.sharedFd, 40);
  const b = add(obj("b", 100, { fd: r.sharedFd, digest: D("a"), owner: "j" }));
  assertEquals([store.totalBytes, store.uniqueBytes], [200, 100]);
  assertEquals(gov.jobUsage("j"), { objects: 2, bytes: 100 });
  // Another job holding the same content is charged for it (it holds those bytes too).
  const other = gov.admitPut(put("c", 100, { digest: D("a"), owner: "k" }));
  ok(other.ok && other.sharedFd === 40);
  // Without dedup the same PUT would not fit the broker.
  const noDedup = setup(rules({ maxTotalBytes: 150n, dedup: false }));
  noDedup.add(obj("a", 100, { fd: 41, digest: D("a") }));
  assertEquals(
    ids(noDedup.gov.admitPut(put("b", 100, { digest: D("a") }))),
    "broker object quota exceeded",
  );
  assertEquals(remove(a), false);
  assertEquals(gov.jobUsage("j"), { objects: 1, bytes: 100 });
  assertEquals(remove(b), true);
  assertEquals(gov.jobUsage("j"), { objects: 0, bytes: 0 });
  assertEquals([...gov.jobs()], []);
});

Deno.test("dedup with retention: republishing the same bytes under a kept-1 name frees and re-adds nothing", () => {
  const { gov, add } = setup(rules({ maxTotalBytes: 100n, keepVersions: 1 }));
  const a = add(obj("a", 100, { fd: 50, digest: D("a") }));
  const r = gov.admitPut(put("a", 100, { digest: D("a") }));
  assertEquals(ids(r), { release: [a.id], evict: [] });
  ok(r.ok && r.sharedFd === 50, "the new version shares the memfd the old one leaves");
});

Deno.test("refusal texts stay within what a C client shows whole, even for a 256-byte job id", () => {
  const job = "j".repeat(256);
  const quotas: Quotas = {
    perUid: { bytes: 1n, objects: null },
    uids: new Map(),
    jobs: new Map([[job, { bytes: 1n, objects: null }], ["a\nb", { bytes: 1n, objects: null }]]),
  };
  const { gov } = setup(rules({ quotas }));
  const big = Number.MAX_SAFE_INTEGER;
  for (const p of [put("a", big, { owner: job }), put("a", big, { uid: 4294967295 })]) {
    const r = gov.admitPut(p);
    ok(!r.ok);
    ok(r.text.length <= MAX_ERROR_TEXT, `${r.text.length}: ${r.text}`);
  }
  const r = gov.admitPut(put("a", 2, { owner: "a\nb" }));
  ok(!r.ok && r.text.includes("job a?b holds"), "control bytes are not echoed");
});

Deno.test("a Governor built over a restored store accounts for what it already holds", () => {
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  store.add(obj("a", 7, { owner: "j", uid: 5 }));
  const gov = new Governor(rules(), store);
  assertEquals([gov.jobUsage("j"), gov.uidUsage(5)], [{ objects: 1, bytes: 7 }, {
    objects: 1,
    bytes: 7,
  }]);
});

Deno.test("release and evict audit records keep the twelve keys and add reason and cause_id", () => {
  const o = { id: 3, name: "model/a", size: 10, digest: D("a"), owner: "trainer" };
  assertEquals(
    formatRecord(5n, releaseRecord(o, "release", "retention", 9)),
    '{"ts_ns":5,"op":"release","operation":"release","result":"ok","selector":null,' +
      `"object_id":3,"name":"model/a","size":10,"count":null,"digest":"${D("a")}",` +
      '"job_id":"trainer","error":null,"reason":"retention","cause_id":9}\n',
  );
  const line = formatRecord(5n, releaseRecord({ ...o, owner: null }, "evict", "broker_bytes", 4), {
    pid: 1,
    uid: 2,
    gid: 3,
  });
  assertEquals(
    Object.keys(JSON.parse(line)).slice(10),
    ["job_id", "error", "reason", "cause_id", "peer_pid", "peer_uid", "peer_gid"],
  );
  ok(line.includes('"op":"evict","operation":"evict"') && line.includes('"job_id":null'));
});

const PATH = "/etc/memfdbus.jsonc";
const parse = (text: string) => parseConfig(text, PATH, defaultBrokerOptions());

Deno.test("config keys keepVersions, retention, quotas, evict, dedup and metrics", async () => {
  const { options } = await parse(`{
    // a model-serving host
    "keepVersions": 4,
    "retention": { "model/*": 2, "logs/*": 10, "model/pinned": "unlimited" },
    "quotas": {
      "perUid": { "bytes": "8GiB", "objects": 1000 },
      "uids": { "1001": { "bytes": 1048576 } },
      "jobs": { "trainer": { "bytes": "64 MiB", "objects": 10 } },
    },
    "evict": "superseded",
    "dedup": false,
    "metrics": "127.0.0.1:9464",
  }`);
  assertEquals(options.keepVersions, 4);
  assertEquals(options.retention, [
    { pattern: "model/", prefix: true, keep: 2 },
    { pattern: "logs/", prefix: true, keep: 10 },
    { pattern: "model/pinned", prefix: false, keep: null },
  ]);
  assertEquals(options.quotas.perUid, { bytes: 8n << 30n, objects: 1000n });
  assertEquals(options.quotas.uids.get(1001), { bytes: 1048576n, objects: null });
  assertEquals(options.quotas.jobs.get("trainer"), { bytes: 64n << 20n, objects: 10n });
  assertEquals([options.evict, options.dedup], ["superseded", false]);
  assertEquals(options.metrics, { kind: "tcp", hostname: "127.0.0.1", port: 9464 });
});

Deno.test('every byte limit in the config takes a byte count: 51539607552 or "48GiB"', async () => {
  const { options } = await parse(`{
    "maxTotalBytes": "48GiB",
    "maxRequestBytes": "1MiB",
    "maxListBytes": 65536,
    "maxMetadataBytes": "256MiB",
  }`);
  assertEquals(
    [options.maxTotalBytes, options.maxRequestBytes, options.maxListBytes],
    [48n << 30n, 1 << 20, 65536],
  );
  assertEquals(options.maxMetadataBytes, 256n << 20n);
  assertEquals(
    (await parse('{ "maxTotalBytes": "18446744073709551615" }')).options.maxTotalBytes,
    18446744073709551615n,
  );
  await rejects(parse('{\n "maxListBytes": "4GiB"\n}'), {
    message: `${PATH}:2: maxListBytes: expected a byte count from 1 to 4294967295, such as ` +
      '1073741824 or "1GiB"',
  });
  await rejects(parse('{\n "maxTotalBytes": "48 GB"\n}'), {
    message: `${PATH}:2: maxTotalBytes: expected a byte count from 1 to 18446744073709551615, ` +
      'such as 1073741824 or "1GiB"',
  });
});

Deno.test("governance config mistakes name FILE:LINE: key: and the nested value's own line", async () => {
  const cases: [string, string][] = [
    [
      '{\n "keepVersions": 0\n}',
      `${PATH}:2: keepVersions: expected an integer from 1 to 2147483647`,
    ],
    [
      '{\n "retention": {\n  "a*b": 2\n }\n}',
      `${PATH}:3: retention: "a*b": expected a name, or a prefix ending in one *`,
    ],
    [
      '{\n "retention": {\n  "a/*": 0\n }\n}',
      `${PATH}:3: retention: "a/*": expected a number of versions from 1 to 2147483647 or "unlimited"`,
    ],
    [
      '{\n "quotas": {\n  "jobs": {\n   "t": { "bytes": "8GB" }\n  }\n }\n}',
      `${PATH}:4: quotas: jobs.t.bytes: expected a byte count such as 1073741824 or "8GiB"`,
    ],
    [
      '{\n "quotas": {\n  "uids": { "me": {} }\n }\n}',
      `${PATH}:3: quotas: uids: "me" is not a uid from 0 to 4294967295`,
    ],
    [
      '{\n "quotas": {\n  "perUid": { "files": 1 }\n }\n}',
      `${PATH}:3: quotas: perUid: unknown key "files"`,
    ],
    ['{\n "quotas": { "perJob": {} }\n}', `${PATH}:2: quotas: unknown key "perJob"`],
    // A key one typo away from a known one names it.
    ['{\n "maxObject": 5\n}', `${PATH}:2: maxObject: unknown key (did you mean "maxObjects"?)`],
    [
      '{\n "quotas": { "perUId": {}, "jobs": {} }\n}',
      `${PATH}:2: quotas: unknown key "perUId" (did you mean "perUid"?)`,
    ],
    [
      '{\n "quotas": { "perUid": { "byte": 1 } }\n}',
      `${PATH}:2: quotas: perUid: unknown key "byte" (did you mean "bytes"?)`,
    ],
    [
      '{\n "peerLimits": { "conections": 1 }\n}',
      `${PATH}:2: peerLimits: unknown key "conections" (did you mean "connections"?)`,
    ],
    ['{\n "evict": "lru"\n}', `${PATH}:2: evict: expected "superseded" or "none"`],
    [
      '{\n "metrics": 9464\n}',
      `${PATH}:2: metrics: expected "HOST:PORT" such as "127.0.0.1:9464" or a socket path`,
    ],
  ];
  for (const [text, message] of cases) {
    await rejects(parse(text), (e: unknown) => {
      ok(e instanceof UsageError, String(e));
      assertEquals(e.message, message);
      return true;
    });
  }
  await rejects(parseConfig('{ "quotas": {} }', PATH, defaultBrokerOptions(), true), {
    message: `${PATH}:1: quotas: not a policy key`,
  });
  await rejects(parseConfig('{ "requireJobs": true }', PATH, defaultBrokerOptions(), true), {
    message: `${PATH}:1: requireJobs: not a policy key (did you mean "requireJob"?)`,
  });
});
