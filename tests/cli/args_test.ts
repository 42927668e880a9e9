/**
 * The memfdbus CLI's usage texts and argument errors (PROTOCOL.md §6, defect D18), run as a real
 * subprocess, some of them against a real broker.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { cli, type CliResult, dec, enc, tempDir } from "../support/harness.ts";
import {
  assertFails,
  assertUsageError,
  C_DROP_USAGE,
  C_EXEC_USAGE,
  C_GET_USAGE,
  C_PUT_USAGE,
  C_USAGE,
  cliArgv,
  cliWithTimeout,
  exists,
  noBrokerLine,
  parallel,
  sharedTest,
  stopSharedTest,
} from "../support/cli.ts";

/** A socket path on which no broker listens. */
const NO_BROKER = `/tmp/memfdbus-no-broker-${crypto.randomUUID()}.sock`;

/** Run many failing calls at once and check each one's exact stderr line. */
async function expectAll(
  cases: readonly (readonly [readonly string[], string])[],
  env: Record<string, string> = {},
): Promise<void> {
  const results = await parallel(cases, ([args]) => cli(args, { env }));
  results.forEach((r: CliResult, i) => {
    const [args, stderr] = cases[i] ?? [[], ""];
    // Usage mistakes exit 2; a failure to connect, or a path no socket can have, exits 1.
    const runtime = /^(connect:|socket path too long)/.test(stderr);
    assertFails(r, stderr, JSON.stringify(args), runtime ? 1 : 2);
  });
}

// ---------------------------------------------------------------------------------------------
// Usage

Deno.test("--help and -h print the C usage block on stdout and exit 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const r = await cli([flag]);
    assertEquals([flag, r.code, r.stderr], [flag, 0, ""]);
    ok(r.stdout.startsWith(C_USAGE), `${flag} stdout:\n${r.stdout}`);
    assertEquals(r.stdout.split("\n").slice(0, 14), C_USAGE.split("\n").slice(0, 14));
  }
});

Deno.test("running the CLI with no arguments prints the usage on stderr and exits 2", async () => {
  const [none, help] = await Promise.all([cli([]), cli(["--help"])]);
  assertEquals([none.code, none.stdout], [2, ""]);
  ok(none.stderr.startsWith(C_USAGE), none.stderr);
  assertEquals(none.stderr, help.stdout);
});

Deno.test("an unknown subcommand says so on stderr and exits 2", async () => {
  const cases: Array<[string[], string]> = [
    [["frobnicate"], "unknown command: frobnicate (run `memfdbus --help` for the commands)\n"],
    [["toString"], "unknown command: toString (run `memfdbus --help` for the commands)\n"],
    [["__proto__"], "unknown command: __proto__ (run `memfdbus --help` for the commands)\n"],
    [["PUT", "x"], "unknown command: PUT (did you mean put?)\n"],
  ];
  const rs = await parallel(cases, ([a]) => cli(a));
  rs.forEach((r, i) => {
    assertEquals([r.code, r.stdout, r.stderr], [2, "", cases[i]?.[1]]);
  });
});

Deno.test("incomplete put, get, exec and drop commands print their two-line usage on stderr and exit 2", async () => {
  await expectAll([
    [["put"], C_PUT_USAGE],
    [["put", "--name", "n", "--socket", NO_BROKER], C_PUT_USAGE],
    [["get"], C_GET_USAGE],
    [["get", "1"], C_GET_USAGE],
    [["get", "--name", "n"], C_GET_USAGE],
    [["get", "--socket", NO_BROKER], C_GET_USAGE],
    [["get", "1", "--name", "n", "out"], C_GET_USAGE],
    [["exec", "1"], C_EXEC_USAGE],
    [["exec", "--name", "n"], C_EXEC_USAGE],
    [["exec", "1", "--"], C_EXEC_USAGE],
    [["exec", "--", "true"], C_EXEC_USAGE],
    [["exec", "1", "--name", "n", "--", "true"], C_EXEC_USAGE],
    [["exec", "--name", "n", "1", "--", "true"], C_EXEC_USAGE],
    [["drop"], C_DROP_USAGE],
    [["drop", "--job-id", "j"], C_DROP_USAGE],
    [["drop", "1", "--name", "n"], C_DROP_USAGE],
  ]);
});

// ---------------------------------------------------------------------------------------------
// Argument errors

