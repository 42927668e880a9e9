import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, cli, digestOf, enc, tempDir } from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import { cliOnTerminal, noBrokerLine, scriptPath, timed } from "../support/cli.ts";
import { parseWait } from "../../src/cli/args.ts";
import { jsonLine } from "../../src/cli/output.ts";
import {
  formatBytes,
  formatEta,
  PROGRESS_MIN_BYTES,
  renderProgress,
} from "../../src/cli/progress.ts";
import { decodeWaitStatus, describeExit, exitCodeOf } from "../../src/sys/spawn.ts";
import { describeSeals, isoFromNs, sealNames, statText } from "../../src/cli/stat.ts";
import { CAPTURE_USAGE, STAT_USAGE } from "../../src/cli/usage.ts";

const HELLO = digestOf(enc("hello"));
/** The terminal sequence that erases to the end of the line, escaped for a RegExp. */
const ERASE_LINE = "\x1b\\[K";
/** A socket path no broker listens on: commands that fail before connecting still fail here. */
const NOWHERE = "/nonexistent-memfdbus-dir/b.sock";

function writeFile(dir: string, name: string, text: string): string {
  Deno.writeFileSync(`${dir}/${name}`, enc(text));
  return `${dir}/${name}`;
}

// ---- --json ------------------------------------------------------------------------------------

Deno.test("list --json prints every visible object as {id, owner, allowed, size, digest, name}", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  const file = writeFile(dir.path, "a.txt", "hello");
  assertEquals((await cli(["put", file, ...s])).stdout, "1\n");
  assertEquals(
    (await cli(["put", file, "--name", "b", "--job-id", "alpha", "--allow-job", "beta", ...s]))
      .stdout,
    "2\n",
  );
  const r = await cli(["list", "--json", ...s]);
  assertEquals([r.code, r.stderr], [0, ""]);
  assertEquals(
    r.stdout,
    `[{"id":1,"owner":null,"allowed":null,"size":5,"digest":"${HELLO}","name":"a.txt"},` +
      `{"id":2,"owner":"alpha","allowed":"beta","size":5,"digest":"${HELLO}","name":"b"}]\n`,
  );
  // Without --json the listing is still the broker's text, byte for byte.
  const plain = await cli(["list", ...s]);
  assertEquals(
    plain.stdout,
    `1\towner=-\tallowed=-\t5\t${HELLO}\ta.txt\n2\towner=alpha\tallowed=beta\t5\t${HELLO}\tb\n`,
  );
  // A job sees only what it may read.
  const gamma = await cli(["list", "--json", "--job-id", "gamma", ...s]);
  assertEquals(JSON.parse(gamma.stdout).map((e: { id: number }) => e.id), [1]);
});

Deno.test("list --json prints an empty array for an empty store, plain list prints nothing", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const json = await cli(["list", "--socket", broker.socket, "--json"]);
  assertEquals([json.code, json.stdout, json.stderr], [0, "[]\n", ""]);
  const plain = await cli(["list", "--socket", broker.socket]);
  assertEquals([plain.code, plain.stdout, plain.stderr], [0, "", ""]);
});

Deno.test("list still rejects arguments it does not know", async () => {
  const r = await cli(["list", "--jsonn", "--socket", NOWHERE]);
  assertEquals([r.code, r.stdout, r.stderr], [2, "", "unexpected argument: --jsonn\n"]);
});

Deno.test("put --json prints {id, size, digest, name} while plain put prints only the id", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "greeting.txt", "hello");
  const plain = await cli(["put", file, "--socket", broker.socket]);
  assertEquals([plain.code, plain.stdout, plain.stderr], [0, "1\n", ""]);
  const json = await cli(["put", "--json", file, "--socket", broker.socket]);
  assertEquals([json.code, json.stderr], [0, ""]);
  assertEquals(json.stdout, `{"id":2,"size":5,"digest":"${HELLO}","name":"greeting.txt"}\n`);
  const named = await cli(["put", "-", "--name", "n", "--json", "--socket", broker.socket], {
    stdin: enc("hello"),
  });
  assertEquals(JSON.parse(named.stdout), { id: 3, size: 5, digest: HELLO, name: "n" });
});

