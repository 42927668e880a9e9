/**
 * Exhaustion: a broker under a low RLIMIT_NOFILE keeps answering (defect D6), the object and
 * byte quotas hold at their exact boundaries, and huge claimed sizes allocate nothing.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { Connection } from "../../src/client/connection.ts";
import { BrokerError } from "../../src/errors.ts";
import { closeAll } from "../../src/sys/unix_socket.ts";
import { Cmd, DIGEST_LEN, encodeHeader, Text } from "../../src/protocol/wire.ts";
import { alive, digestOf, enc, request, sealedMemfd, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { exchange, rssKiB, startBroker, statusText } from "../support/faults.ts";
import { listRequest } from "../support/wire.ts";

/** The error of a failed client call as [status, text], or "ok". */
async function outcome(p: Promise<unknown>): Promise<[number, string] | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof BrokerError) return [e.status, e.text];
    throw e;
  }
}

Deno.test("a broker at RLIMIT_NOFILE=64 refuses PUTs with error replies, stays up, lists everything and recovers after a drop", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, [], {
    wrap: ["prlimit", "--nofile=64:64", "--"],
  });
  await using client = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  const acked = new Map<bigint, Uint8Array>();
  let refusals = 0;
  for (let i = 0; i < 200 && refusals < 5; i++) {
    const bytes = enc(`object ${i}`);
    try {
      const { id } = await client.put(bytes, { name: `n${i}` });
      acked.set(id, bytes);
      ok(refusals === 0, "no PUT succeeds once the limit is reached (nothing frees descriptors)");
    } catch (e) {
      ok(e instanceof BrokerError, `a refusal is a broker reply, not ${(e as Error).message}`);
      assertEquals([e.status, e.text], [1, Text.fdLimit]);
      refusals++;
    }
  }
  ok(acked.size > 10 && acked.size < 64, `${acked.size} objects fit under 64 descriptors`);
  assertEquals(refusals, 5);
  ok(alive(broker.pid), "the broker is still running");

  // LIST shows every acknowledged object.
  const listed = (await client.list()).map((e) => e.id);
  assertEquals(listed, [...acked.keys()]);

  // GET either works or (no descriptor left for the reopened object) fails with the exact text.
  const [firstId, firstBytes] = [...acked.entries()][0] ?? [0n, new Uint8Array()];
  const got = await outcome(
    client.get(firstId).then((o) => {
      assertEquals(o.bytes(), firstBytes);
      o.close();
    }),
  );
  ok(
    got === "ok" || (got[0] === 1 && got[1] === Text.reopenFailed),
    `GET: ${JSON.stringify(got)}`,
  );

  // A connection that takes the last descriptor makes the next one hit accept's EMFILE: the
  // broker answers it through its reserve descriptor instead of dying (D6).
  const hog = await Connection.connect(broker.socket, 5000);
  try {
    await waitFor(() => broker.connections() === 1, { what: "the broker to accept the hog" });
    const x = await exchange(broker.socket, listRequest());
    closeAll(x.fds);
    assertEquals(statusText(x), [1, Text.fdLimit]);
    assertEquals(x.header?.cmd, 0);
  } finally {
    hog.close();
  }
  await waitFor(() => broker.connections() === 0, { what: "the broker to close the hog" });
  assertEquals((await client.list()).length, acked.size);

  // Dropping one object frees room: GET and PUT work again.
  assertEquals((await client.drop(firstId)).id, firstId);
  acked.delete(firstId);
  const [secondId, secondBytes] = [...acked.entries()][0] ?? [0n, new Uint8Array()];
  {
    using o = await client.get(secondId);
    assertEquals(o.bytes(), secondBytes);
  }
  const again = await client.put(enc("after the drop"), { name: "again" });
  acked.set(again.id, enc("after the drop"));
  assertEquals((await client.list()).map((e) => e.id), [...acked.keys()]);
  assertEquals(broker.stderr, "");

  // Every refusal was audited as an error with the exact text.
  const limitRecords = await waitFor(() => {
    const r = broker.audit().filter((a) => a.error === Text.fdLimit);
    return r.length >= refusals + 1 ? r : null;
  }, { what: `${refusals + 1} fd-limit audit records` });
  ok(limitRecords.length >= refusals + 1, `${limitRecords.length} fd-limit records`);
  for (const a of limitRecords) assertEquals(a.result, "error");
  assertEquals((await broker.stop()).code, 0);
});