Deno.test("a flag without its value fails with 'missing value for FLAG'", async () => {
  await expectAll([
    [["list", "--socket"], "missing value for --socket\n"],
    [["list", "--job-id"], "missing value for --job-id\n"],
    [["put", "f", "--name"], "missing value for --name\n"],
    [["put", "f", "--allow-job"], "missing value for --allow-job\n"],
    [["put", "f", "--job-id"], "missing value for --job-id\n"],
    [["put", "f", "--socket"], "missing value for --socket\n"],
    [["get", "--name"], "missing value for --name\n"],
    [["get", "1", "out", "--job-id"], "missing value for --job-id\n"],
    [["exec", "1", "--socket"], "missing value for --socket\n"],
    [["exec", "--name"], "missing value for --name\n"],
    [["drop", "1", "--job-id"], "missing value for --job-id\n"],
    [["drop", "--name"], "missing value for --name\n"],
    [["broker", "--socket"], "missing value for --socket\n"],
    [["broker", "--max-objects"], "missing value for --max-objects\n"],
  ]);
});

Deno.test("an extra positional argument fails with 'unexpected argument: X'", async () => {
  await expectAll([
    [["put", "a", "b"], "unexpected argument: b\n"],
    [["get", "1", "out", "extra"], "unexpected argument: extra\n"],
    [["get", "--name", "n", "out", "extra"], "unexpected argument: extra\n"],
    [["list", "x"], "unexpected argument: x\n"],
    [["drop", "1", "2"], "unexpected argument: 2\n"],
    [["drop", "--name", "n", "1"], "unexpected argument: 1\n"],
    [["broker", "--bogus"], "unexpected argument: --bogus\n"],
    [["broker", "extra"], "unexpected argument: extra\n"],
  ]);
});

Deno.test("exec fails with 'unexpected argument before --: X' for a second positional", async () => {
  await expectAll([
    [["exec", "1", "2", "--", "true"], "unexpected argument before --: 2\n"],
    [["exec", "1", "true"], "unexpected argument before --: true\n"],
  ]);
});

Deno.test("malformed, zero, signed, space-padded and overflowing object ids are rejected (D18 fixed)", async () => {
  const bad = ["abc", "0", "-1", "+3", " 7", "7 ", "1e3", "0x10", "", "18446744073709551616"];
  const cases: [string[], string][] = [];
  for (const id of bad) {
    const hint = id === "abc" ? " (ids are numbers; to select by name use --name abc)" : "";
    const line = id === ""
      ? "invalid object id: (empty; is the variable holding it set?)\n"
      : `invalid object id: ${id}${hint}\n`;
    cases.push([["get", id, "out", "--socket", NO_BROKER], line]);
    cases.push([["exec", id, "--socket", NO_BROKER, "--", "true"], line]);
    cases.push([["drop", id, "--socket", NO_BROKER], line]);
  }
  await expectAll(cases);
});

sharedTest(
  "the largest 64-bit id is valid and reaches the broker, which reports 'object not found'",
  async ({ broker, dir }) => {
    const max = "18446744073709551615";
    const out = `${dir}/max-id.out`;
    const rs = await Promise.all([
      cli(["get", max, out, "--socket", broker.socket]),
      cli(["drop", max, "--socket", broker.socket]),
      cli(["exec", max, "--socket", broker.socket, "--", "true"]),
      cli(["get", "007", out, "--socket", broker.socket]),
    ]);
    for (const r of rs) assertFails(r, "broker error: object not found\n");
    assertEquals(exists(out), false);
  },
);

Deno.test("bad broker flag values exit 2 with 'invalid --flag: V' before the socket file is created", async () => {
  const sock = `/tmp/memfdbus-badflag-${crypto.randomUUID()}.sock`;
  const cases: [string, string][] = [
    ["--max-objects", "0"],
    ["--max-objects", "-1"],
    ["--max-objects", "nope"],
    ["--max-objects", "18446744073709551616"],
    ["--max-name-bytes", "65537"],
    ["--max-name-bytes", "0"],
    ["--listen-backlog", "2147483648"],
    ["--max-request-bytes", "4294967296"],
    ["--max-list-bytes", " 5"],
    ["--max-total-bytes", "+5"],
    ["--max-clients", "0"],
  ];
  const rs = await parallel(
    cases,
    ([flag, v]) => cliWithTimeout(["broker", "--socket", sock, flag, v]),
  );
  rs.forEach((r, i) => {
    const [flag, v] = cases[i] ?? ["", ""];
    assertUsageError(r, `invalid ${flag}: ${v}\n`, `${flag} ${v}`);
  });
  assertEquals(exists(sock), false);
  // A bad value after good ones, and a bad value before an unknown flag: the first error wins.
  const r = await cliWithTimeout([
    "broker",
    "--socket",
    sock,
    "--max-objects",
    "5",
    "--listen-backlog",
    "0",
    "--bogus",
  ]);
  assertUsageError(r, "invalid --listen-backlog: 0\n");
  assertEquals(exists(sock), false);
});