Deno.test("put --json with --content-addressed reports the digest as the name", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "x.txt", "hello");
  const r = await cli(["put", file, "--content-addressed", "--json", "--socket", broker.socket]);
  assertEquals(JSON.parse(r.stdout), { id: 1, size: 5, digest: HELLO, name: HELLO });
});

Deno.test("get --json writes OUT and prints {id, size, digest, name, out}", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  await cli(["put", file, "--name", "greeting", "--socket", broker.socket]);
  const out = `${dir.path}/out.txt`;
  const r = await cli(["get", "--name", "greeting", out, "--json", "--socket", broker.socket]);
  assertEquals([r.code, r.stderr], [0, ""]);
  assertEquals(
    r.stdout,
    `{"id":1,"size":5,"digest":"${HELLO}","name":"greeting","out":${JSON.stringify(out)}}\n`,
  );
  assertEquals(Deno.readTextFileSync(out), "hello");
  // Plain get to a file still prints nothing.
  const plain = await cli(["get", "1", `${dir.path}/plain.txt`, "--socket", broker.socket]);
  assertEquals([plain.code, plain.stdout, plain.stderr], [0, "", ""]);
});

Deno.test("get --json with OUT - is refused before connecting", async () => {
  const r = await cli(["get", "1", "-", "--json", "--socket", NOWHERE]);
  assertEquals([r.code, r.stdout, r.stderr], [2, "", "--json cannot be combined with OUT -\n"]);
  const byName = await cli(["get", "--json", "--name", "x", "-", "--socket", NOWHERE]);
  assertEquals([byName.code, byName.stderr], [2, "--json cannot be combined with OUT -\n"]);
});

Deno.test("drop --json prints {id, size} while plain drop prints only the id", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  await cli(["put", file, "--socket", broker.socket]);
  await cli(["put", file, "--socket", broker.socket]);
  const json = await cli(["drop", "--json", "--name", "in.txt", "--socket", broker.socket]);
  assertEquals([json.code, json.stdout, json.stderr], [0, '{"id":2,"size":5}\n', ""]);
  const plain = await cli(["drop", "1", "--socket", broker.socket]);
  assertEquals([plain.code, plain.stdout, plain.stderr], [0, "1\n", ""]);
});

Deno.test("jsonLine writes ids up to 2^53-1 as numbers and larger ids as strings", () => {
  assertEquals(jsonLine({ id: 9007199254740991n }), '{"id":9007199254740991}\n');
  assertEquals(jsonLine({ id: 9007199254740992n }), '{"id":"9007199254740992"}\n');
  assertEquals(
    jsonLine([{ id: 18446744073709551615n, owner: null }]),
    '[{"id":"18446744073709551615","owner":null}]\n',
  );
});

// ---- stat --------------------------------------------------------------------------------------

Deno.test("stat prints id, name, size, digest, seals, owner, allowed and created as aligned lines", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  const before = Date.now();
  await cli(["put", file, "--name", "greeting", "--socket", broker.socket]);
  const after = Date.now();
  const r = await cli(["stat", "1", "--socket", broker.socket]);
  assertEquals([r.code, r.stderr], [0, ""]);
  const lines = r.stdout.split("\n");
  assertEquals(lines.slice(0, 7), [
    "id:      1",
    "name:    greeting",
    "size:    5",
    `digest:  ${HELLO}`,
    "seals:   SEAL|SHRINK|GROW|WRITE (0xf)",
    "owner:   -",
    "allowed: -",
  ]);
  const created = /^created: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)$/.exec(lines[7] ?? "");
  ok(created !== null, `created line: ${lines[7]}`);
  const ms = Date.parse(created[1] ?? "");
  ok(ms >= before - 1000 && ms <= after + 1000, `created ${created[1]} not near the put`);
  // The extension row (this broker says whether the object shares its memory), then the newline.
  assertEquals(lines.slice(8), ["shared:  no", ""]);
});

