/**
 * The metadata budget (`--max-metadata-bytes`): names, job ids and each object's record live on
 * the broker's heap whatever dedup shares, so a uid (65534, through setpriv) publishing the same
 * 4 bytes under 64 KiB names is held to its share of the budget (3/4), the broker keeps serving
 * root, a DROP frees the charge, and the broker-wide limit refuses root with the C broker's store
 * limit text. Before it, such objects were unbounded and the broker died out of heap. Real broker
 * process, real second user; skipped where a second user is impossible.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { enc, tempDir } from "../support/harness.ts";
import { putRequest, selectRequest } from "../support/wire.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Agent, brokerForOthers, NOBODY, SKIP } from "../support/peer_agent.ts";

/** What one object under a 64 KiB name without jobs is charged: 65536 + the 768 B overhead. */
const CHARGE = 65536 + 768;
const longName = (i: number): string => `${i}/`.padEnd(65536, "n");

Deno.test({
  name:
    "a uid publishing tiny deduplicated objects under 64 KiB names is held to 3/4 of --max-metadata-bytes; root goes on until the broker-wide limit",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    // Room for 4 such objects; uid 65534 may hold 3 (3/4 of 4 charges, exactly).
    await using broker = await brokerForOthers(dir.path, [
      "--max-metadata-bytes",
      String(4 * CHARGE),
    ]);
    await using agent = Agent.start(dir.path, broker.socket);
    const same = enc("same");
    for (let i = 1; i <= 3; i++) {
      const r = await agent.request(putRequest(longName(i), same), same);
      assertEquals(r, { status: 0, text: "" }, `put ${i}`);
    }
    const refusal = {
      status: 1,
      text: `uid ${NOBODY} has ${3 * CHARGE} of ${3 * CHARGE} metadata bytes ` +
        `(the per-uid limit, peerLimits.metadataBytes); this put needs ${CHARGE}`,
    };
    assertEquals(await agent.request(putRequest(longName(4), same), same), refusal);

    // Root (the broker's uid, exempt from shares) still publishes, up to the broker-wide limit.
    await using root = new Client({ socket: broker.socket, keepAlive: false });
    const { id } = await root.put(same, { name: longName(100) });
    assertEquals(id, 4n);
    const err = await root.put(enc("x"), { name: "short" }).then(() => null, (e) => e as Error);
    ok(err instanceof BrokerError, `refused with a BrokerError, not ${err}`);
    assertEquals(err.text, "broker object quota exceeded");
    assertEquals((await root.list()).length, 4);

    const usage = await root.usage();
    assertEquals(
      [usage.broker.metadataBytes, usage.broker.maxMetadataBytes],
      [4 * CHARGE, BigInt(4 * CHARGE)],
    );
    const nobody = usage.uids.find((u) => u.uid === NOBODY);
    assertEquals(
      [nobody?.metadataBytes, nobody?.maxMetadataBytes],
      [3 * CHARGE, BigInt(3 * CHARGE)],
    );

    // Dropping one of its objects frees its charge (the uid's and the broker's).
    assertEquals(await agent.request(selectRequest(Cmd.DROP, { id: 1 })), {
      status: 0,
      text: "",
    });
    const after = await root.usage();
    assertEquals(after.broker.metadataBytes, 3 * CHARGE);
    assertEquals(after.uids.find((u) => u.uid === NOBODY)?.metadataBytes, 2 * CHARGE);
    assertEquals(await agent.request(putRequest(longName(5), same), same), {
      status: 0,
      text: "",
    });
    // The broker is full again: the broker-wide limit answers first.
    assertEquals(await agent.request(putRequest(longName(6), same), same), {
      status: 1,
      text: "broker object quota exceeded",
    });
    // Root's object is dropped: the broker has room again, but uid 65534 holds its whole share.
    await root.drop(id);
    assertEquals(await agent.request(putRequest(longName(6), same), same), refusal);
    await root.put(enc("x"), { name: "short" });
  },
});

Deno.test({
  name: "the default --max-metadata-bytes (1 GiB) gives uid 65534 a 768 MiB share, shown by usage",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using broker = await brokerForOthers(dir.path, []);
    await using agent = Agent.start(dir.path, broker.socket);
    const same = enc("same");
    assertEquals(await agent.request(putRequest(longName(1), same), same), {
      status: 0,
      text: "",
    });
    await using root = new Client({ socket: broker.socket, keepAlive: false });
    const usage = await root.usage();
    assertEquals(usage.broker.maxMetadataBytes, 1073741824n);
    const nobody = usage.uids.find((u) => u.uid === NOBODY);
    assertEquals([nobody?.metadataBytes, nobody?.maxMetadataBytes], [CHARGE, 805306368n]);
  },
});
