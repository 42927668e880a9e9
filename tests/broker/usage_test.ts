/**
 * `memfdbus usage` and `client.usage()` on the real broker (issue 12, point 2): objects and bytes
 * charged (identical contents once) per job and per uid next to their quotas, who sees what (a
 * job its own line; root and the broker's uid every uid, another uid only its own), and a C
 * broker answering `unknown command`.
 */
import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { UnsupportedError } from "../../src/errors.ts";
import { parseUsage } from "../../src/protocol/usage.ts";
import { Cmd, encodeHeader } from "../../src/protocol/wire.ts";
import { BrokerProcess, cli, enc, tempDir } from "../support/harness.ts";
import { Agent, brokerForOthers, NOBODY, SKIP } from "../support/peer_agent.ts";
import { waitFor } from "../support/wait.ts";

const C_BROKER = "/work/cref/build/memfdbus";
const hasCBroker = (() => {
  try {
    return Deno.statSync(C_BROKER).isFile;
  } catch {
    return false;
  }
})();

Deno.test("usage shows objects and bytes charged per job and uid next to their quotas, as the policy allows", async () => {
  using dir = tempDir();
  const uid = Deno.uid();
  const config = `${dir.path}/bus.jsonc`;
  Deno.writeTextFileSync(
    config,
    `{ "quotas": { "jobs": { "alpha": { "objects": 10, "bytes": "1MiB" }, "idle": { "objects": 1 } },
       "uids": { "${uid}": { "objects": 5 } } } }`,
  );
  await using broker = await BrokerProcess.start(dir.path, [
    "--config",
    config,
    "--max-objects",
    "100",
  ]);
  await using alpha = new Client({ socket: broker.socket, jobId: "alpha" });
  await using beta = new Client({ socket: broker.socket, jobId: "beta" });
  await using open = new Client({ socket: broker.socket, jobId: null });
  const same = new Uint8Array(1000).fill(7);
  await alpha.put(same, { name: "x" });
  await alpha.put(same, { name: "y" }); // identical: one memfd, charged once
  await beta.put(enc("beta!"), { name: "b" });

  const all = await open.usage();
  assertEquals(all, {
    scope: "all",
    // Metadata: each object's name and owner job bytes plus 768 (x, y: 1 + 5; b: 1 + 4).
    broker: {
      objects: 3,
      bytes: 1005,
      maxObjects: 100n,
      maxBytes: null,
      metadataBytes: 3 * 768 + 6 + 6 + 5,
      maxMetadataBytes: 1073741824n,
    },
    jobs: [
      { job: "alpha", objects: 2, bytes: 1000, maxObjects: 10n, maxBytes: 1048576n },
      { job: "beta", objects: 1, bytes: 5, maxObjects: null, maxBytes: null },
      { job: "idle", objects: 0, bytes: 0, maxObjects: 1n, maxBytes: null },
    ],
    // The broker's own uid is exempt from the metadata share: no per-uid metadata limit.
    uids: [{
      uid,
      objects: 3,
      bytes: 1005,
      maxObjects: 5n,
      maxBytes: null,
      metadataBytes: 3 * 768 + 6 + 6 + 5,
      maxMetadataBytes: null,
    }],
  });
  // A job sees its own line only.
  const mine = await alpha.usage();
  assertEquals(mine.scope, "own");
  assertEquals(mine.jobs, [all.jobs[0]]);
  assertEquals(mine.uids, all.uids);

  const table = await cli(["usage", "--socket", broker.socket]);
  assertEquals(table.code, 0, table.stderr);
  // The holder column is as wide as its longest entry (the uid's may be the longest).
  const w = Math.max("job alpha".length, `uid ${uid}`.length);
  const rowOf = (holder: string, rest: string) => `${holder.padEnd(w)}${rest}`;
  assertEquals(
    table.stdout,
    [
      rowOf("HOLDER", "  OBJECTS  MAX_OBJECTS  BYTES  MAX_BYTES"),
      rowOf("broker", "        3          100   1005          -"),
      rowOf("job alpha", "        2           10   1000    1048576"),
      rowOf("job beta", "        1            -      5          -"),
      rowOf("job idle", "        0            1      0          -"),
      rowOf(`uid ${uid}`, "        3            5   1005          -"),
      "",
    ].join("\n"),
  );
  const json = await cli(["usage", "--socket", broker.socket, "--job-id", "beta", "--json"]);
  assertEquals(json.code, 0, json.stderr);
  assertEquals(JSON.parse(json.stdout), {
    scope: "own",
    broker: {
      objects: 3,
      bytes: 1005,
      max_objects: 100,
      max_bytes: null,
      metadata_bytes: 2321,
      max_metadata_bytes: 1073741824,
    },
    jobs: [{ job: "beta", objects: 1, bytes: 5, max_objects: null, max_bytes: null }],
    uids: [{
      uid,
      objects: 3,
      bytes: 1005,
      max_objects: 5,
      max_bytes: null,
      metadata_bytes: 2321,
      max_metadata_bytes: null,
    }],
  });
  const lines = await waitFor(() => {
    const l = broker.audit().filter((r) => r.op === "usage");
    return l.length >= 4 ? l : null;
  }, { what: "four usage audit records", timeoutMs: 10_000 });
  assertEquals(lines.map((l) => [l.result, l.job_id]), [
    ["ok", null],
    ["ok", "alpha"],
    ["ok", null],
    ["ok", "beta"],
  ]);
});

Deno.test({
  name: "another uid sees only its own uid's usage, with its fair share as the quota",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using broker = await brokerForOthers(dir.path, ["--max-objects", "8"]);
    await using root = new Client({ socket: broker.socket, jobId: null });
    await root.put(enc("root's"), { name: "r" });
    await using agent = Agent.start(dir.path, broker.socket);
    const r = await agent.request(encodeHeader({ cmd: Cmd.USAGE }));
    assertEquals(r.status, 0, JSON.stringify(r));
    const report = parseUsage(String(r.text));
    assertEquals(report.scope, "own");
    // 3/4 of --max-objects 8, and no byte limit: --max-total-bytes has none to share; 3/4 of
    // the default --max-metadata-bytes (1 GiB).
    assertEquals(report.uids, [
      {
        uid: NOBODY,
        objects: 0,
        bytes: 0,
        maxObjects: 6n,
        maxBytes: null,
        metadataBytes: 0,
        maxMetadataBytes: 805306368n,
      },
    ]);
    assertEquals(report.broker.objects, 1);
    // Root (the operator) sees every uid that holds something.
    assertEquals((await root.usage()).uids.map((u) => u.uid), [Deno.uid()]);
  },
});

Deno.test({
  name: "usage against the C broker says the broker does not support it, exit 1",
  ignore: !hasCBroker,
  fn: async () => {
    using dir = tempDir();
    const socket = `${dir.path}/c.sock`;
    const child = new Deno.Command(C_BROKER, {
      args: ["broker", "--socket", socket],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(() => {
        try {
          return Deno.statSync(socket).isSocket;
        } catch {
          return false;
        }
      }, { what: "the C broker's socket", timeoutMs: 10_000 });
      const r = await cli(["usage", "--socket", socket]);
      assertEquals(r.code, 1);
      assertEquals(
        r.stderr,
        "the broker does not support usage (a C memfdbus broker or an older memfdbus)\n",
      );
      await using client = new Client({ socket, jobId: null });
      const err = await client.usage().then(() => null, (e) => e as Error);
      ok(err instanceof UnsupportedError && err.feature === "usage", String(err));
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  },
});