Deno.test("stat --name --json describes the newest object of that name", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  const s = ["--socket", broker.socket];
  await cli(["put", file, "--name", "m", ...s]);
  await cli(["put", file, "--name", "m", "--job-id", "alpha", "--allow-job", "beta", ...s]);
  const r = await cli(["stat", "--name", "m", "--json", "--job-id", "alpha", ...s]);
  assertEquals([r.code, r.stderr], [0, ""]);
  const v = JSON.parse(r.stdout);
  ok(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/.test(v.created), `created: ${v.created}`);
  assertEquals({ ...v, created: "" }, {
    id: 2,
    name: "m",
    size: 5,
    digest: HELLO,
    seals: 15,
    seal_names: ["SEAL", "SHRINK", "GROW", "WRITE"],
    owner: "alpha",
    allowed: "beta",
    created: "",
    // Extensions: the second PUT of the same bytes shares the first one's memfd, and alpha
    // holds one object of 5 bytes.
    shared: true,
    owner_usage: { objects: 1, bytes: 5 },
  });
  assertEquals(Object.keys(v), [
    "id",
    "name",
    "size",
    "digest",
    "seals",
    "seal_names",
    "owner",
    "allowed",
    "created",
    "shared",
    "owner_usage",
  ]);
});

Deno.test("stat of an unknown or hidden object fails like get does", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  await cli(["put", file, "--job-id", "alpha", "--socket", broker.socket]);
  const missing = await cli(["stat", "7", "--socket", broker.socket]);
  assertEquals([missing.code, missing.stdout, missing.stderr], [
    1,
    "",
    "broker error: object not found\n",
  ]);
  const hidden = await cli(["stat", "1", "--job-id", "beta", "--socket", broker.socket]);
  assertEquals([hidden.code, hidden.stderr], [1, "broker error: access denied\n"]);
});

Deno.test("stat without exactly one selector prints its usage and exits 2", async () => {
  for (const args of [["stat"], ["stat", "1", "--name", "x"], ["stat", "--json"]]) {
    const r = await cli([...args, "--socket", NOWHERE]);
    assertEquals([r.code, r.stdout, r.stderr], [2, "", `${STAT_USAGE}\n`], args.join(" "));
  }
  const extra = await cli(["stat", "1", "2", "--socket", NOWHERE]);
  assertEquals([extra.code, extra.stderr], [2, "unexpected argument: 2\n"]);
  const badId = await cli(["stat", "-1", "--socket", NOWHERE]);
  assertEquals([badId.code, badId.stderr], [2, "invalid object id: -1\n"]);
});

Deno.test("stat --wait waits for the name to be published", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  const pending = cli([
    "stat",
    "--name",
    "later",
    "--wait=30",
    "--json",
    "--socket",
    broker.socket,
  ]);
  // The request is parked at the broker before anything is published.
  await waitFor(() => broker.connections() === 1, { what: "the parked STAT connection" });
  await cli(["put", file, "--name", "later", "--socket", broker.socket]);
  const r = await pending;
  assertEquals([r.code, r.stderr, JSON.parse(r.stdout).name], [0, "", "later"]);
});

Deno.test("seal bits are named lowest first, with unknown bits in hex", () => {
  assertEquals(describeSeals(15), "SEAL|SHRINK|GROW|WRITE (0xf)");
  assertEquals(describeSeals(0), "none (0x0)");
  assertEquals(describeSeals(null), "-");
  assertEquals(describeSeals(0x1a), "SHRINK|WRITE|FUTURE_WRITE (0x1a)");
  assertEquals(sealNames(0x20 | 0x40 | 0x1), ["SEAL", "EXEC", "0x40"]);
});

