/**
 * Quotas survive `memfdbus broker --takeover` (issue 12, point 3): the successor receives each
 * object's owner uid, job and shared memfd with it, so a uid at its quota is still refused and
 * what each job holds is the same before and after. Real broker processes and memfds.
 */
import { assertEquals, ok, rejects } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { BrokerProcess, enc, fdTable, tempDir } from "../support/harness.ts";
import { admitObject, isRefused } from "../../src/shadow/admit.ts";
import { fromWire, toWire } from "../../src/protocol/shadow_frames.ts";
import { sealedMemfd } from "../support/harness.ts";

/** The memfds the process holds. */
function memfdCount(pid: number): number {
  return [...fdTable(pid).values()].filter((t) => t.startsWith("/memfd:")).length;
}

Deno.test("a uid at its quota is still refused after broker --takeover, and usage is the same", async () => {
  using dir = tempDir();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(config, `{ "quotas": { "perUid": { "objects": 2, "bytes": 100 } } }`);
  const old = await BrokerProcess.start(dir.path, ["--config", config]);
  const socket = old.socket;
  await using client = new Client({ socket, jobId: "alpha", keepAlive: false });
  const x = await client.put(enc("same bytes"), { name: "x" });
  await client.put(enc("same bytes"), { name: "y" }); // dedup: one memfd, charged once
  const uid = Deno.uid();
  const refusal = `uid quota exceeded: uid ${uid} holds 2 of 2 objects; ` +
    "drop old versions or raise quotas.perUid";
  const refused = (e: unknown) => e instanceof BrokerError && e.text === refusal;
  await rejects(client.put(enc("third"), { name: "z" }), refused);
  const before = await client.stat(x.id);
  assertEquals(before.ownerUsage, { objects: 2, bytes: 10 });
  assertEquals(before.shared, true);
  assertEquals(memfdCount(old.pid), 1);
  const usageBefore = await client.usage({ jobId: null });
  assertEquals(usageBefore.uids, [{
    uid,
    objects: 2,
    bytes: 10,
    maxObjects: 2n,
    maxBytes: 100n,
    // Names x and y, job alpha, and the per-object overhead; the broker's uid has no share.
    metadataBytes: 2 * (1 + 5 + 768),
    maxMetadataBytes: null,
  }]);

  await using successor = await BrokerProcess.start(dir.path, [
    "--config",
    config,
    "--socket",
    socket,
    "--takeover",
  ]);
  await old.exited();
  await old[Symbol.asyncDispose]();
  await rejects(client.put(enc("third"), { name: "z" }), refused);
  const after = await client.stat(x.id);
  assertEquals(after.ownerUsage, before.ownerUsage);
  assertEquals(after.shared, true);
  assertEquals(memfdCount(successor.pid), 1, "the successor shares the memfd again");
  assertEquals(await client.usage({ jobId: null }), usageBefore);
  // Making room makes room for exactly one more.
  await client.drop(x.id);
  await client.put(enc("third"), { name: "z" });
  await rejects(client.put(enc("fourth"), { name: "w" }), refused);
});

Deno.test("metadata charges are the same after broker --takeover: a full broker still refuses", async () => {
  using dir = tempDir();
  // Room for the metadata of exactly three objects with 2-byte names, job "alpha", allowed "b".
  const charge = 2 + 5 + 1 + 768;
  const old = await BrokerProcess.start(dir.path, ["--max-metadata-bytes", String(3 * charge)]);
  const socket = old.socket;
  await using client = new Client({ socket, jobId: "alpha", keepAlive: false });
  const first = await client.put(enc("same"), { name: "n1", allowJob: "b" });
  await client.put(enc("same"), { name: "n2", allowJob: "b" });
  await client.put(enc("other"), { name: "n3", allowJob: "b" });
  const full = (e: unknown) =>
    e instanceof BrokerError && e.text === "broker object quota exceeded";
  await rejects(client.put(enc("x"), { name: "n4", allowJob: "b" }), full);
  const before = await client.usage({ jobId: null });
  assertEquals(before.broker.metadataBytes, 3 * charge);

  await using successor = await BrokerProcess.start(dir.path, [
    "--max-metadata-bytes",
    String(3 * charge),
    "--socket",
    socket,
    "--takeover",
  ]);
  await old.exited();
  await old[Symbol.asyncDispose]();
  assertEquals(await client.usage({ jobId: null }), before);
  await rejects(client.put(enc("x"), { name: "n4", allowJob: "b" }), full);
  // A drop after the takeover frees the charge the successor took over.
  await client.drop(first.id);
  await client.put(enc("x"), { name: "n4", allowJob: "b" });
  await rejects(client.put(enc("y"), { name: "n5", allowJob: "b" }), full);
  ok(successor.pid > 0);
});

Deno.test("shadow frames carry the owner uid; frames without one are still accepted", () => {
  using m = sealedMemfd(enc("abc"));
  const obj = {
    id: 7,
    size: 3,
    fd: m.fd,
    digest: "sha256:" + "0".repeat(64),
    name: "n",
    owner: "alpha",
    allowed: null,
    createdNs: 5n,
    uid: 1001,
  };
  const wire = toWire(obj);
  assertEquals(wire.uid, 1001);
  assertEquals(fromWire(JSON.parse(JSON.stringify(wire)), -1).uid, 1001);
  const { uid: _, ...old } = wire;
  const parsed = fromWire(JSON.parse(JSON.stringify(old)), -1);
  ok(!("uid" in parsed) || parsed.uid === undefined, "an old frame's object has no uid");
  // A hostile uid is refused like any malformed field (the descriptor is closed).
  const bad = admitObject({ ...wire, uid: -1 }, -1);
  ok(isRefused(bad) && bad.reason === "invalid object after recovery (malformed uid)");
  const big = admitObject({ ...wire, uid: 2 ** 32 }, -1);
  ok(isRefused(big) && big.reason === "invalid object after recovery (malformed uid)");
});
