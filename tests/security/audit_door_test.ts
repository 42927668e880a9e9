/**
 * Connections refused at the door (`broker client quota exceeded`, before any request) are audit
 * records too, and the per-uid audit budget charges them to the peer's uid whether or not the log
 * shows peers (--audit-peer). Before, the broker looked the peer up only for --audit-peer, so
 * without it (the default) these records were never charged: uid 65534 reconnecting to a full
 * broker wrote one record per attempt whatever its budget. Real broker, real second user
 * (setpriv); assertions on what the audit output holds, never on time.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { Agent, brokerForOthers, NOBODY, SKIP } from "../support/peer_agent.ts";

/** Refused connections uid 65534 makes once the broker is full. */
const ATTEMPTS = 60;

Deno.test({
  name:
    "connections refused at the door are charged to the uid's audit budget without --audit-peer",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    // 4 connections in all, 3 for uid 65534; a budget of one record or so, refilled slowly.
    await using broker = await brokerForOthers(dir.path, [
      "--max-clients",
      "4",
      "--idle-timeout-ms",
      "600000",
      "--request-timeout-ms",
      "600000",
      "--audit-uid-rate",
      "1",
      "--audit-uid-burst",
      "512",
    ]);
    await using holder = Agent.start(dir.path, broker.socket);
    await using agent = Agent.start(dir.path, broker.socket);
    // The broker full: uid 65534 holds its 3 connections, root the last one.
    for (let i = 0; i < 3; i++) await holder.do({ op: "hold" });
    const root = await Deno.connect({ transport: "unix", path: broker.socket });
    try {
      // Each further connection of uid 65534 is refused at the door with a record.
      for (let i = 0; i < ATTEMPTS; i++) {
        const r = await agent.request(new Uint8Array(0));
        assertEquals(r, { status: 1, text: "broker client quota exceeded" }, `attempt ${i}`);
      }
      // Its records past the budget are dropped and summed up (at a sweep once it is quiet).
      const refused = () =>
        broker.audit().filter((r) => r.error === "broker client quota exceeded").length;
      const summed = () =>
        broker.audit().filter((r) => r.op === "audit" && r.result === "dropped")
          .reduce((n, r) => n + (r.count ?? 0), 0);
      await waitFor(() => refused() + summed() === ATTEMPTS, {
        what: `every refusal of uid ${NOBODY} written or counted in a summary`,
        timeoutMs: 30_000,
      });
      ok(refused() < ATTEMPTS / 2, `${refused()} of ${ATTEMPTS} refusals written`);
    } finally {
      root.close();
    }
  },
});