Deno.test("put refuses --content-addressed with --name and an --allow-job without a usable job", async () => {
  using dir = tempDir();
  const file = `${dir.path}/in`;
  Deno.writeFileSync(file, enc("x"));
  const s = ["--socket", NO_BROKER];
  await expectAll([
    [
      ["put", file, "--content-addressed", "--name", "n", ...s],
      "--content-addressed cannot be combined with --name\n",
    ],
    [
      ["put", file, "--name", "n", "--content-addressed", ...s],
      "--content-addressed cannot be combined with --name\n",
    ],
    [["put", file, "--allow-job", "b", ...s], "--allow-job requires --job-id or MEMFDBUS_JOB_ID\n"],
    [
      ["put", file, "--job-id", "a", "--allow-job", "", ...s],
      "--allow-job requires a non-empty job id\n",
    ],
    [["put", file, "--job-id", "", ...s], "--job-id requires a non-empty job id\n"],
  ]);
  // An empty MEMFDBUS_JOB_ID does not count as a job.
  await expectAll(
    [[
      ["put", file, "--allow-job", "b", ...s],
      "--allow-job requires --job-id or MEMFDBUS_JOB_ID\n",
    ]],
    { MEMFDBUS_JOB_ID: "" },
  );
  // A job from the environment satisfies --allow-job (the run then fails only at connect).
  await expectAll(
    [[["put", file, "--allow-job", "b", ...s], noBrokerLine(NO_BROKER)]],
    { MEMFDBUS_JOB_ID: "a" },
  );
});

Deno.test("an empty --job-id and a job id over 256 bytes are refused before connecting", async () => {
  const long = "j".repeat(257);
  const s = ["--socket", NO_BROKER];
  await expectAll([
    [["list", "--job-id", "", ...s], "--job-id requires a non-empty job id\n"],
    [["get", "1", "out", "--job-id", "", ...s], "--job-id requires a non-empty job id\n"],
    [["drop", "1", "--job-id", "", ...s], "--job-id requires a non-empty job id\n"],
    [["exec", "1", "--job-id", "", ...s, "--", "true"], "--job-id requires a non-empty job id\n"],
    [["list", "--job-id", long, ...s], "job id too long\n"],
    [["get", "1", "out", "--job-id", long, ...s], "job id too long\n"],
    [["drop", "1", "--job-id", long, ...s], "job id too long\n"],
    [["exec", "1", "--job-id", long, ...s, "--", "true"], "job id too long\n"],
    [["put", "/dev/null", "--job-id", long, ...s], "job id too long\n"],
    [["put", "/dev/null", "--job-id", "a", "--allow-job", long, ...s], "job id too long\n"],
    // 256 bytes is the limit, so this one gets as far as connecting.
    [["list", "--job-id", "j".repeat(256), ...s], noBrokerLine(NO_BROKER)],
  ]);
});

Deno.test("a job id over 256 bytes from MEMFDBUS_JOB_ID is refused with 'job id too long'", async () => {
  const s = ["--socket", NO_BROKER];
  await expectAll([
    [["list", ...s], "job id too long\n"],
    [["get", "1", "out", ...s], "job id too long\n"],
    [["drop", "1", ...s], "job id too long\n"],
    [["put", "/dev/null", ...s], "job id too long\n"],
    [["exec", "1", ...s, "--", "true"], "job id too long\n"],
  ], { MEMFDBUS_JOB_ID: "e".repeat(257) });
  // --job-id takes priority over a bad environment value.
  await expectAll([[["list", "--job-id", "ok", ...s], noBrokerLine(NO_BROKER)]], {
    MEMFDBUS_JOB_ID: "e".repeat(257),
  });
});

