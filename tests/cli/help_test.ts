/**
 * Issue 11, points 1 and 2: help for every subcommand, `help [COMMAND]`, `--version`, unknown
 * commands, and one flag grammar (`--flag value` and `--flag=value`, `--wait` that never
 * swallows an output path), run as real CLI processes against a real broker.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, CLI, cli, enc, ROOT, tempDir } from "../support/harness.ts";
import { parallel } from "../support/cli.ts";
import { COMMAND_HELP } from "../../src/cli/usage.ts";

const COMMANDS = ["broker", "put", "get", "exec", "drop", "list", "stat", "capture", "shadow"];

Deno.test("every subcommand answers --help and -h with its own usage, flags and an example, exit 0", async () => {
  const runs = await parallel(
    COMMANDS.flatMap((c) => [[c, "--help"], [c, "-h"], ["help", c]]),
    (a) => cli(a),
  );
  for (let i = 0; i < COMMANDS.length; i++) {
    const cmd = COMMANDS[i] ?? "";
    const [long, short, viaHelp] = runs.slice(i * 3, i * 3 + 3);
    assertEquals([long?.code, long?.stderr], [0, ""], cmd);
    const text = long?.stdout ?? "";
    ok(text.startsWith(`usage: memfdbus ${cmd}`), `${cmd}: ${text}`);
    ok(text.includes("\nexample:\n  memfdbus "), `${cmd} has no example: ${text}`);
    ok(text.includes("--socket"), `${cmd} does not show --socket`);
    assertEquals([short?.code, short?.stdout, viaHelp?.code, viaHelp?.stdout], [0, text, 0, text]);
  }
});

Deno.test("client commands' help shows the defaults of --socket, --job-id and --timeout", async () => {
  const r = await cli(["get", "--help"]);
  for (
    const line of [
      "  --socket PATH          broker socket (default: $MEMFDBUS_SOCKET, else /tmp/memfdbus.sock)\n",
      "  --job-id JOB           act as job JOB (default: $MEMFDBUS_JOB_ID; none: unscoped)\n",
      "  --timeout SECONDS      give up when the broker has not answered within SECONDS (30)\n",
      "  --wait SECONDS         with --name: wait up to SECONDS for NAME to be published\n",
    ]
  ) ok(r.stdout.includes(line), line);
});

Deno.test("help alone prints the full usage on stdout, exit 0; --version prints deno.json's version", async () => {
  const version = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`))
    .version as string;
  const [help, usage, v] = await Promise.all([cli(["help"]), cli(["--help"]), cli(["--version"])]);
  assertEquals([help.code, help.stderr, help.stdout], [0, "", usage.stdout]);
  assertEquals([v.code, v.stdout, v.stderr], [0, `memfdbus ${version}\n`, ""]);
});

Deno.test("an unknown command says so and suggests the nearest one, exit 2", async () => {
  const cases: Array<[string[], string]> = [
    [["lsit"], "unknown command: lsit (did you mean list?)\n"],
    [["brokr", "--socket", "x"], "unknown command: brokr (did you mean broker?)\n"],
    [["gte"], "unknown command: gte (did you mean get?)\n"],
    [["help", "lsit"], "unknown command: lsit (did you mean list?)\n"],
    [["zzzzzz"], "unknown command: zzzzzz (run `memfdbus --help` for the commands)\n"],
    [["version"], "unknown command: version (did you mean --version?)\n"],
    [["-v"], "unknown command: -v (did you mean --version?)\n"],
    // Options before the command: the line says where they go, reordered when it can.
    [
      ["--socket", "/tmp/x.sock", "list", "--json"],
      "unknown command: --socket (options go after the command: " +
      "memfdbus list --socket /tmp/x.sock --json)\n",
    ],
    [
      ["--job-id=a b", "list"],
      "unknown command: --job-id=a b (options go after the command: memfdbus COMMAND " +
      "--job-id=a b ...; run `memfdbus --help` for the commands)\n",
    ],
    [
      ["--json"],
      "unknown command: --json (options go after the command: memfdbus COMMAND --json ...; " +
      "run `memfdbus --help` for the commands)\n",
    ],
  ];
  const rs = await parallel(cases, ([a]) => cli(a));
  rs.forEach((r, i) => assertEquals([r.code, r.stdout, r.stderr], [2, "", cases[i]?.[1]]));
});

Deno.test("--flag value and --flag=value work alike for every valued flag, the broker's too", async () => {
  using dir = tempDir();
  // --socket=PATH and --max-objects=N on the broker command line.
  await using broker = await BrokerProcess.start(dir.path, ["--max-objects=2"]);
  const sock = broker.socket;
  Deno.writeFileSync(`${dir.path}/a.txt`, enc("alpha"));
  const put1 = await cli([
    "put",
    `${dir.path}/a.txt`,
    "--name=a",
    `--socket=${sock}`,
    "--job-id=j",
  ]);
  const put2 = await cli(["put", `${dir.path}/a.txt`, "--name", "b", "--socket", sock]);
  assertEquals([put1.code, put1.stdout, put2.code, put2.stdout], [0, "1\n", 0, "2\n"]);
  // The broker took --max-objects=2: a third object is refused.
  const put3 = await cli(["put", `${dir.path}/a.txt`, "--name=c", `--socket=${sock}`]);
  assertEquals([put3.code, put3.stderr], [1, "broker error: broker object quota exceeded\n"]);
  const got = await cli(["get", "--name=a", "-", `--socket=${sock}`, "--timeout=5", "--job-id=j"]);
  assertEquals([got.code, got.stdout, got.stderr], [0, "alpha", ""]);
  const st = await cli(["stat", "--name", "b", "--socket", sock, "--timeout", "5", "--json"]);
  assertEquals([st.code, JSON.parse(st.stdout).name], [0, "b"]);
});

Deno.test("--wait takes SECONDS either way and never swallows the output path", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  Deno.writeFileSync(`${dir.path}/r.txt`, enc("result"));
  assertEquals((await cli(["put", `${dir.path}/r.txt`, "--name", "r", ...s])).code, 0);
  // The form of the issue: `--wait 30 out.bin` waits up to 30 s and writes out.bin.
  const spaced = await cli(["get", "--name", "r", "--wait", "30", `${dir.path}/out.bin`, ...s]);
  const joined = await cli(["get", "--name", "r", "--wait=30", `${dir.path}/out2.bin`, ...s]);
  const max = await cli(["get", "--name", "r", "--wait", "max", "-", ...s]);
  assertEquals([spaced.code, spaced.stderr, joined.code, max.code, max.stdout], [
    0,
    "",
    0,
    0,
    "result",
  ]);
  assertEquals(Deno.readTextFileSync(`${dir.path}/out.bin`), "result");
  assertEquals(Deno.readTextFileSync(`${dir.path}/out2.bin`), "result");
  // A path after --wait is refused loudly, before anything is written or awaited.
  const hint = " (expected seconds, for example --wait 30, or --wait max)";
  const swallowed = await cli(["get", "--name", "x", "--wait", "out.bin", ...s]);
  assertEquals([swallowed.code, swallowed.stdout, swallowed.stderr], [
    2,
    "",
    `invalid --wait: out.bin${hint}\n`,
  ]);
  const bare = await cli(["get", "--name", "x", "out.bin", ...s, "--wait"]);
  assertEquals([bare.code, bare.stderr], [2, "missing value for --wait\n"]);
});

Deno.test("a switch given a value and a bad --timeout are usage errors, exit 2", async () => {
  const cases: Array<[string[], string]> = [
    [["list", "--json=yes"], "--json takes no value\n"],
    [["put", "f", "--content-addressed=1"], "--content-addressed takes no value\n"],
    [["list", "--timeout", "soon"], "invalid --timeout: soon (expected seconds, for example 30)\n"],
    [["list", "--timeout=0"], "invalid --timeout: 0 (expected seconds, for example 30)\n"],
  ];
  const rs = await parallel(cases, ([a]) => cli(a));
  rs.forEach((r, i) => assertEquals([r.code, r.stdout, r.stderr], [2, "", cases[i]?.[1]]));
});

Deno.test("MEMFDBUS_SOCKET is the default socket of the client commands and of the broker", async () => {
  using dir = tempDir();
  const sock = `${dir.path}/env.sock`;
  // The broker started without --socket listens where MEMFDBUS_SOCKET says.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "broker"],
    env: { MEMFDBUS_SOCKET: sock },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let first = "";
    while (!first.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      first += value;
    }
    assertEquals(first.split("\n")[0], `memfdbus broker listening on ${sock}`);
    reader.releaseLock();
    Deno.writeFileSync(`${dir.path}/e.txt`, enc("env"));
    const put = await cli(["put", `${dir.path}/e.txt`], { env: { MEMFDBUS_SOCKET: sock } });
    const list = await cli(["list", "--json"], { env: { MEMFDBUS_SOCKET: sock } });
    assertEquals([put.code, put.stdout, list.code, JSON.parse(list.stdout).length], [
      0,
      "1\n",
      0,
      1,
    ]);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await child.stderr.cancel();
  }
});

Deno.test("each command's help starts every option's description in one column", () => {
  for (const [command, text] of Object.entries(COMMAND_HELP)) {
    const options = text.split("\n").filter((l) => /^ {2}-/.test(l));
    const columns = new Set(options.map((l) => /^ {2}\S.*?\S {2,}/.exec(l)?.[0].length));
    assertEquals([command, columns.size <= 1], [command, true], `${command}: ${[...columns]}`);
  }
});