Deno.test("creation times are ISO 8601 UTC with nanoseconds, or - when unknown", () => {
  assertEquals(isoFromNs(1_700_000_000_123_456_789n), "2023-11-14T22:13:20.123456789Z");
  assertEquals(isoFromNs(5n), "1970-01-01T00:00:00.000000005Z");
  assertEquals(isoFromNs(null), null);
  const text = statText({
    id: 3n,
    name: "n",
    size: 1,
    digest: "sha256:x",
    owner: null,
    allowed: "b",
    createdNs: null,
    seals: null,
  });
  assertEquals(
    text,
    "id:      3\nname:    n\nsize:    1\ndigest:  sha256:x\nseals:   -\nowner:   -\n" +
      "allowed: b\ncreated: -\n",
  );
});

// ---- --wait ------------------------------------------------------------------------------------

Deno.test("get --wait returns as soon as another process publishes the name", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "late bytes");
  const out = `${dir.path}/out.txt`;
  const start = performance.now();
  const pending = timed(
    cli(["get", "--name", "late", out, "--wait=60", "--socket", broker.socket]),
  );
  // The request is parked at the broker before anything is published.
  await waitFor(() => broker.connections() === 1, { what: "the parked GET connection" });
  // Time passes on purpose: the GET must still be waiting a second later.
  const delay = 1000;
  await letTimePass(delay);
  const published = performance.now();
  const put = await cli(["put", file, "--name", "late", "--socket", broker.socket]);
  assertEquals(put.stdout, "1\n");
  const { result, endedAt } = await pending;
  assertEquals([result.code, result.stdout, result.stderr], [0, "", ""]);
  assertEquals(Deno.readTextFileSync(out), "late bytes");
  ok(endedAt - start >= delay, `get returned after ${endedAt - start} ms, before the publish`);
  ok(endedAt - start < 30_000, `get took ${endedAt - start} ms of a 60 s wait`);
  ok(endedAt - published < 20_000, `get took ${endedAt - published} ms after the publish`);
  // One GET, answered once: the client did not poll.
  const audit = await broker.waitAudit(2);
  assertEquals(audit.map((a) => [a.op, a.result, a.name]), [
    ["put", "ok", "late"],
    ["get", "ok", "late"],
  ]);
});

Deno.test("get --wait=SECONDS gives up after that long: no object named NAME appeared within N s", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const start = performance.now();
  const r = await cli([
    "get",
    "--name",
    "never",
    `${dir.path}/o`,
    "--wait=0.5",
    "--socket",
    broker.socket,
  ]);
  const elapsed = performance.now() - start;
  assertEquals([r.code, r.stdout, r.stderr], [
    1,
    "",
    "no object named never appeared within 0.5 s\n",
  ]);
  ok(elapsed >= 500, `gave up after ${elapsed} ms`);
  ok(elapsed < 10_000, `gave up only after ${elapsed} ms`);
  ok(!existsSync(`${dir.path}/o`), "a failed get left an output file");
});

Deno.test("get --wait returns at once when the name already exists", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "hello");
  await cli(["put", file, "--name", "here", "--socket", broker.socket]);
  const r = await cli(["get", "--wait", "max", "--name", "here", "-", "--socket", broker.socket]);
  assertEquals([r.code, r.stdout, r.stderr], [0, "hello", ""]);
});

Deno.test("exec --wait runs the command once the name is published", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = writeFile(dir.path, "in.txt", "exec bytes");
  const pending = cli([
    "exec",
    "--name",
    "job-input",
    "--wait=60",
    "--socket",
    broker.socket,
    "--",
    "sh",
    "-c",
    'cat /proc/self/fd/$MEMFDBUS_FD; echo " $MEMFDBUS_NAME"',
  ]);
  await waitFor(() => broker.connections() === 1, { what: "the parked EXEC connection" });
  await cli(["put", file, "--name", "job-input", "--socket", broker.socket]);
  const r = await pending;
  assertEquals([r.code, r.stdout, r.stderr], [0, "exec bytes job-input\n", ""]);
});