Deno.test("empty names and names over 65536 bytes are refused before connecting", async () => {
  const long = "n".repeat(65537);
  const s = ["--socket", NO_BROKER];
  await expectAll([
    [["put", "/dev/null", "--name", "", ...s], "object name must not be empty\n"],
    [["get", "--name", "", "out", ...s], "object name must not be empty\n"],
    [["exec", "--name", "", ...s, "--", "true"], "object name must not be empty\n"],
    [["drop", "--name", "", ...s], "object name must not be empty\n"],
    [["put", "/dev/null", "--name", long, ...s], "object name too long\n"],
    [["get", "--name", long, "out", ...s], "object name too long\n"],
    [["exec", "--name", long, ...s, "--", "true"], "object name too long\n"],
    [["drop", "--name", long, ...s], "object name too long\n"],
    // 65536 bytes, and two-byte characters adding up to 65536 bytes, are within the limit.
    [["drop", "--name", "n".repeat(65536), ...s], noBrokerLine(NO_BROKER)],
    [["drop", "--name", "é".repeat(32768), ...s], noBrokerLine(NO_BROKER)],
    [["drop", "--name", "é".repeat(32769), ...s], "object name too long\n"],
  ]);
});

Deno.test("put rejects a bad --name before it reads any input (D23 fixed)", async () => {
  for (const name of ["n".repeat(65537), ""]) {
    const [program = "", ...args] = cliArgv(["put", "-", "--name", name, "--socket", NO_BROKER]);
    // stdin stays open and empty: a CLI that copied the input first would wait forever.
    const child = new Deno.Command(program, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    try {
      const out = await child.output();
      assertEquals(
        { code: out.code, signal: out.signal, stdout: dec(out.stdout), stderr: dec(out.stderr) },
        {
          code: 2,
          signal: null,
          stdout: "",
          stderr: name === "" ? "object name must not be empty\n" : "object name too long\n",
        },
      );
    } finally {
      clearTimeout(timer);
      await child.stdin.close().catch(() => {});
    }
  }
});

Deno.test("a socket path of 108 bytes or more fails with 'socket path too long: P'", async () => {
  const base = `/tmp/memfdbus-long-${crypto.randomUUID()}-`;
  const p108 = base + "s".repeat(108 - base.length);
  const p107 = p108.slice(0, 107);
  assertEquals([enc(p108).length, enc(p107).length], [108, 107]);
  const p200 = base + "s".repeat(200 - base.length);
  const line = `socket path too long: ${p108}\n`;
  await expectAll([
    [["list", "--socket", p108], line],
    [["get", "1", "out", "--socket", p108], line],
    [["drop", "1", "--socket", p108], line],
    [["exec", "1", "--socket", p108, "--", "true"], line],
    [["put", "/dev/null", "--socket", p108], line],
    [["list", "--socket", p200], `socket path too long: ${p200}\n`],
    [["list", "--socket", p107], noBrokerLine(p107)],
  ]);
  const b = await cliWithTimeout(["broker", "--socket", p108]);
  assertFails(b, line);
  assertEquals([exists(p108), exists(p107)], [false, false]);
});

Deno.test("every client subcommand names the socket and says to start a broker when none listens", async () => {
  const s = ["--socket", NO_BROKER];
  await expectAll([
    [["list", ...s], noBrokerLine(NO_BROKER)],
    [["get", "1", "/tmp/memfdbus-never-written", ...s], noBrokerLine(NO_BROKER)],
    [["get", "--name", "n", "-", ...s], noBrokerLine(NO_BROKER)],
    [["drop", "1", ...s], noBrokerLine(NO_BROKER)],
    [["drop", "--name", "n", ...s], noBrokerLine(NO_BROKER)],
    [["exec", "1", ...s, "--", "true"], noBrokerLine(NO_BROKER)],
    [["put", "/dev/null", ...s], noBrokerLine(NO_BROKER)],
    [["put", "-", ...s], noBrokerLine(NO_BROKER)],
  ]);
  assertEquals(exists("/tmp/memfdbus-never-written"), false);
});

sharedTest(
  "put of a missing file fails with 'open input: PATH: No such file or directory'",
  async ({ broker, dir }) => {
    const r = await cli(["put", `${dir}/does-not-exist`, "--socket", broker.socket]);
    assertFails(r, `open input: ${dir}/does-not-exist: No such file or directory\n`);
    const d = await cli([
      "put",
      `${dir}/no-such-dir/file`,
      "--name",
      "x",
      "--socket",
      broker.socket,
    ]);
    assertFails(d, `open input: ${dir}/no-such-dir/file: No such file or directory\n`);
  },
);

stopSharedTest();
