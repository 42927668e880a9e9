/**
 * A stalled stderr must not freeze the broker: its diagnostics (here the summary of records a
 * uid over its audit budget lost) are written only as far as stderr takes them. Before, the
 * broker wrote them with a blocking write(2): with stderr a pipe nobody drained (a stalled journal,
 * or `2>&1` into a stalled audit reader), uid 65534 going over its audit budget once froze the
 * whole broker, and root's requests timed out. Real broker process whose stderr is a full pipe,
 * real second user (setpriv); skipped where a second user is impossible.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { enc, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { Agent, brokerForOthers, NOBODY, SKIP } from "../support/peer_agent.ts";
import { selectRequest } from "../support/wire.ts";
import { Client } from "../../src/client.ts";
import { Cmd } from "../../src/protocol/wire.ts";

/**
 * Runs argv[1:] with stderr a pipe that is already full: its read end stays open (inherited by
 * the program, which never reads it), so a blocking write to stderr would wait forever.
 */
const FULL_STDERR = `
import fcntl, os, sys
r, w = os.pipe()
fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: one page
fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
try:
    while True:
        os.write(w, b"x" * 512)
except BlockingIOError:
    pass
fcntl.fcntl(w, fcntl.F_SETFL, 0)
os.dup2(w, 2)
os.set_inheritable(r, True)
os.execvp(sys.argv[1], sys.argv[1:])
`;

Deno.test({
  name:
    "a uid over its audit budget while the broker's stderr is a full pipe nobody reads does not freeze the broker; root is served",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using broker = await brokerForOthers(dir.path, [
      "--audit-uid-rate",
      "1KiB",
      "--audit-uid-burst",
      "4KiB",
    ], { wrap: ["/usr/bin/python3", "-c", FULL_STDERR] });
    try {
      await using agent = Agent.start(dir.path, broker.socket);
      // GETs of a missing 1 KiB name: a few go over the 4 KiB burst.
      const name = "m".repeat(1024);
      for (let i = 0; i < 12; i++) {
        const r = await agent.request(selectRequest(Cmd.GET, { name }));
        assertEquals(r.status, 2, `get ${i}`);
      }
      // The uid goes quiet: at a sweep the broker writes its summary record, and the line on
      // stderr that said it (the write that used to block).
      await waitFor(
        () => broker.audit().some((r) => r.op === "audit" && r.result === "dropped"),
        { what: `the summary of uid ${NOBODY}'s dropped records`, timeoutMs: 30_000 },
      );
      await using root = new Client({ socket: broker.socket, keepAlive: false, timeoutMs: 20_000 });
      const { id } = await root.put(enc("still served"), { name: "after" });
      ok(id > 0n);
      const obj = await root.get({ name: "after" });
      obj.close();
      // The agent is served too (not frozen, only over its audit budget).
      assertEquals((await agent.request(selectRequest(Cmd.GET, { name }))).status, 2);
    } catch (e) {
      // A frozen broker ignores SIGTERM (its loop never runs again): end it for the cleanup.
      await broker.stop("SIGKILL");
      throw e;
    }
  },
});