Deno.test("invalid --wait values are refused with invalid --wait: X, exit 2", async () => {
  const hint = " (expected seconds, for example --wait 30, or --wait max)";
  for (const value of ["", "abc", "-1", "0", "0.000", "1e3", "1.2.3", " 1", "inf"]) {
    const r = await cli(["get", "--name", "x", "out", `--wait=${value}`, "--socket", NOWHERE]);
    assertEquals([r.code, r.stdout, r.stderr], [2, "", `invalid --wait: ${value}${hint}\n`], value);
  }
  const exec = await cli(["exec", "--name", "x", "--wait=soon", "--", "true"]);
  assertEquals([exec.code, exec.stderr], [2, `invalid --wait: soon${hint}\n`]);
});

Deno.test("--wait with an object id is refused for get, exec and stat", async () => {
  for (
    const args of [
      ["get", "1", "out", "--wait", "5"],
      ["exec", "1", "--wait=5", "--", "true"],
      ["stat", "1", "--wait", "1"],
    ]
  ) {
    const r = await cli([...args, "--socket", NOWHERE]);
    assertEquals([r.code, r.stdout, r.stderr], [2, "", "--wait requires --name\n"], args.join(" "));
  }
});

Deno.test("--wait parses seconds with fractions into whole milliseconds", () => {
  assertEquals(parseWait("max", 30_000), true);
  assertEquals(parseWait("2", 30_000), 2000);
  assertEquals(parseWait("1.5", 30_000), 1500);
  assertEquals(parseWait(".25", 30_000), 250);
  assertEquals(parseWait("3.", 30_000), 3000);
  assertEquals(parseWait("0.0001", 30_000), 1);
  assertEquals(parseWait("0.0015", 30_000), 2);
  assertEquals(parseWait("99999999999", 30_000), 2_147_483_647 - 30_000);
});

// ---- capture -----------------------------------------------------------------------------------

Deno.test("capture publishes exactly the command's stdout, sealed, and prints the id like put", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  const r = await cli([
    "capture",
    "--name",
    "greeting",
    "--job-id",
    "alpha",
    "--allow-job",
    "beta",
    ...s,
    "--",
    "sh",
    "-c",
    "printf hello; echo note >&2",
  ]);
  assertEquals([r.code, r.stdout, r.stderr], [0, "1\n", "note\n"]);
  const got = await cli(["get", "1", "-", "--job-id", "beta", ...s]);
  assertEquals(got.stdout, "hello");
  const st = JSON.parse((await cli(["stat", "1", "--json", "--job-id", "alpha", ...s])).stdout);
  assertEquals([st.size, st.digest, st.seals, st.owner, st.allowed, st.name], [
    5,
    HELLO,
    15,
    "alpha",
    "beta",
    "greeting",
  ]);
});

Deno.test("capture gives the command the memfd itself as stdout and passes stdin through", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const r = await cli(
    [
      "capture",
      "--name",
      "probe",
      "--socket",
      broker.socket,
      "--",
      "sh",
      "-c",
      "readlink /proc/self/fd/1; cat",
    ],
    { stdin: enc("from stdin") },
  );
  assertEquals([r.code, r.stdout, r.stderr], [0, "1\n", ""]);
  const got = await cli(["get", "1", "-", "--socket", broker.socket]);
  assertEquals(got.stdout, "/memfd:probe (deleted)\nfrom stdin");
});

Deno.test("capture publishes nothing when the command fails unless --always is given", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  const cmd = ["--", "sh", "-c", "printf hello; exit 3"];
  const failed = await cli(["capture", "--name", "out", ...s, ...cmd]);
  assertEquals([failed.code, failed.stdout, failed.stderr], [
    3,
    "",
    "not published: the command exited with status 3 (--always publishes anyway)\n",
  ]);
  assertEquals((await cli(["list", ...s])).stdout, "");
  const always = await cli(["capture", "--always", "--name", "out", ...s, ...cmd]);
  assertEquals([always.code, always.stdout, always.stderr], [3, "1\n", ""]);
  assertEquals((await cli(["get", "--name", "out", "-", ...s])).stdout, "hello");
});

