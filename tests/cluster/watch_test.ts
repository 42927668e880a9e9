/**
 * Issue 14, point 5: `memfdbus watch` (the real CLI process) on broker B prints what host A
 * publishes and drops. Real nats-server, two real broker processes.
 *
 * @module
 */

import { assertEquals } from "../support/assert.ts";
import { BrokerProcess, CLI, cli, CLI_PERMS, digestOf, enc } from "../support/harness.ts";
import { clusterTest, NatsNode } from "../support/cluster.ts";
import { waitFor } from "../support/wait.ts";

Deno.env.delete("MEMFDBUS_JOB_ID");

interface EventLine {
  kind: string;
  id: string | number;
  name: string;
  size: number;
  digest: string;
}

clusterTest(
  "cluster: memfdbus watch on B prints A's publish and A's drop (id 0: another host)",
  async (dir) => {
    const d = dir.path;
    await using nats = await NatsNode.single();
    await using a = await BrokerProcess.start(d, ["--cluster", nats.url, "--host-id", "w-a"]);
    await using b = await BrokerProcess.start(d, ["--cluster", nats.url, "--host-id", "w-b"]);
    await waitFor(() => b.stderr.includes("cluster connected"), { what: "B connected" });
    const watcher = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...CLI_PERMS,
        CLI,
        "watch",
        "--prefix",
        "remote/",
        "--json",
        "--socket",
        b.socket,
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const lines: string[] = [];
    let stderr = "";
    const reading = (async () => {
      let buf = "";
      for await (const chunk of watcher.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        const parts = buf.split("\n");
        buf = parts.pop() ?? "";
        lines.push(...parts);
      }
    })();
    const errReading = (async () => {
      for await (const c of watcher.stderr.pipeThrough(new TextDecoderStream())) stderr += c;
    })();
    try {
      await waitFor(
        () => b.audit().some((l) => l.op === "watch" && l.result === "ok"),
        { what: "B to accept the watch" },
      );
      const bytes = enc("published on A");
      await Deno.writeFile(`${d}/f`, bytes);
      const p = await cli(["put", `${d}/f`, "--name", "remote/x", "--socket", a.socket]);
      assertEquals([p.code, p.stderr], [0, ""]);
      await waitFor(() => lines.length >= 1, {
        what: `B's watch to print A's publish (${stderr})`,
      });
      const dr = await cli(["drop", "--name", "remote/x", "--socket", a.socket]);
      assertEquals([dr.code, dr.stderr], [0, ""]);
      await waitFor(() => lines.length >= 2, { what: `B's watch to print A's drop (${stderr})` });
      const events = lines.map((l) => JSON.parse(l) as EventLine);
      assertEquals(
        events.map((e) => [e.kind, Number(e.id), e.name, e.size, e.digest]),
        [
          ["publish", 0, "remote/x", bytes.length, digestOf(bytes)],
          ["drop", 0, "remote/x", bytes.length, digestOf(bytes)],
        ],
      );
    } finally {
      try {
        watcher.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      const st = await watcher.status;
      await reading;
      await errReading;
      assertEquals([st.code, stderr], [0, ""]);
    }
  },
);
