/**
 * Issue 11, point 4: errors that say what failed, on what, and what to do — run as real CLI
 * processes (and the library) against real brokers, sockets and files.
 */

import { assertEquals, ok, rejects } from "../support/assert.ts";
import { BrokerProcess, cli, enc, tempDir } from "../support/harness.ts";
import { cliWithTimeout, exists, noBrokerLine, parallel } from "../support/cli.ts";
import { Client } from "../../src/client.ts";
import { TimeoutError } from "../../src/errors.ts";

Deno.test("connection errors name the socket and say whether a broker could be there", async () => {
  using dir = tempDir();
  const missing = `${dir.path}/none.sock`;
  Deno.writeFileSync(`${dir.path}/file.sock`, enc(""));
  Deno.mkdirSync(`${dir.path}/dir.sock`);
  // A socket file nobody listens on any more (a broker that died).
  const stale = `${dir.path}/stale.sock`;
  const l = Deno.listen({ transport: "unix", path: stale });
  l.close();
  const staleLeft = (() => {
    try {
      return Deno.lstatSync(stale).isSocket;
    } catch {
      return false;
    }
  })();
  const [a, b, c, d, e] = await Promise.all([
    cli(["list", "--socket", missing]),
    cli(["list", "--socket", `${dir.path}/file.sock`]),
    cli(["get", "1", "-", "--socket", `${dir.path}/dir.sock`]),
    cli(["list", "--socket", stale]),
    cli(["list", "--socket", `${dir.path}/file.sock/x.sock`]),
  ]);
  assertEquals([a.code, a.stdout, a.stderr], [1, "", noBrokerLine(missing)]);
  assertEquals([b.code, b.stderr], [
    1,
    `connect: Connection refused (socket ${dir.path}/file.sock) — a file is there, not a socket; ` +
    "check --socket (or MEMFDBUS_SOCKET)\n",
  ]);
  assertEquals([c.code, c.stderr], [
    1,
    `connect: Connection refused (socket ${dir.path}/dir.sock) — a directory is there, not a ` +
    "socket; check --socket (or MEMFDBUS_SOCKET)\n",
  ]);
  // Any other cause still names the socket and the way to change it.
  assertEquals([e.code, e.stderr], [
    1,
    `connect: Not a directory (socket ${dir.path}/file.sock/x.sock) — check --socket ` +
    "(or MEMFDBUS_SOCKET)\n",
  ]);
  if (staleLeft) {
    assertEquals([d.code, d.stderr], [
      1,
      `connect: Connection refused (socket ${stale}) — no broker is listening ` +
      `on it (a broker that died left it behind?); start one with \`memfdbus broker --socket ${stale}\`\n`,
    ]);
  } else {
    assertEquals([d.code, d.stderr], [1, noBrokerLine(stale)]);
  }
});

Deno.test("a broker's identity refusals keep their C text and say what to do", async () => {
  using dir = tempDir();
  const policy = `${dir.path}/policy.json`;
  Deno.writeTextFileSync(policy, `{ "jobs": { "alpha": { "uids": [4242] } } }`);
  await using broker = await BrokerProcess.start(dir.path, ["--require-job", "--policy", policy]);
  const s = ["--socket", broker.socket];
  const [none, bound, unlisted] = await Promise.all([
    cli(["list", ...s]),
    cli(["list", "--job-id", "alpha", ...s]),
    cli(["get", "1", "-", "--job-id", "beta", ...s]),
  ]);
  assertEquals([none.code, none.stderr], [
    1,
    "broker error: job id required by broker policy — " +
    "pass --job-id JOB (or set MEMFDBUS_JOB_ID)\n",
  ]);
  const notPermitted = "broker error: job id not permitted for this peer — the broker's " +
    '--policy does not let this user claim that job; use one its "jobs" bind to this user\n';
  assertEquals([bound.code, bound.stderr], [1, notPermitted]);
  assertEquals([unlisted.code, unlisted.stderr], [1, notPermitted]);
});

Deno.test("at the default socket the hint is plain `memfdbus broker`", async () => {
  using dir = tempDir();
  const sock = `${dir.path}/default.sock`;
  const r = await cli(["drop", "1"], { env: { MEMFDBUS_SOCKET: sock } });
  assertEquals([r.code, r.stderr], [
    1,
    `connect: No such file or directory (socket ${sock}) — is the broker ` +
    "running? start it with `memfdbus broker`\n",
  ]);
});