Deno.test("capture exits with 128+N when signal N kills the command", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const r = await cli([
    "capture",
    "--name",
    "k",
    "--socket",
    broker.socket,
    "--",
    "sh",
    "-c",
    "printf x; kill -TERM $$",
  ]);
  assertEquals([r.code, r.stdout, r.stderr], [
    143,
    "",
    "not published: the command was killed by SIGTERM (--always publishes anyway)\n",
  ]);
  const always = await cli([
    "capture",
    "--always",
    "--name",
    "k",
    "--socket",
    broker.socket,
    "--",
    "sh",
    "-c",
    "printf x; kill -KILL $$",
  ]);
  assertEquals([always.code, always.stdout], [137, "1\n"]);
  assertEquals((await cli(["get", "1", "-", "--socket", broker.socket])).stdout, "x");
});

Deno.test("capture stores large output whole (50 MB) and --json reports it", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const r = await cli([
    "capture",
    "--name",
    "zeros",
    "--json",
    "--socket",
    broker.socket,
    "--",
    "head",
    "-c",
    "50000000",
    "/dev/zero",
  ]);
  assertEquals([r.code, r.stderr], [0, ""]);
  assertEquals(JSON.parse(r.stdout), {
    id: 1,
    size: 50_000_000,
    digest: digestOf(new Uint8Array(50_000_000)),
    name: "zeros",
  });
  const out = `${dir.path}/zeros`;
  await cli(["get", "1", out, "--socket", broker.socket]);
  assertEquals(Deno.statSync(out).size, 50_000_000);
});

Deno.test("capture restores SIGPIPE for the command, so pipelines inside it end quietly", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const r = await cli([
    "capture",
    "--name",
    "yes",
    "--socket",
    broker.socket,
    "--",
    "sh",
    "-c",
    "yes | head -c 4",
  ]);
  assertEquals([r.code, r.stdout, r.stderr], [0, "1\n", ""]);
  assertEquals((await cli(["get", "1", "-", "--socket", broker.socket])).stdout, "y\ny\n");
});

Deno.test("capture of a missing command exits 127, of one it cannot execute 126, and names it", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const r = await cli([
    "capture",
    "--name",
    "x",
    "--socket",
    broker.socket,
    "--",
    "/nonexistent/command",
  ]);
  assertEquals([r.code, r.stdout, r.stderr], [
    127,
    "",
    "command not found: /nonexistent/command\n",
  ]);
  const notExec = await cli(["capture", "--name", "x", "--socket", broker.socket, "--", dir.path]);
  assertEquals([notExec.code, notExec.stderr], [
    126,
    `cannot execute ${dir.path}: Is a directory\n`,
  ]);
  assertEquals((await cli(["list", "--socket", broker.socket])).stdout, "");
});

Deno.test("capture checks its arguments and the socket before running the command", async () => {
  using dir = tempDir();
  const marker = `${dir.path}/ran`;
  const cmd = ["--", "touch", marker];
  const cases: Array<[string[], string, number?]> = [
    [["capture", ...cmd], `${CAPTURE_USAGE}\n`, 2],
    [["capture", "--name", "x"], `${CAPTURE_USAGE}\n`, 2],
    [["capture", "--name", "x", "--"], `${CAPTURE_USAGE}\n`, 2],
    [["capture", "--name", "x", "stray", ...cmd], "unexpected argument before --: stray\n", 2],
    [["capture", "--name", "", ...cmd], "object name must not be empty\n", 2],
    [
      ["capture", "--name", "x", "--allow-job", "b", ...cmd],
      "--allow-job requires --job-id or MEMFDBUS_JOB_ID\n",
      2,
    ],
    [
      ["capture", "--name", "x", "--job-id", "", ...cmd],
      "--job-id requires a non-empty job id\n",
      2,
    ],
    [
      ["capture", "--name", "x", "--socket", `${dir.path}/none.sock`, ...cmd],
      noBrokerLine(`${dir.path}/none.sock`),
    ],
  ];
  for (const [args, stderr, code = 1] of cases) {
    const r = await cli(args);
    assertEquals([r.code, r.stdout, r.stderr], [code, "", stderr], args.join(" "));
  }
  ok(!existsSync(marker), "the command ran although capture failed first");
});

