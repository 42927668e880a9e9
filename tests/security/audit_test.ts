/**
 * Issue 10, point 3: the audit sink never blocks the event loop. A broker whose audit output is
 * a pipe nobody reads keeps answering requests; the records that do not fit its bound are
 * dropped, counted and reported on stderr once the reader catches up, and every line that was
 * written is a whole, valid record. On the old code the broker blocked in write() and every
 * client timed out.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { CLI, CLI_PERMS, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";

Deno.test("a broker with a stalled audit reader keeps answering, then reports the records it dropped", async () => {
  using dir = tempDir();
  const socket = `${dir.path}/bus.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, "broker", "--socket", socket],
    stdin: "null",
    stdout: "piped", // nobody reads it until the end
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  let stderr = "";
  const stderrDone = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  try {
    await using client = new Client({ socket, timeoutMs: 20_000 });
    await waitFor(() => client.list().then(() => true, () => false), {
      what: "the broker",
      timeoutMs: 15_000,
    });
    // Each refused GET of a missing 4000-byte name writes a record of about 4.2 KB: 1300 of them
    // are about 5.5 MB, more than the pipe (64 KiB) and the broker's bound (4 MiB) together.
    const name = "n".repeat(4000);
    for (let i = 0; i < 1300; i++) {
      try {
        (await client.get({ name })).close();
        throw new Error("a missing object was found");
      } catch (e) {
        if (!(e instanceof BrokerError)) throw e;
        assertEquals(e.message, "broker error: object not found");
      }
    }
    // The reader comes back.
    let text = "";
    const stdoutDone = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) text += chunk;
    })();
    const m = await waitFor(
      async () => {
        await client.list(); // wakes the broker, whose flush then catches up
        return /the audit output stalled: (\d+) audit records were dropped/.exec(stderr);
      },
      { what: "the report of dropped audit records on stderr", timeoutMs: 30_000 },
    );
    const dropped = Number(m[1]);
    ok(dropped > 0, stderr);
    child.kill("SIGTERM");
    await child.status;
    await stdoutDone;
    const lines = text.trimEnd().split("\n");
    assertEquals(lines[0], `memfdbus broker listening on ${socket}`);
    const records = lines.slice(1).map((l) => JSON.parse(l) as { op: string });
    const gets = records.filter((r) => r.op === "get").length;
    // Dropped records are GETs (and perhaps a LIST of the wake-up loop): never a GET lost
    // without being counted.
    ok(gets < 1300 && gets + dropped >= 1300, `${gets} written + ${dropped} dropped`);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
    await stderrDone;
  }
});
