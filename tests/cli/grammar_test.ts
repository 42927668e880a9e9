/**
 * Issue 11, points 1 and 2 as classes rather than examples: every command the top-level help
 * lists answers `--help`/`-h`; every valued flag of every command (the broker's, the shadow's
 * and `--broker-uid` included) takes `--flag value` and `--flag=value` alike; every kind of
 * usage mistake exits 2. Real CLI processes only.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { cli, enc, tempDir } from "../support/harness.ts";
import { cliWithTimeout, noBrokerLine, parallel } from "../support/cli.ts";
import { BROKER_FLAGS } from "../../src/core/options.ts";

/** A socket path on which no broker listens. */
const NO_BROKER = `/tmp/memfdbus-grammar-${crypto.randomUUID()}.sock`;

/** The commands the top-level help names (`memfdbus CMD` and `memfdbus help [COMMAND]` lines). */
async function listedCommands(): Promise<string[]> {
  const r = await cli(["--help"]);
  const names = new Set<string>();
  for (const m of r.stdout.matchAll(/^ {2}memfdbus ([a-z]+)/gm)) names.add(m[1] ?? "");
  return [...names];
}

Deno.test("every command the top-level help lists answers --help and -h with its own usage and an example, exit 0", async () => {
  const commands = await listedCommands();
  for (const c of ["broker", "put", "get", "exec", "drop", "list", "stat", "capture"]) {
    ok(commands.includes(c), `${c} is not listed: ${commands}`);
  }
  for (const c of ["watch", "usage", "shadow", "help"]) ok(commands.includes(c), c);
  const runs = await parallel(commands.flatMap((c) => [[c, "--help"], [c, "-h"]]), (a) => cli(a));
  commands.forEach((cmd, i) => {
    const [long, short] = [runs[2 * i], runs[2 * i + 1]];
    assertEquals([cmd, long?.code, long?.stderr, short?.stdout], [cmd, 0, "", long?.stdout]);
    const text = long?.stdout ?? "";
    ok(text.startsWith(`usage: memfdbus ${cmd}`), `${cmd} --help: ${text}`);
    ok(text.includes("\nexample:\n  memfdbus "), `${cmd} has no example: ${text}`);
  });
});

Deno.test("each command's help lists every flag the command takes", async () => {
  const flags: Record<string, string[]> = {
    put: ["--name", "--content-addressed", "--allow-job", "--json", "--local"],
    get: ["--name", "--wait", "--json"],
    exec: ["--name", "--wait"],
    stat: ["--name", "--wait", "--json"],
    drop: ["--name", "--json"],
    list: ["--json", "--cluster"],
    usage: ["--json"],
    capture: ["--name", "--allow-job", "--always", "--json"],
    watch: ["--name", "--prefix", "--json", "--once"],
  };
  const client = ["--socket", "--job-id", "--timeout", "--broker-uid", "--help"];
  const broker = [...BROKER_FLAGS.valued, ...BROKER_FLAGS.switches, "--takeover", "--help"];
  const texts = await parallel(
    [...Object.keys(flags), "broker", "shadow"],
    async (c) => [c, (await cli(["help", c])).stdout] as const,
  );
  for (const [cmd, text] of texts) {
    const want = cmd === "broker"
      ? broker
      : cmd === "shadow"
      ? ["--socket", "--help"]
      : [...(flags[cmd] ?? []), ...client];
    for (const f of want) {
      ok(new RegExp(`^ +(?:-[a-z], )?${f}\\b`, "m").test(text), `${cmd} --help: ${f}`);
    }
  }
});

Deno.test("`help --help` and `help help` print the help of help, exit 0", async () => {
  const [a, b, c] = await Promise.all([
    cli(["help", "--help"]),
    cli(["help", "-h"]),
    cli(["help", "help"]),
  ]);
  ok(a.stdout.startsWith("usage: memfdbus help [COMMAND]\n"), a.stdout);
  assertEquals([a.code, b.code, b.stdout, c.code, c.stdout], [0, 0, a.stdout, 0, a.stdout]);
});

Deno.test("every valued flag of every client command takes --flag value and --flag=value", async () => {
  using dir = tempDir();
  const file = `${dir.path}/in.txt`;
  Deno.writeFileSync(file, enc("x"));
  const common: Array<[string, string]> = [
    ["--job-id", "j"],
    ["--timeout", "5"],
    ["--broker-uid", "0"],
  ];
  // [command and its fixed arguments, flags to try, arguments after the flags]
  const commands: Array<[string[], Array<[string, string]>, string[]]> = [
    [["put", file], [["--name", "n"], ["--allow-job", "b"], ...common], []],
    [["get", "--name", "n", "-"], [["--wait", "1"], ...common], []],
    [["get"], [["--name", "n"]], ["-"]],
    [["exec", "--name", "n"], [["--wait", "1"], ...common], ["--", "true"]],
    [["exec"], [["--name", "n"]], ["--", "true"]],
    [["stat", "--name", "n"], [["--wait", "1"], ...common], []],
    [["stat"], [["--name", "n"]], []],
    [["drop"], [["--name", "n"]], []],
    [["drop", "1"], common, []],
    [["list"], common, []],
    [["usage"], common, []],
    [["capture", "--name", "n"], [["--allow-job", "b"], ...common], ["--", "true"]],
    [["capture"], [["--name", "n"]], ["--", "true"]],
    [["watch"], [["--name", "n"], ["--prefix", "p"], ...common], []],
  ];
  const runs: string[][] = [];
  for (const [head, flags, tail] of commands) {
    for (const [flag, value] of flags) {
      // --allow-job needs a job; --wait needs --name (given in head).
      const extra = flag === "--allow-job" ? ["--job-id", "a"] : [];
      runs.push([...head, flag, value, ...extra, "--socket", NO_BROKER, ...tail]);
      runs.push([...head, `${flag}=${value}`, ...extra, `--socket=${NO_BROKER}`, ...tail]);
    }
  }
  const rs = await parallel(runs, (a) => cli(a));
  rs.forEach((r, i) => {
    const what = (runs[i] ?? []).join(" ");
    assertEquals([what, r.code, r.stdout, r.stderr], [what, 1, "", noBrokerLine(NO_BROKER)]);
  });
});

