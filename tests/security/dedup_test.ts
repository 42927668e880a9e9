/**
 * Dedup shares a memfd only among one uid's objects. Across uids it was an oracle: uid 65534
 * publishing a guess of a hidden object's bytes (another uid's, another job's) had its object
 * stored on that memfd, so a GET of its own object returned the other uid's memfd (owner uid,
 * memfd name such as `payroll-2026.csv`) and STAT said `shared`: proof that someone stores
 * exactly those bytes. Real broker, real second user.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { enc, tempDir } from "../support/harness.ts";
import { putRequest, selectRequest } from "../support/wire.ts";
import { Client } from "../../src/client.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Agent, brokerForOthers, hex, NOBODY, SKIP } from "../support/peer_agent.ts";

Deno.test({
  name:
    "another uid publishing the bytes of a hidden object gets its own memfd back, never the other uid's",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using broker = await brokerForOthers(dir.path, []);
    const secret = enc("alice,100000\n");
    await using c = new Client({ socket: broker.socket, keepAlive: false, jobId: "hr" });
    await c.put(secret, { name: "hr/payroll" });
    // The same uid still shares: a second copy of its own bytes is stored on the same memfd.
    await c.put(secret, { name: "hr/payroll-copy" });
    assertEquals((await c.stat({ name: "hr/payroll-copy" })).shared, true);

    await using agent = Agent.start(dir.path, broker.socket);
    assertEquals(
      (await agent.request(putRequest("guess", secret, { job: "eve" }), secret)).status,
      0,
    );
    const got = await agent.do({
      op: "send",
      req: hex(selectRequest(Cmd.GET, { name: "guess", job: "eve" })),
      data: null,
      read: true,
      inspect: true,
    });
    const fd = got.fd as { uid: number; link: string } | null;
    assertEquals([got.status, fd?.uid], [0, NOBODY], JSON.stringify(got));
    ok(fd?.link.startsWith("/memfd:agent"), fd?.link);
    const stat = await agent.request(selectRequest(Cmd.STAT, { name: "guess", job: "eve" }));
    assertEquals([stat.status, JSON.parse(String(stat.text)).shared], [0, false]);
  },
});
