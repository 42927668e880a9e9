/**
 * Identity: the socket file's mode, peer credentials in the audit log, job ids bound to uids and
 * gids by a policy file (checked from a second uid), --require-job, --protect-names, and the
 * configuration file's error messages.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { Connection } from "../../src/client/connection.ts";
import { BrokerError } from "../../src/errors.ts";
import { PolicyText } from "../../src/core/policy.ts";
import { Text } from "../../src/protocol/wire.ts";
import { AUDIT_KEYS, type BrokerProcess, cli, enc, ROOT, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { exchange, startBroker, statusText } from "../support/faults.ts";
import { listRequest } from "../support/wire.ts";

const OTHER_UID = 65534;
const PEER_KEYS = [...AUDIT_KEYS, "peer_pid", "peer_uid", "peer_gid"];

/** [status, text] of a failed call, or "ok". */
async function outcome(p: Promise<unknown>): Promise<[number, string] | "ok"> {
  try {
    const v = await p;
    if (v !== null && typeof v === "object" && "close" in v) (v as { close(): void }).close();
    return "ok";
  } catch (e) {
    if (e instanceof BrokerError) return [e.status, e.text];
    throw e;
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Audit records once at least `n` exist (raw key order kept). */
async function records(broker: BrokerProcess, n: number): Promise<Record<string, unknown>[]> {
  await broker.waitAudit(n);
  return broker.lines.slice(1).map((l) => JSON.parse(l) as Record<string, unknown>);
}

// ---- the socket file -------------------------------------------------------------------------

Deno.test("the socket file is created with mode 0600 by default and follows --socket-mode whatever the umask", async () => {
  using dir = tempDir();
  const modes: string[] = [];
  for (
    const [args, wrap] of [
      [[], []],
      [["--socket-mode", "0660"], []],
      [["--socket-mode", "666"], []],
      [["--socket-mode", "0640"], ["sh", "-c", 'umask 077 && exec "$0" "$@"']],
      [[], ["sh", "-c", 'umask 000 && exec "$0" "$@"']],
    ] as const
  ) {
    await using broker = await startBroker(dir.path, args, { wrap });
    modes.push((Deno.lstatSync(broker.socket).mode ?? 0).toString(8).slice(-3));
    assertEquals((await broker.stop()).code, 0);
  }
  assertEquals(modes, ["600", "660", "666", "640", "600"]);
});

Deno.test("an invalid --socket-mode is refused before the socket file is created", async () => {
  using dir = tempDir();
  for (const mode of ["0800", "rw", "07777", ""]) {
    const socket = `${dir.path}/bad.sock`;
    const r = await cli(["broker", "--socket", socket, "--socket-mode", mode]);
    assertEquals([r.code, r.stderr, exists(socket)], [
      2,
      `invalid --socket-mode: ${mode}\n`,
      false,
    ]);
  }
});

// ---- peer credentials in the audit log ---------------------------------------------------------

Deno.test("--audit-peer appends peer_pid, peer_uid and peer_gid after the twelve keys", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--audit-peer"]);
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  const { id } = await c.put(enc("peer"), { name: "p" });
  (await c.get(id)).close();
  assertEquals(await outcome(c.get(999n)), [2, Text.notFound]);
  const bad = await exchange(broker.socket, new Uint8Array(48));
  assertEquals(statusText(bad), [3, Text.badHeader]);
  const recs = await records(broker, 4);
  assertEquals(recs.map((r) => [r.op, r.result]), [
    ["put", "ok"],
    ["get", "ok"],
    ["get", "not_found"],
    ["unknown", "bad_request"],
  ]);
  for (const r of recs) {
    assertEquals(Object.keys(r), PEER_KEYS, `keys of ${JSON.stringify(r)}`);
    assertEquals([r.peer_pid, r.peer_uid, r.peer_gid], [Deno.pid, Deno.uid(), Deno.gid()]);
  }
  assertEquals((await broker.stop()).code, 0);
});

// The broker's usage text: "--audit-peer  add the peer's pid, uid and gid to every audit record".
Deno.test("--audit-peer also identifies the peer in the record of a client refused over --max-clients", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--audit-peer", "--max-clients", "1"]);
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  const holder = await Connection.connect(broker.socket, 5000);
  try {
    await waitFor(() => broker.connections() === 1, { what: "the broker to accept the holder" });
    assertEquals(await outcome(c.list()), [1, Text.clientQuota]);
  } finally {
    holder.close();
  }
  const [r] = await records(broker, 1);
  ok(r !== undefined);
  assertEquals([r.op, r.result, r.error], ["unknown", "error", Text.clientQuota]);
  assertEquals(Object.keys(r), PEER_KEYS, `keys of ${JSON.stringify(r)}`);
  assertEquals([r.peer_pid, r.peer_uid, r.peer_gid], [Deno.pid, Deno.uid(), Deno.gid()]);
  assertEquals((await broker.stop()).code, 0);
});