Deno.test("exit statuses decode like the shell reports them", () => {
  assertEquals(decodeWaitStatus(3 << 8), { kind: "exited", code: 3 });
  assertEquals(decodeWaitStatus(9), { kind: "signaled", signal: 9 });
  assertEquals(exitCodeOf({ kind: "signaled", signal: 15 }), 143);
  assertEquals(describeExit({ kind: "signaled", signal: 2 }), "was killed by SIGINT");
  assertEquals(describeExit({ kind: "exited", code: 0 }), "exited with status 0");
});

// ---- progress ----------------------------------------------------------------------------------

Deno.test("the progress line shows percentage, bar, bytes, rate and ETA within the width", () => {
  const MiB = 1024 * 1024;
  const line = renderProgress({
    label: "put",
    done: 256 * MiB,
    total: 1024 * MiB,
    elapsedMs: 500,
    width: 80,
  });
  assertEquals(
    line,
    "put  25% [######-------------------] 256.0 MiB / 1.0 GiB  512.0 MiB/s  ETA 0:02",
  );
  assertEquals(line.length, 79);
  const full = { label: "get", done: 1024 * MiB, total: 1024 * MiB, elapsedMs: 1000 };
  assertEquals(
    renderProgress({ ...full, width: 64 }),
    "get 100% [#############] 1.0 GiB / 1.0 GiB  1.0 GiB/s  ETA 0:00",
  );
  // Too narrow for a bar: it is left out.
  assertEquals(
    renderProgress({ ...full, width: 50 }),
    "get 100% 1.0 GiB / 1.0 GiB  1.0 GiB/s  ETA 0:00",
  );
  // Narrower still: cut to the width.
  assertEquals(
    renderProgress({ label: "put", done: 0, total: 64 * MiB, elapsedMs: 0, width: 20 }),
    "put   0% 0 B / 64.0",
  );
  // Nothing measured yet: no rate and no ETA.
  assertEquals(
    renderProgress({ label: "put", done: 0, total: 64 * MiB, elapsedMs: 0, width: 80 }),
    "put   0% [----------------------------------] 0 B / 64.0 MiB  -- B/s  ETA --:--",
  );
  // Unknown total (a pipe): bytes and rate only.
  assertEquals(
    renderProgress({ label: "put", done: 100 * MiB, total: null, elapsedMs: 2000, width: 80 }),
    "put 100.0 MiB  50.0 MiB/s",
  );
});

Deno.test("byte counts and ETAs are formatted compactly", () => {
  assertEquals(formatBytes(0), "0 B");
  assertEquals(formatBytes(1023), "1023 B");
  assertEquals(formatBytes(1536), "1.5 KiB");
  assertEquals(formatBytes(PROGRESS_MIN_BYTES), "64.0 MiB");
  assertEquals(formatBytes(5 * 1024 ** 4), "5.0 TiB");
  assertEquals(formatEta(0), "0:00");
  assertEquals(formatEta(61.2), "1:02");
  assertEquals(formatEta(3723), "1:02:03");
  assertEquals(formatEta(null), "--:--");
});

Deno.test("put and get of 64 MiB print nothing extra when stderr is not a terminal", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const file = `${dir.path}/big.bin`;
  const bytes = new Uint8Array(PROGRESS_MIN_BYTES);
  bytes[12345] = 7;
  Deno.writeFileSync(file, bytes);
  const put = await cli(["put", file, "--socket", broker.socket]);
  assertEquals([put.code, put.stdout, put.stderr], [0, "1\n", ""]);
  const piped = await cli(["put", "-", "--name", "piped", "--socket", broker.socket], {
    stdin: bytes,
  });
  assertEquals([piped.code, piped.stdout, piped.stderr], [0, "2\n", ""]);
  const get = await cli(["get", "1", `${dir.path}/copy.bin`, "--socket", broker.socket]);
  assertEquals([get.code, get.stdout, get.stderr], [0, "", ""]);
  assertEquals(Deno.readFileSync(`${dir.path}/copy.bin`)[12345], 7);
});

