/**
 * Issue 10, point 4: fair shares. One uid (65534, through setpriv) exhausts each per-uid budget
 * (connections, parked waits, objects, bytes) while another uid (this test, root: the broker's
 * own) keeps working. On the old code the second uid was the one refused, with the broker-wide
 * error. Real broker process, real second user; skipped where a second user is impossible.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, enc, tempDir } from "../support/harness.ts";
import { putRequest, selectRequest } from "../support/wire.ts";
import { letTimePass } from "../support/wait.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { encodeWatchRequest } from "../../src/protocol/watch.ts";
import { Cmd, Flag, withExt } from "../../src/protocol/wire.ts";
import { Agent, brokerForOthers, hex, NOBODY, SKIP } from "../support/peer_agent.ts";

const list = (): Uint8Array => selectRequest(Cmd.LIST, {});

Deno.test({
  name:
    "one uid holding its share of connections is refused, naming the limit; another still connects",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    // 8 clients: uid 65534 may hold 6.
    await using broker = await brokerForOthers(dir.path, ["--max-clients", "8"]);
    await using agent = Agent.start(dir.path, broker.socket);
    for (let i = 1; i <= 6; i++) assertEquals(await agent.do({ op: "hold" }), { held: i });
    assertEquals(await agent.request(list()), {
      status: 1,
      text: `uid ${NOBODY} has 6 of 6 connections (the per-uid limit, peerLimits.connections)`,
    });
    await using c = new Client({ socket: broker.socket, keepAlive: false });
    await c.put(enc("mine"), { name: "root-still-works" });
    assertEquals((await c.list()).map((e) => e.name), ["root-still-works"]);
  },
});

Deno.test({
  name:
    "one uid holding its share of parked waits is refused, naming the limit; another still parks",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    // 4 parked waits: uid 65534 may park 3.
    await using broker = await brokerForOthers(dir.path, ["--max-waiters", "4"]);
    await using agent = Agent.start(dir.path, broker.socket);
    const wait = selectRequest(Cmd.GET, { name: "later", reserved: withExt(Flag.WAIT) });
    for (let i = 0; i < 3; i++) {
      assertEquals(await agent.do({ op: "send", req: hex(wait), data: null, read: false }), {
        sent: true,
        conn: 2 * i + 1,
      });
      // A LIST round trip: the broker has handled the wait before anything sent after it.
      assertEquals(await agent.request(list()), { status: 0, text: "" });
    }
    assertEquals(await agent.request(wait), {
      status: 1,
      text: `uid ${NOBODY} has 3 of 3 parked waits (the per-uid limit, peerLimits.waits)`,
    });
    await using waiter = new Client({ socket: broker.socket, keepAlive: false });
    await using publisher = new Client({ socket: broker.socket, keepAlive: false });
    const parked = waiter.get({ name: "later" }, { wait: true });
    // Publish once the broker counts the root waiter's connection too (3 + 3 barriers + 1).
    const end = performance.now() + 30_000;
    let got: string | null = null;
    while (got === null && performance.now() < end) {
      await publisher.put(enc("now"), { name: "later" });
      const r = await Promise.race([parked, letTimePass(50).then(() => null)]);
      if (r !== null) {
        got = r.text();
        r.close();
      }
    }
    assertEquals(got, "now", "the root uid's GET --wait was not answered");
  },
});

Deno.test({
  name:
    "one uid at its share of objects and of bytes is refused before hashing; another still publishes",
  ignore: SKIP,
  fn: async (t) => {
    await t.step("objects: 4 in all, uid 65534 may store 3", async () => {
      using dir = tempDir();
      await using broker = await brokerForOthers(dir.path, ["--max-objects", "4"]);
      await using agent = Agent.start(dir.path, broker.socket);
      for (let i = 0; i < 3; i++) {
        const data = enc(`obj${i}`);
        const r = await agent.request(putRequest(`n${i}`, data), data);
        assertEquals(r.status, 0, JSON.stringify(r));
      }
      const data = enc("one too many");
      assertEquals(await agent.request(putRequest("n3", data), data), {
        status: 1,
        text: `uid ${NOBODY} has 3 of 3 objects (the per-uid limit, quotas.perUid)`,
      });
      await using c = new Client({ socket: broker.socket, keepAlive: false });
      const { id } = await c.put(enc("root"), { name: "root-obj" });
      assertEquals(id, 4n);
    });
    await t.step("bytes: 4000 in all, uid 65534 may store 3000", async () => {
      using dir = tempDir();
      await using broker = await brokerForOthers(dir.path, ["--max-total-bytes", "4000"]);
      await using agent = Agent.start(dir.path, broker.socket);
      for (let i = 0; i < 2; i++) {
        const data = new Uint8Array(1000).fill(i + 1);
        const r = await agent.request(putRequest(`b${i}`, data), data);
        assertEquals(r.status, 0, JSON.stringify(r));
      }
      const big = new Uint8Array(1500).fill(9);
      assertEquals(await agent.request(putRequest("b2", big), big), {
        status: 1,
        text: `uid ${NOBODY} has 2000 of 3000 bytes (the per-uid limit, quotas.perUid); ` +
          `this put needs 1500`,
      });
      await using c = new Client({ socket: broker.socket, keepAlive: false });
      await c.put(new Uint8Array(1500).fill(7), { name: "root-bytes" });
      ok((await c.list()).some((e) => e.name === "root-bytes"));
    });
  },
});

Deno.test({
  name:
    "one uid holding its share of watch streams is refused, naming the limit; another still watches until the broker-wide limit",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    // 4 watchers: uid 65534 may hold 3.
    await using broker = await brokerForOthers(dir.path, ["--max-watchers", "4"]);
    await using agent = Agent.start(dir.path, broker.socket);
    const watch = encodeWatchRequest({ kind: "all" }, null);
    for (let i = 0; i < 3; i++) {
      assertEquals(await agent.request(watch), { status: 0, text: "" });
    }
    assertEquals(await agent.request(watch), {
      status: 1,
      text: `uid ${NOBODY} has 3 of 3 watchers (the per-uid limit, peerLimits.watchers)`,
    });
    // The broker's own uid has no per-uid share, but the broker-wide limit holds for everyone.
    await using c = new Client({ socket: broker.socket, keepAlive: false });
    using mine = await c.watch({ name: "x" });
    const err = await c.watch({ name: "y" }).then(() => null, (e) => e as Error);
    ok(err instanceof BrokerError, `refused with a BrokerError, not ${err}`);
    assertEquals(
      err.text,
      "the broker has 4 of 4 watchers (the broker-wide limit, --max-watchers or maxWatchers)",
    );
    // The events still reach the agent's streams and this one.
    await c.put(enc("v"), { name: "x" });
    const first = await mine[Symbol.asyncIterator]().next();
    assertEquals(first.value?.kind, "publish");
  },
});

Deno.test("a bound job holds at most 3/4 of the objects and parked waits, naming the limit; others go on", async (t) => {
  using dir = tempDir();
  const config = `${dir.path}/memfdbus.jsonc`;
  Deno.writeTextFileSync(config, '{ "jobs": { "trainer": { "uids": [0] } } }\n');
  await using broker = await BrokerProcess.start(dir.path, [
    "--config",
    config,
    "--max-objects",
    "4",
    "--max-waiters",
    "4",
  ]);
  await t.step(
    "objects: the job stores 3 of 4, then is refused; an unscoped put still fits",
    async () => {
      await using trainer = new Client({ socket: broker.socket, jobId: "trainer" });
      for (let i = 0; i < 3; i++) await trainer.put(enc(`t${i}`), { name: `t${i}` });
      const refused = await trainer.put(enc("t3"), { name: "t3" }).then(
        () => null,
        (e: Error) => e,
      );
      assertEquals(
        refused?.message,
        "broker error: job quota exceeded: job trainer holds 3 of 3 objects; " +
          "drop old versions or raise quotas.jobs",
      );
      await using other = new Client({ socket: broker.socket });
      const { id } = await other.put(enc("free"), { name: "free" });
      assertEquals(id, 4n);
    },
  );
  await t.step(
    "waits: the job parks 3 of 4, then is refused; an unscoped wait still parks",
    async () => {
      const wait = (job: string | null) =>
        selectRequest(Cmd.GET, {
          name: "later",
          reserved: withExt(Flag.WAIT),
          ...(job ? { job } : {}),
        });
      const raws: Deno.Conn[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          const c = await Deno.connect({ transport: "unix", path: broker.socket });
          raws.push(c);
          await c.write(wait("trainer"));
        }
        await using probe = new Client({ socket: broker.socket, jobId: "trainer" });
        // A LIST round trip: the broker has handled the waits sent before it.
        await probe.list();
        const text = await probe.get({ name: "later" }, { wait: true }).then(
          () => "answered",
          (e: Error) => e.message,
        );
        assertEquals(
          text,
          "broker error: job trainer has 3 of 3 parked waits (the per-job limit, 3/4 of --max-waiters)",
        );
        await using free = new Client({ socket: broker.socket });
        const parked = free.get({ name: "later" }, { wait: true });
        await using pub = new Client({ socket: broker.socket });
        // Make room (the store holds its 4 objects), then publish: every parked wait is
        // answered, the unscoped one included.
        await pub.drop({ name: "free" });
        const end = performance.now() + 30_000;
        let got: string | null = null;
        while (got === null && performance.now() < end) {
          await pub.put(enc("now"), { name: "later" }).catch(() => {});
          const r = await Promise.race([parked, letTimePass(50).then(() => null)]);
          if (r !== null) {
            got = r.text();
            r.close();
          }
        }
        assertEquals(got, "now");
      } finally {
        for (const c of raws) c.close();
      }
    },
  );
});