Deno.test("without --audit-peer every record has exactly the twelve keys in order", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--max-clients", "1"]);
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  const { id } = await c.put(enc("plain"), { name: "p" });
  await c.list();
  await c.drop(id);
  const holder = await Connection.connect(broker.socket, 5000);
  try {
    await waitFor(() => broker.connections() === 1, { what: "the broker to accept the holder" });
    assertEquals(await outcome(c.list()), [1, Text.clientQuota]);
  } finally {
    holder.close();
  }
  const recs = await records(broker, 4);
  for (const r of recs) assertEquals(Object.keys(r), AUDIT_KEYS);
  assertEquals((await broker.stop()).code, 0);
});

// ---- job ids bound to credentials, checked from another uid ------------------------------------

/** Why a second uid cannot be used here, or null when it can. */
function secondUidProblem(): string | null {
  try {
    if (Deno.uid() !== 0) return `the tests run as uid ${Deno.uid()}, not root`;
    const probe = new Deno.Command("setpriv", {
      args: [
        `--reuid=${OTHER_UID}`,
        `--regid=${OTHER_UID}`,
        "--clear-groups",
        Deno.execPath(),
        "--version",
      ],
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (!probe.success) {
      return `setpriv cannot run deno as uid ${OTHER_UID}: ${
        new TextDecoder().decode(probe.stderr).trim()
      }`;
    }
    const src = Deno.statSync(`${ROOT}/src/client.ts`);
    if (((src.mode ?? 0) & 0o004) === 0) return `${ROOT}/src is not world-readable`;
    return null;
  } catch (e) {
    return `cannot switch uid: ${(e as Error).message}`;
  }
}

const UID_PROBLEM = secondUidProblem();
if (UID_PROBLEM !== null) {
  console.warn(`identity_test.ts: the second-uid test is ignored: ${UID_PROBLEM}`);
}

/** The child program: each request as the given job, printing [status, text] or "ok" per op. */
const CHILD = `
import { Client } from "${ROOT}/src/client.ts";
import { BrokerError } from "${ROOT}/src/errors.ts";
const [socket, ...jobs] = Deno.args;
const client = new Client({ socket, jobId: null, keepAlive: false });
const out = { uid: Deno.uid(), gid: Deno.gid(), results: {} };
async function run(p) {
  try {
    const v = await p;
    if (v && typeof v.close === "function") v.close();
    return "ok";
  } catch (e) {
    if (e instanceof BrokerError) return [e.status, e.text];
    return "error: " + e.message;
  }
}
for (const j of jobs) {
  const job = j === "-" ? null : j;
  out.results[j] = {
    put: await run(client.put(new TextEncoder().encode("from " + j), { name: "child-" + j, jobId: job })),
    list: await run(client.list({ jobId: job })),
    get: await run(client.get({ name: "root-alpha" }, { jobId: job })),
    drop: await run(client.drop({ name: "child-" + j }, { jobId: job })),
  };
}
console.log(JSON.stringify(out));
`;

async function runAsOtherUid(
  dir: string,
  socket: string,
  jobs: readonly string[],
): Promise<{ uid: number; gid: number; results: Record<string, Record<string, unknown>> }> {
  const home = `${dir}/home-${OTHER_UID}`;
  Deno.mkdirSync(home, { recursive: true });
  Deno.writeTextFileSync(`${home}/child.js`, CHILD);
  Deno.chownSync(home, OTHER_UID, OTHER_UID);
  Deno.chownSync(`${home}/child.js`, OTHER_UID, OTHER_UID);
  const out = await new Deno.Command("setpriv", {
    args: [
      `--reuid=${OTHER_UID}`,
      `--regid=${OTHER_UID}`,
      "--clear-groups",
      Deno.execPath(),
      "run",
      "--no-config",
      "--no-lock",
      "--allow-all",
      `${home}/child.js`,
      socket,
      ...jobs,
    ],
    env: { DENO_DIR: `${home}/deno`, HOME: home, NO_COLOR: "1" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  ok(out.success, `child failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(stdout);
}

Deno.test({
  name: UID_PROBLEM === null
    ? `a policy file binds job ids to uids and gids: a peer of another uid cannot claim them`
    : `a policy file binds job ids to uids and gids (ignored: ${UID_PROBLEM})`,
  ignore: UID_PROBLEM !== null,
  fn: async () => {
    using dir = tempDir();
    Deno.chmodSync(dir.path, 0o755);
    const policy = `${dir.path}/policy.jsonc`;
    Deno.writeTextFileSync(
      policy,
      `{
  // alpha belongs to root, gamma to the group of the other uid, beta to nobody in particular
  "jobs": {
    "alpha": { "uids": [0], "gids": [] },
    "gamma": { "uids": [], "gids": [${OTHER_UID}] },
    "delta": { "uids": [1000] },
  },
  "auditPeer": true,
}`,
    );
    await using broker = await startBroker(dir.path, [
      "--policy",
      policy,
      "--socket-mode",
      "0666",
    ]);
    await using root = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
    // Root may claim alpha, not gamma (its gid is 0) nor delta (uid 1000).
    await root.put(enc("root's"), { name: "root-alpha", jobId: "alpha" });
    assertEquals(await outcome(root.list({ jobId: "alpha" })), "ok");
    const notPermitted = [4, PolicyText.jobNotPermitted];
    assertEquals(await outcome(root.list({ jobId: "gamma" })), notPermitted);
    assertEquals(await outcome(root.put(enc("x"), { name: "x", jobId: "delta" })), notPermitted);

    const child = await runAsOtherUid(dir.path, broker.socket, ["alpha", "gamma", "beta", "-"]);
    assertEquals([child.uid, child.gid], [OTHER_UID, OTHER_UID]);
    assertEquals(child.results, {
      // Claiming root's job: refused for every request, even reading root's own object.
      alpha: { put: notPermitted, list: notPermitted, get: notPermitted, drop: notPermitted },
      // Its group's job: allowed; alpha's object stays hidden from gamma.
      gamma: { put: "ok", list: "ok", get: [4, Text.accessDenied], drop: "ok" },
      // A job the policy does not list is refused too (unlistedJobs: deny, the default of a
      // policy that binds jobs); no job at all stays open, as in protocol v1.
      beta: { put: notPermitted, list: notPermitted, get: notPermitted, drop: notPermitted },
      "-": { put: "ok", list: "ok", get: "ok", drop: "ok" },
    });
    // The refusals are audited as forbidden, with the other uid as the peer.
    const refused = (await records(broker, 4)).filter((r) =>
      r.error === PolicyText.jobNotPermitted && r.peer_uid === OTHER_UID
    );
    assertEquals(refused.map((r) => [r.op, r.result, r.job_id]), [
      ["put", "forbidden", "alpha"],
      ["list", "forbidden", "alpha"],
      ["get", "forbidden", "alpha"],
      ["drop", "forbidden", "alpha"],
      ["put", "forbidden", "beta"],
      ["list", "forbidden", "beta"],
      ["get", "forbidden", "beta"],
      ["drop", "forbidden", "beta"],
    ]);
    assertEquals((await broker.stop()).code, 0);
  },
});

Deno.test("a policy binding a job to another uid refuses this process's claim with status 4", async () => {
  using dir = tempDir();
  const policy = `${dir.path}/policy.jsonc`;
  Deno.writeTextFileSync(policy, `{ "jobs": { "alpha": { "uids": [1000] } } }`);
  await using broker = await startBroker(dir.path, ["--policy", policy]);
  await using c = new Client({ socket: broker.socket, jobId: "alpha", keepAlive: false });
  const refused = [4, PolicyText.jobNotPermitted];
  assertEquals(await outcome(c.put(enc("x"), { name: "x" })), refused);
  assertEquals(await outcome(c.list()), refused);
  assertEquals(await outcome(c.get(1n)), refused);
  assertEquals(await outcome(c.drop(1n)), refused);
  // An unlisted job is refused by default once the policy binds a job...
  assertEquals(await outcome(c.list({ jobId: "beta" })), refused);
  assertEquals(await outcome(c.list({ jobId: null })), "ok");
  assertEquals((await broker.stop()).code, 0);
  // ...and open again with "unlistedJobs": "allow".
  Deno.writeTextFileSync(
    policy,
    `{ "jobs": { "alpha": { "uids": [1000] } }, "unlistedJobs": "allow" }`,
  );
  await using open = await startBroker(dir.path, ["--policy", policy]);
  await using o = new Client({ socket: open.socket, jobId: "beta", keepAlive: false });
  assertEquals(await outcome(o.list()), "ok");
  assertEquals(await outcome(o.list({ jobId: "alpha" })), refused);
  assertEquals((await open.stop()).code, 0);
});

// ---- --require-job and --protect-names ----------------------------------------------------------

Deno.test("--require-job refuses every unscoped request and serves scoped ones", async () => {
  using dir = tempDir();
  for (const args of [["--require-job"], ["--policy", "POLICY"]]) {
    const policy = `${dir.path}/require.jsonc`;
    Deno.writeTextFileSync(policy, `{ "requireJob": true }`);
    await using broker = await startBroker(dir.path, args.map((a) => a === "POLICY" ? policy : a));
    await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
    const required = [4, PolicyText.jobRequired];
    assertEquals(await outcome(c.put(enc("x"), { name: "x" })), required);
    assertEquals(await outcome(c.list()), required);
    assertEquals(await outcome(c.get(1n)), required);
    assertEquals(await outcome(c.get({ name: "x" })), required);
    assertEquals(await outcome(c.drop(1n)), required);
    const { id } = await c.put(enc("x"), { name: "x", jobId: "a" });
    assertEquals((await c.list({ jobId: "a" })).map((e) => e.id), [id]);
    assertEquals(await outcome(c.get(id, { jobId: "a" })), "ok");
    assertEquals(await outcome(c.drop(id, { jobId: "a" })), "ok");
    // The CLI shows the broker's text, then what to do.
    const r = await cli(["list", "--socket", broker.socket], { env: { MEMFDBUS_JOB_ID: "" } });
    assertEquals([r.code, r.stderr], [
      1,
      `broker error: ${PolicyText.jobRequired} — pass --job-id ` +
      "JOB (or set MEMFDBUS_JOB_ID)\n",
    ]);
    const recs = await waitFor(() => {
      const r = broker.audit().filter((x) => x.error === PolicyText.jobRequired);
      return r.length >= 6 ? r : null;
    }, { what: "6 job-required audit records" });
    ok(recs.every((x) => x.result === "forbidden"));
    assertEquals((await broker.stop()).code, 0);
  }
});

Deno.test("--protect-names keeps a name to the job that published it until every version is dropped", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path, ["--protect-names"]);
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  const owned = [4, PolicyText.nameOwned];
  const a1 = await c.put(enc("a v1"), { name: "N", jobId: "a" });
  assertEquals(await outcome(c.put(enc("b's"), { name: "N", jobId: "b" })), owned);
  assertEquals(await outcome(c.put(enc("anyone's"), { name: "N", jobId: null })), owned);
  const a2 = await c.put(enc("a v2"), { name: "N", jobId: "a" });
  // Readers are not affected: the newest version is a's.
  {
    using o = await c.get({ name: "N" }, { jobId: null });
    assertEquals([o.id, o.text()], [a2.id, "a v2"]);
  }
  // An unowned name stays open to everyone.
  await c.put(enc("u1"), { name: "U", jobId: null });
  await c.put(enc("u2"), { name: "U", jobId: "a" });
  await c.put(enc("u3"), { name: "U", jobId: "b" });
  await c.put(enc("u4"), { name: "U", jobId: null });
  // Once every version of N is dropped, N is free again.
  await c.drop(a2.id, { jobId: "a" });
  assertEquals(await outcome(c.put(enc("b's"), { name: "N", jobId: "b" })), owned);
  await c.drop(a1.id, { jobId: "a" });
  const b1 = await c.put(enc("b's"), { name: "N", jobId: "b" });
  assertEquals(await outcome(c.put(enc("a again"), { name: "N", jobId: "a" })), owned);
  assertEquals((await c.list()).filter((e) => e.name === "N").map((e) => e.id), [b1.id]);
  const recs = await waitFor(() => {
    const r = broker.audit().filter((x) => x.error === PolicyText.nameOwned);
    return r.length >= 4 ? r : null;
  }, { what: "4 name-owned audit records" });
  assertEquals(recs.map((x) => [x.op, x.result, x.name]), Array(4).fill(["put", "forbidden", "N"]));
  assertEquals((await broker.stop()).code, 0);
});

// ---- configuration files -------------------------------------------------------------------------

Deno.test("configuration mistakes are reported as FILE:LINE: key: message and exit 2 before the socket exists", async () => {
  using dir = tempDir();
  const socket = `${dir.path}/cfg.sock`;
  const cases: [string, string, string, (f: string) => string][] = [
    [
      "--config",
      "unknown key",
      `{\n  "socket": "${socket}",\n  "bogus": 1\n}\n`,
      (f) => `${f}:3: bogus: unknown key`,
    ],
    [
      "--config",
      "zero objects",
      `{\n  "maxObjects": 0\n}\n`,
      (f) => `${f}:2: maxObjects: expected an integer from 1 to 18446744073709551615`,
    ],
    [
      "--config",
      "negative timeout",
      `// comment\n{\n  "requestTimeoutMs": -5,\n}\n`,
      (f) => `${f}:3: requestTimeoutMs: expected an integer from 1 to 2147483647`,
    ],
    [
      "--config",
      "bad mode",
      `{ "socketMode": "0999" }`,
      (f) => `${f}:1: socketMode: expected an octal mode such as "0600"`,
    ],
    [
      "--config",
      "bad boolean",
      `{\n\n  "auditPeer": "yes"\n}`,
      (f) => `${f}:3: auditPeer: expected true or false`,
    ],
    [
      "--config",
      "bad uid",
      `{\n  "jobs": { "alpha": { "uids": [-1] } }\n}`,
      (f) => `${f}:2: jobs: alpha.uids: expected ids from 0 to 4294967295`,
    ],
    [
      "--config",
      "unknown job key",
      `{\n  "jobs": { "alpha": { "users": [1] } }\n}`,
      (f) => `${f}:2: jobs: alpha: unknown key "users"`,
    ],
    [
      "--policy",
      "not a policy key",
      `{\n  "requireJob": true,\n  "maxObjects": 5\n}`,
      (f) => `${f}:3: maxObjects: not a policy key`,
    ],
    [
      "--policy",
      "bad jobs",
      `{ "jobs": [] }`,
      (f) => `${f}:1: jobs: expected an object such as { "job": { "uids": [1000] } }`,
    ],
  ];
  for (const [flag, label, text, message] of cases) {
    const file = `${dir.path}/${label.replaceAll(" ", "-")}.jsonc`;
    Deno.writeTextFileSync(file, text);
    const r = await cli(["broker", flag, file, "--socket", socket]);
    assertEquals(
      [label, r.code, r.stderr, r.stdout, exists(socket)],
      [label, 2, `${message(file)}\n`, "", false],
    );
  }
  // Not JSONC at all: the position is given too.
  const broken = `${dir.path}/broken.jsonc`;
  Deno.writeTextFileSync(broken, `{\n  "maxObjects": 5\n  "maxClients": 2\n}`);
  const r = await cli(["broker", "--config", broken, "--socket", socket]);
  ok(r.stderr.startsWith(`${broken}:3:3: invalid JSONC (`), r.stderr);
  assertEquals([r.code, exists(socket)], [2, false]);
  // A file that does not exist.
  const missing = await cli(["broker", "--config", `${dir.path}/nope.jsonc`, "--socket", socket]);
  assertEquals([missing.code, exists(socket)], [1, false]);
  ok(missing.stderr.startsWith(`--config ${dir.path}/nope.jsonc: `), missing.stderr);
});

Deno.test("a JSONC configuration with comments and trailing commas is applied and flags override it", async () => {
  using dir = tempDir();
  const config = `${dir.path}/broker.jsonc`;
  Deno.writeTextFileSync(
    config,
    `{
  /* limits */
  "maxObjects": 1, // one object only
  "socketMode": "0640",
  "maxClients": 7,
}`,
  );
  await using broker = await startBroker(dir.path, ["--config", config, "--max-clients", "3"]);
  assertEquals((Deno.lstatSync(broker.socket).mode ?? 0) & 0o777, 0o640);
  await using c = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  await c.put(enc("one"), { name: "one" });
  assertEquals(await outcome(c.put(enc("two"), { name: "two" })), [1, Text.objectQuota]);
  // --max-clients 3 on the command line wins over the file's 7.
  const holders = await Promise.all([0, 1, 2].map(() => Connection.connect(broker.socket, 5000)));
  try {
    await waitFor(() => broker.connections() === 3, { what: "the broker to accept 3 holders" });
    const x = await exchange(broker.socket, listRequest());
    assertEquals(statusText(x), [1, Text.clientQuota]);
  } finally {
    for (const h of holders) h.close();
  }
  await waitFor(async () => statusText(await exchange(broker.socket, listRequest()))[0] === 0, {
    what: "the broker to serve LIST again",
  });
  assertEquals((await broker.stop()).code, 0);
});