Deno.test("every valued flag of the broker and the shadow takes --flag value and --flag=value", async () => {
  using dir = tempDir();
  const missing = `${dir.path}/no-such-dir`;
  // A value each flag refuses (or a path that cannot be used), so the broker stops at once.
  const bad: Record<string, string> = {
    "--socket": `${missing}/b.sock`,
    "--socket-mode": "999",
    "--shadow": `${missing}/s.sock`,
    "--evict": "sometimes",
    "--metrics": "",
    "--config": `${missing}/c.jsonc`,
    "--policy": `${missing}/p.jsonc`,
    "--cluster": "bad",
    "--host-id": "h",
  };
  let n = 0;
  const pairs = BROKER_FLAGS.valued.map((flag) => {
    const v = bad[flag] ?? "0";
    // Each run its own socket: a run that gets as far as listening must not meet another.
    const sock = (): string[] => flag === "--socket" ? [] : ["--socket", `${dir.path}/${n++}.sock`];
    return [["broker", ...sock(), flag, v], ["broker", ...sock(), `${flag}=${v}`]];
  });
  const rs = await parallel(pairs.flat(), (a) => cliWithTimeout(a, 30_000));
  pairs.forEach(([spaced], i) => {
    const [a, b] = [rs[2 * i], rs[2 * i + 1]];
    const flag = spaced?.at(-2) ?? "";
    ok(a !== undefined && b !== undefined);
    ok(a.code !== 0 && !a.stderr.includes("unexpected argument"), `${flag}: ${a.stderr}`);
    // The same outcome either way (the per-run socket path aside).
    const same = (t: string): string => t.replace(/\/[0-9]+\.sock/g, "/N.sock");
    assertEquals([flag, b.code, same(b.stderr)], [flag, a.code, same(a.stderr)]);
    if (bad[flag] === undefined) {
      assertEquals([flag, a.code, a.stderr], [flag, 2, `invalid ${flag}: 0\n`]);
    }
  });
  // The shadow's one flag, both ways.
  const [s1, s2] = await Promise.all([
    cliWithTimeout(["shadow", "--socket", `${missing}/x.sock`]),
    cliWithTimeout(["shadow", `--socket=${missing}/x.sock`]),
  ]);
  assertEquals([s1.code, s1.stderr], [1, `bind: ${missing}/x.sock: No such file or directory\n`]);
  assertEquals([s2.code, s2.stderr], [s1.code, s1.stderr]);
});

Deno.test("every kind of usage mistake exits 2, with its line on stderr and nothing on stdout", async () => {
  const s = ["--socket", NO_BROKER];
  const cases: Array<[string[], string]> = [
    [[], "usage:\n"],
    [["lsit"], "unknown command: lsit (did you mean list?)\n"],
    [["put"], "usage: memfdbus put FILE"],
    [["get", "1"], "usage: memfdbus get OBJECT_ID OUT"],
    [["exec", "1", ...s], "usage: memfdbus exec OBJECT_ID"],
    [["drop", ...s], "usage: memfdbus drop OBJECT_ID"],
    [["stat", ...s], "usage: memfdbus stat OBJECT_ID"],
    [["capture", ...s], "usage: memfdbus capture --name NAME"],
    [["shadow"], "usage: memfdbus shadow --socket PATH\n"],
    [["list", "--bogus", ...s], "unexpected argument: --bogus\n"],
    [["watch", "x", ...s], "unexpected argument: x\n"],
    [["usage", "x", ...s], "unexpected argument: x\n"],
    [["list", "--socket"], "missing value for --socket\n"],
    [["get", "model.bin", "out", ...s], "invalid object id: model.bin (ids are numbers"],
    [["get", "--name", "n", "out", "--wait", "soon", ...s], "invalid --wait: soon"],
    [["list", "--timeout", "0", ...s], "invalid --timeout: 0"],
    [["list", "--json=1", ...s], "--json takes no value\n"],
    [["put", "/dev/null", "--name", "", ...s], "object name must not be empty\n"],
    [["list", "--job-id", "", ...s], "--job-id requires a non-empty job id\n"],
    [["broker", "--max-objects", "0"], "invalid --max-objects: 0\n"],
    [["broker", "--bogus"], "unexpected argument: --bogus\n"],
    [["broker", "--require-job=yes"], "--require-job takes no value\n"],
    [["help", "nope"], "unknown command: nope"],
    [["help", "get", "extra"], "unexpected argument: extra\n"],
  ];
  const rs = await parallel(cases, ([a]) => cliWithTimeout(a));
  rs.forEach((r, i) => {
    const [args, start] = cases[i] ?? [[], ""];
    const what = args.join(" ");
    assertEquals([what, r.code, r.stdout], [what, 2, ""]);
    ok(r.stderr.startsWith(start), `${what}: ${r.stderr}`);
  });
});
