/**
 * The metrics endpoint is open to every local user (a TCP port on localhost): uid 65534 opening
 * more connections than the broker has descriptors left, each stalled in its request head, must
 * not stop the broker. On `Deno.serve` the accept loop's `EMFILE` was an unhandled rejection that
 * ended the broker process (and every object with it). Real broker, real second user.
 */

import { ok } from "../support/assert.ts";
import { alive, enc, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { Client } from "../../src/client.ts";
import { brokerForOthers, pythonAsNobody, SKIP } from "../support/peer_agent.ts";

/** Connects N times to 127.0.0.1:PORT, sends half a request head on each, says so and waits. */
const FLOOD = `
import socket, sys
held = []
for i in range(int(sys.argv[2])):
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        s.send(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n")
        held.append(s)
    except OSError:
        pass
print("held", len(held), flush=True)
sys.stdin.read()
`;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test({
  name:
    "another uid flooding --metrics past the broker's descriptor limit neither stops it nor blocks its clients",
  ignore: SKIP,
  sanitizeResources: false,
  fn: async () => {
    using dir = tempDir();
    const port = freePort();
    await using broker = await brokerForOthers(dir.path, ["--metrics", `127.0.0.1:${port}`], {
      wrap: ["prlimit", "--nofile=128:128", "--"],
    });
    const flood = pythonAsNobody(["-c", FLOOD, String(port), "400"], {
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const out = flood.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let held = "";
    while (!held.includes("\n")) {
      const { value, done } = await out.read();
      if (done) break;
      held += value;
    }
    ok(held.startsWith("held "), held);
    try {
      await using c = new Client({ socket: broker.socket, keepAlive: false });
      // Every connection was accepted (or closed at once): the broker took all 400.
      const { id } = await c.put(enc("still here"), { name: "during-flood" });
      ok(id > 0n);
      ok((await c.list()).some((e) => e.name === "during-flood"));
      ok(alive(broker.pid), `the broker is running (stderr: ${broker.stderr})`);
    } finally {
      await flood.stdin.close();
      await out.cancel();
      await flood.status;
    }
    // Once the flood is gone, scrapes work again.
    await waitFor(async () => {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/metrics`);
        const text = await r.text();
        return r.status === 200 && text.includes("memfdbus_connections");
      } catch {
        return false;
      }
    }, { what: "a scrape after the flood" });
    ok(alive(broker.pid));
  },
});