Deno.test({
  name: "put and get of 64 MiB draw a progress line when stderr is a terminal",
  ignore: scriptPath() === null,
  fn: async () => {
    using dir = tempDir();
    await using broker = await BrokerProcess.start(dir.path);
    const bytes = new Uint8Array(PROGRESS_MIN_BYTES + 1);
    bytes[PROGRESS_MIN_BYTES] = 9;
    Deno.writeFileSync(`${dir.path}/big.bin`, bytes);
    const put = await cliOnTerminal(["put", "big.bin", "--socket", broker.socket], dir.path);
    assertEquals(put.code, 0);
    ok(
      new RegExp(
        String.raw`\rput 100% \[#+\] 64\.0 MiB / 64\.0 MiB {2}\S+ \S+/s {2}ETA 0:00` + ERASE_LINE,
      ).test(put.screen),
      JSON.stringify(put.screen),
    );
    // After 100% the line says the broker is verifying instead of going blank.
    ok(put.screen.includes("\rput verifying…\x1b[K"), JSON.stringify(put.screen));
    ok(put.screen.endsWith("\r\x1b[K1\r\n"), JSON.stringify(put.screen));
    const get = await cliOnTerminal(["get", "1", "copy.bin", "--socket", broker.socket], dir.path);
    assertEquals(get.code, 0);
    ok(/\rget 100% \[#+\] 64\.0 MiB \/ 64\.0 MiB/.test(get.screen), JSON.stringify(get.screen));
    assertEquals(Deno.readFileSync(`${dir.path}/copy.bin`), bytes);
    // Small objects stay silent even on a terminal.
    Deno.writeFileSync(`${dir.path}/small.bin`, enc("hello"));
    const small = await cliOnTerminal(["put", "small.bin", "--socket", broker.socket], dir.path);
    assertEquals([small.code, small.screen], [0, "2\r\n"]);
  },
});

// ---- usage -------------------------------------------------------------------------------------

Deno.test("--help keeps the C usage block and then lists the new commands and flags", async () => {
  const r = await cli(["--help"]);
  assertEquals(r.code, 0);
  const c = `usage:
  memfdbus broker [--socket PATH] [--max-name-bytes N] [--max-objects N]
                  [--max-request-bytes N] [--max-list-bytes N]
                  [--max-total-bytes N] [--listen-backlog N]
                  [--max-clients N]
  memfdbus put FILE [--name NAME | --content-addressed]
               [--job-id JOB] [--allow-job JOB] [--socket PATH]
  memfdbus get OBJECT_ID OUT [--job-id JOB] [--socket PATH]
  memfdbus get --name NAME OUT [--job-id JOB] [--socket PATH]
  memfdbus exec OBJECT_ID [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
  memfdbus exec --name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
  memfdbus drop OBJECT_ID [--job-id JOB] [--socket PATH]
  memfdbus drop --name NAME [--job-id JOB] [--socket PATH]
  memfdbus list [--job-id JOB] [--socket PATH]
`;
  ok(r.stdout.startsWith(c));
  const rest = r.stdout.slice(c.length);
  for (
    const text of [
      "memfdbus stat OBJECT_ID",
      "memfdbus stat --name NAME",
      "memfdbus capture --name NAME",
      "--always",
      "--json",
      "--wait SECONDS",
      "publishes only if COMMAND exits 0",
    ]
  ) ok(rest.includes(text), text);
  const bare = await cli([]);
  assertEquals([bare.code, bare.stderr], [2, r.stdout]);
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