Deno.test("--max-objects accepts exactly N objects and refuses the next with status 1", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--max-objects", "5"]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  const ids: bigint[] = [];
  for (let i = 0; i < 5; i++) ids.push((await client.put(enc(`o${i}`), { name: `o${i}` })).id);
  assertEquals(await outcome(client.put(enc("sixth"), { name: "sixth" })), [1, Text.objectQuota]);
  assertEquals(await outcome(client.put(new Uint8Array(0), { name: "empty" })), [
    1,
    Text.objectQuota,
  ]);
  assertEquals((await client.list()).map((e) => e.id), ids);
  await client.drop(ids[0] ?? 0n);
  const sixth = await client.put(enc("sixth"), { name: "sixth" });
  assertEquals(sixth.id, 6n, "a refused PUT uses no id");
  assertEquals(await outcome(client.put(enc("seventh"), { name: "x" })), [1, Text.objectQuota]);
  const records = await waitFor(() => {
    const r = broker.audit().filter((a) => a.error === Text.objectQuota);
    return r.length >= 3 ? r : null;
  }, { what: "3 object-quota audit records" });
  assertEquals(records.map((a) => [a.op, a.result]), Array(3).fill(["put", "error"]));
  assertEquals((await broker.stop()).code, 0);
});

Deno.test("--max-total-bytes accepts objects summing to exactly the limit and refuses one byte more", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--max-total-bytes", "100"]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  assertEquals(await outcome(client.put(new Uint8Array(101), { name: "too big" })), [
    1,
    Text.objectQuota,
  ]);
  const a = await client.put(new Uint8Array(40).fill(1), { name: "a" });
  const b = await client.put(new Uint8Array(60).fill(2), { name: "b" });
  assertEquals(await outcome(client.put(new Uint8Array(1), { name: "c" })), [1, Text.objectQuota]);
  // A size exactly equal to the remaining room (0) is accepted.
  const empty = await client.put(new Uint8Array(0), { name: "empty" });
  assertEquals((await client.list()).map((e) => [e.id, e.size]), [
    [a.id, 40],
    [b.id, 60],
    [empty.id, 0],
  ]);
  await client.drop(b.id);
  assertEquals(await outcome(client.put(new Uint8Array(61), { name: "d" })), [1, Text.objectQuota]);
  const d = await client.put(new Uint8Array(60).fill(3), { name: "d" });
  assertEquals((await client.list()).map((e) => e.size).reduce((x, y) => x + y, 0), 100);
  ok(d.id > empty.id);
  assertEquals((await broker.stop()).code, 0);
});

Deno.test("huge claimed sizes and lengths are refused without allocating", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path);
  const bytes = enc("small");
  const rssBefore = rssKiB(broker.pid);
  const name = "huge";
  for (const claimed of [1n << 63n, (1n << 64n) - 1n, 1n << 40n]) {
    using m = sealedMemfd(bytes);
    const x = await exchange(
      broker.socket,
      request(
        { cmd: Cmd.PUT, size: claimed, nameLen: name.length, textLen: DIGEST_LEN },
        name,
        digestOf(bytes),
      ),
      [m.fd],
    );
    assertEquals(statusText(x), [3, `size mismatch: header=${claimed} fd=${bytes.length}`]);
  }
  // Lengths that would need gigabytes are refused before any body is read.
  const cases: [Parameters<typeof encodeHeader>[0], [number, string]][] = [
    [{ cmd: Cmd.PUT, nameLen: 0xffffffff }, [3, Text.nameTooLong]],
    [{ cmd: Cmd.PUT, nameLen: 1, textLen: 0xffffffff }, [3, Text.requestTooLarge]],
    [{ cmd: Cmd.PUT, nameLen: 1, textLen: 0xfffffffe }, [3, Text.readName]],
    [{ cmd: Cmd.LIST, jobLen: 256, nameLen: 0xffffffff }, [3, Text.requestTooLarge]],
    [{ cmd: Cmd.GET, nameLen: 65537 }, [3, Text.nameTooLong]],
    [{ cmd: Cmd.GET, objectId: 1n, jobLen: 0xffffffff }, [3, Text.jobTooLong]],
  ];
  for (const [h, expected] of cases) {
    const x = await exchange(broker.socket, encodeHeader(h), [], { shutdown: true });
    assertEquals(
      statusText(x),
      expected,
      JSON.stringify(h, (_k, v) => typeof v === "bigint" ? String(v) : v),
    );
  }
  const grown = rssKiB(broker.pid) - rssBefore;
  ok(grown < 64 * 1024, `the broker grew by ${grown} KiB`);
  ok(alive(broker.pid));
  assertEquals((await broker.stop()).code, 0);
});