Deno.test("file errors name the path; put of a directory and get of a name give hints", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  Deno.writeFileSync(`${dir.path}/x.txt`, enc("x"));
  assertEquals((await cli(["put", `${dir.path}/x.txt`, ...s])).stdout, "1\n");
  const [putDir, putMissing, getName, getOut, brokerBind] = await Promise.all([
    cli(["put", `${dir.path}/`, ...s]),
    cli(["put", `${dir.path}/modle.bin`, ...s]),
    cli(["get", "model.bin", "out", ...s]),
    cli(["get", "1", `${dir.path}/no/such/out`, ...s]),
    cli(["broker", "--socket", `${dir.path}/no-dir/b.sock`]),
  ]);
  assertEquals([putDir.code, putDir.stderr], [
    2,
    `cannot put ${dir.path}/: it is a directory (put takes one file, or - for stdin)\n`,
  ]);
  assertEquals([putMissing.code, putMissing.stderr], [
    1,
    `open input: ${dir.path}/modle.bin: No such file or directory\n`,
  ]);
  assertEquals([getName.code, getName.stderr], [
    2,
    "invalid object id: model.bin (ids are numbers; to select by name use --name model.bin)\n",
  ]);
  assertEquals([getOut.code, getOut.stderr], [
    1,
    `open output: ${dir.path}/no/such/out: No such file or directory\n`,
  ]);
  assertEquals(brokerBind.code, 1);
  ok(
    brokerBind.stderr.includes(`${dir.path}/no-dir/b.sock: No such file or directory`),
    brokerBind.stderr,
  );
});

Deno.test("the shadow's and the metrics' socket errors name their path", async () => {
  using dir = tempDir();
  const missing = `${dir.path}/no-such-dir`;
  const [shadow, metrics, spawned] = await Promise.all([
    cliWithTimeout(["shadow", "--socket", `${missing}/s.sock`]),
    cliWithTimeout([
      "broker",
      "--socket",
      `${dir.path}/b.sock`,
      "--metrics",
      `${missing}/m.sock`,
    ]),
    cliWithTimeout(["broker", "--socket", `${dir.path}/c.sock`, "--shadow", `${missing}/t.sock`]),
  ]);
  assertEquals([shadow.code, shadow.stderr], [
    1,
    `bind: ${missing}/s.sock: No such file or directory\n`,
  ]);
  assertEquals([metrics.code, metrics.stderr], [
    1,
    `metrics ${missing}/m.sock: No such file or directory\n`,
  ]);
  assertEquals([spawned.code, spawned.stderr], [
    1,
    `the shadow exited without listening on ${missing}/t.sock (run ` +
    `\`memfdbus shadow --socket ${missing}/t.sock\` to see why)\n`,
  ]);
});

Deno.test("a --wait that runs out says no object NAME appeared within N s; the library throws TimeoutError", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  const [get, stat] = await Promise.all([
    cli(["get", "--name", "late", "-", "--wait", "0.2", ...s]),
    cli(["stat", "--name", "late", "--wait=0.3", ...s]),
  ]);
  assertEquals([get.code, get.stdout, get.stderr], [
    1,
    "",
    "no object named late appeared within 0.2 s\n",
  ]);
  assertEquals([stat.code, stat.stderr], [1, "no object named late appeared within 0.3 s\n"]);
  await using client = new Client({ socket: broker.socket, jobId: null });
  await rejects(client.get({ name: "late" }, { wait: 100 }), (e: unknown) => {
    ok(e instanceof TimeoutError, String(e));
    assertEquals([e.message, e.timeoutMs], ["no object named late appeared within 0.1 s", 100]);
    return true;
  });
});

Deno.test("--timeout bounds a request of every client command to a broker that never answers", async () => {
  using dir = tempDir();
  const path = `${dir.path}/hung.sock`;
  Deno.writeFileSync(`${dir.path}/in.txt`, enc("x"));
  // A listener that accepts and never replies: a hung broker.
  const listener = Deno.listen({ transport: "unix", path });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) held.push(c);
  })();
  const line = (s: string): string =>
    `receive response: no answer within ${s} s (socket ${path}) — the broker is busy or ` +
    "stuck; --timeout SECONDS waits longer (default 30)\n";
  try {
    const cases: Array<[string[], string]> = [
      [["list"], "0.5"],
      [["usage"], "0.5"],
      [["stat", "1"], "0.5"],
      [["drop", "--name", "x"], "0.5"],
      [["get", "1", `${dir.path}/out`], "0.5"],
      // A wait by name: the broker may hold the request for the wait, then the timeout.
      [["get", "--name", "x", "--wait", "0.5", "-"], "1"],
      [["put", `${dir.path}/in.txt`], "0.5"],
      [["watch", "--once"], "0.5"],
      [["exec", "1", "--socket", path, "--timeout=0.5", "--", "true"], "0.5"],
      [["capture", "--name", "c", "--socket", path, "--timeout=0.5", "--", "true"], "0.5"],
    ];
    const rs = await parallel(
      cases,
      ([a]) => cli(a.includes("--") ? a : [...a, "--socket", path, "--timeout=0.5"]),
    );
    rs.forEach((r, i) => {
      const [a, s] = cases[i] ?? [[], ""];
      assertEquals([a[0], r.code, r.stdout, r.stderr], [a[0], 1, "", line(s)]);
    });
    assertEquals(exists(`${dir.path}/out`), false);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const c of held) c.close();
  }
});
