/**
 * Issue 10, point 3: no LIST blocks the broker or holds its memory, and unread replies are bounded
 * per uid. A store of 20,000 objects with names of 4,000 bytes lists to about 78 MiB. uid 65534
 * (through setpriv) asks for that LIST and does not read it, while this test (root, the broker's
 * own uid) publishes and reads back 50 objects: every request succeeds while the LIST reply is
 * still unread, the broker's resident memory grows by far less than the listing, and a second
 * request of uid 65534 is not even read (its uid holds its share of unread replies) until its LIST
 * has been read. On the old code the broker built the whole listing as one string and one buffer
 * (RSS grew by about twice the listing) and answered uid 65534's second request at once.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { enc, tempDir } from "../support/harness.ts";
import { selectRequest } from "../support/wire.ts";
import { waitFor } from "../support/wait.ts";
import { Client } from "../../src/client.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Agent, brokerForOthers, hex, SKIP } from "../support/peer_agent.ts";
import { digestBytes } from "../../src/hash/digest.ts";
import { formatListLine } from "../../src/protocol/list.ts";

const OBJECTS = 20_000;
const NAME_BYTES = 4_000;

function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) * 1024;
}

const nameOf = (i: number): string => `${String(i).padStart(6, "0")}-${"n".repeat(NAME_BYTES - 7)}`;

Deno.test({
  name: "an unread LIST of 78 MiB neither holds the listing nor stops others; its uid is throttled",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    const config = `${dir.path}/memfdbus.jsonc`;
    // uid 65534 may hold 64 KiB of unsent replies; a LIST's snapshot of 20,000 objects alone
    // counts 160,000 bytes.
    Deno.writeTextFileSync(config, '{ "peerLimits": { "replyBytes": 65536 } }\n');
    await using broker = await brokerForOthers(dir.path, [
      "--config",
      config,
      "--max-objects",
      String(OBJECTS + 100),
    ]);

    // Fill the store from four kept-alive clients at once.
    const data = enc("x");
    const digest = digestBytes(data);
    await Promise.all([0, 1, 2, 3].map(async (k) => {
      await using c = new Client({ socket: broker.socket });
      for (let i = k; i < OBJECTS; i += 4) await c.put(data, { name: nameOf(i) });
    }));
    let listing = 0;
    for (let i = 0; i < OBJECTS; i++) {
      listing += formatListLine({
        id: i + 1,
        owner: null,
        allowed: null,
        size: 1,
        digest,
        name: nameOf(i),
      }).length;
    }
    ok(listing > 78 * 1024 * 1024, `the listing is ${listing} bytes`);
    await using root = new Client({ socket: broker.socket });
    await root.put(enc("probe"), { name: "probe" });
    const before = rssBytes(broker.pid);

    await using agent = Agent.start(dir.path, broker.socket);
    const list = selectRequest(Cmd.LIST, {});
    assertEquals(await agent.do({ op: "send", req: hex(list), data: null, read: false }), {
      sent: true,
      conn: 1,
    });
    await waitFor(async () => (await agent.do({ op: "peek", conn: 1 })).ready === true, {
      what: "the first bytes of uid 65534's LIST reply",
    });
    // A second request of the same uid: not read while its LIST reply holds its share.
    const get = selectRequest(Cmd.GET, { name: "probe" });
    assertEquals(await agent.do({ op: "send", req: hex(get), data: null, read: false }), {
      sent: true,
      conn: 2,
    });

    // Meanwhile root publishes and reads back 50 objects, every one while the LIST is unread.
    for (let i = 0; i < 50; i++) {
      const body = enc(`during-${i}`);
      const { id } = await root.put(body, { name: `during-${i}` });
      using o = await root.get({ id });
      assertEquals(o.text(), `during-${i}`);
    }
    assertEquals(await agent.do({ op: "peek", conn: 2 }), { ready: false });
    const grown = rssBytes(broker.pid) - before;
    ok(
      grown < 24 * 1024 * 1024,
      `the broker's RSS grew by ${grown} bytes for an unread listing of ${listing} bytes`,
    );

    // Reading the LIST: every byte the header announced, in id order; then the GET is served.
    const read = await agent.do({ op: "drain", conn: 1 });
    assertEquals([read.status, read.bytes], [
      0,
      listing + formatListLine({
        id: OBJECTS + 1,
        owner: null,
        allowed: null,
        size: 5,
        digest: digestBytes(enc("probe")),
        name: "probe",
      }).length,
    ]);
    // The GET's reply: status 0 and the object's digest string as its text.
    const got = await agent.do({ op: "drain", conn: 2 });
    assertEquals([got.status, got.bytes], [0, digestBytes(enc("probe")).length]);
  },
});
