/**
 * `memfdbus exec` against a real broker subprocess: the environment and the single inherited
 * sealed descriptor the command sees, exit codes, descriptors that outlive a drop and the broker,
 * and how the broker stops on SIGINT and SIGTERM (PROTOCOL.md §1, §6).
 */

import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, cli, type CliResult, dec, enc, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import {
  assertFails,
  bytes,
  cliArgv,
  exists,
  noBrokerLine,
  parseFdListing,
  plain,
  sha256,
  sharedTest,
  stopSharedTest,
  uniq,
} from "../support/cli.ts";

/** Assert a successful put and return the printed id. */
function putId(r: CliResult): string {
  assertEquals({ code: r.code, stderr: r.stderr }, { code: 0, stderr: "" });
  ok(/^[1-9][0-9]*\n$/.test(r.stdout), `put stdout: ${JSON.stringify(r.stdout)}`);
  return r.stdout.trim();
}

/** Parse `env -0` output. */
function parseEnv(out: Uint8Array): Map<string, string> {
  const m = new Map<string, string>();
  for (const entry of dec(out).split("\0")) {
    if (entry === "") continue;
    const eq = entry.indexOf("=");
    m.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return m;
}

/** Publish `data` under `name` on the broker; returns the id. */
async function publish(
  socket: string,
  dir: string,
  data: Uint8Array,
  name: string,
): Promise<string> {
  const file = `${dir}/${crypto.randomUUID()}`;
  Deno.writeFileSync(file, data);
  return putId(await cli(["put", file, "--name", name, "--socket", socket]));
}

/** A Deno program, run as the exec'd command, that inspects MEMFDBUS_FD with fcntl(2). */
const PROBE = `
const fd = Number(Deno.env.get("MEMFDBUS_FD"));
const libc = Deno.dlopen("libc.so.6", {
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
});
const buf = new Uint8Array(16);
const n = Number(libc.symbols.pread(fd, buf, 16n, 0n));
console.log(JSON.stringify({
  seals: libc.symbols.fcntl(fd, 1034, 0),
  accmode: libc.symbols.fcntl(fd, 3, 0) & 3,
  cloexec: libc.symbols.fcntl(fd, 1, 0) & 1,
  write: Number(libc.symbols.write(fd, new Uint8Array([65]), 1n)),
  ftruncate: libc.symbols.ftruncate(fd, 0n),
  head: new TextDecoder().decode(buf.subarray(0, Math.max(n, 0))),
  target: Deno.readLinkSync("/proc/self/fd/" + fd),
}));
`;

/** A Deno program, run as the exec'd command, that copies MEMFDBUS_FD itself (read(2)) to stdout. */
const READ_FD = `
const fd = Number(Deno.env.get("MEMFDBUS_FD"));
const libc = Deno.dlopen("libc.so.6", {
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
});
const buf = new Uint8Array(65536);
for (;;) {
  const n = Number(libc.symbols.read(fd, buf, 65536n));
  if (n < 0) Deno.exit(9);
  if (n === 0) break;
  for (let o = 0; o < n;) o += Deno.stdout.writeSync(buf.subarray(o, n));
}
`;

// ---------------------------------------------------------------------------------------------
// The exec'd command's view

sharedTest(
  "exec sets MEMFDBUS_FD, _OBJECT_ID, _SIZE, _DIGEST and _NAME and passes the rest of the environment unchanged",
  async ({ broker, dir }) => {
    const data = bytes(12345, 21);
    const name = `${uniq("env")} ünïcode name`;
    const id = await publish(broker.socket, dir, data, name);
    const env = {
      MEMFDBUS_JOB_ID: "job-env",
      MEMFDBUS_NAME: "stale value",
      EXTRA_VARIABLE: "a=b c",
    };
    for (const selector of [[id], ["--name", name]]) {
      const r = await cli(["exec", ...selector, "--socket", broker.socket, "--", "env", "-0"], {
        env,
      });
      assertEquals([r.code, r.stderr], [0, ""]);
      const got = parseEnv(r.stdoutBytes);
      // The harness runs the CLI with DENO_NO_UPDATE_CHECK=1: the baseline gets it too.
      const base = await plain("env", ["-0"], { DENO_NO_UPDATE_CHECK: "1", ...env });
      const expected = parseEnv(base.stdoutBytes);
      const fd = got.get("MEMFDBUS_FD") ?? "";
      ok(/^[0-9]+$/.test(fd) && Number(fd) > 2, `MEMFDBUS_FD=${fd}`);
      expected.set("MEMFDBUS_FD", fd);
      expected.set("MEMFDBUS_OBJECT_ID", id);
      expected.set("MEMFDBUS_SIZE", String(data.length));
      expected.set("MEMFDBUS_DIGEST", await sha256(data));
      expected.set("MEMFDBUS_NAME", name);
      assertEquals(
        Object.fromEntries([...got].sort()),
        Object.fromEntries([...expected].sort()),
      );
      assertEquals(got.get("MEMFDBUS_JOB_ID"), "job-env");
    }
  },
);

sharedTest(
  "exec passes the arguments after -- to the command verbatim",
  async ({ broker, dir }) => {
    const id = await publish(broker.socket, dir, enc("x"), uniq("args"));
    const r = await cli([
      "exec",
      id,
      "--socket",
      broker.socket,
      "--",
      "printf",
      "%s|",
      "a",
      "b c",
      "",
      "--name",
      "--",
      "--socket",
    ]);
    assertEquals([r.code, r.stdout, r.stderr], [0, "a|b c||--name|--|--socket|", ""]);
  },
);

sharedTest(
  "the descriptor named by MEMFDBUS_FD is open in the command and reads back the object's bytes from offset 0",
  async ({ broker, dir }) => {
    const data = bytes(1200 * 1024 + 3, 22);
    const name = uniq("read");
    const id = await publish(broker.socket, dir, data, name);
    const s = ["--socket", broker.socket];
    const commands = [
      ["sh", "-c", 'exec cat "/proc/self/fd/$MEMFDBUS_FD"'],
      [Deno.execPath(), "eval", READ_FD],
    ];
    for (const command of commands) {
      for (const selector of [[id], ["--name", name]]) {
        const r = await cli(["exec", ...selector, ...s, "--", ...command]);
        assertEquals([r.code, r.stderr], [0, ""]);
        ok(
          r.stdoutBytes.length === data.length && r.stdoutBytes.every((b, i) => b === data[i]),
          `${command[0]}: ${r.stdoutBytes.length} bytes, expected ${data.length}`,
        );
      }
    }
  },
);

sharedTest(
  "the descriptor carries all four seals, refuses writes and is not close-on-exec",
  async ({ broker, dir }) => {
    const name = uniq("probe");
    const id = await publish(broker.socket, dir, enc("sealed bytes here"), name);
    const r = await cli([
      "exec",
      id,
      "--socket",
      broker.socket,
      "--",
      Deno.execPath(),
      "eval",
      PROBE,
    ]);
    assertEquals([r.code, r.stderr], [0, ""]);
    const p = JSON.parse(r.stdout) as Record<string, number | string>;
    assertEquals((p.seals as number) & 0xf, 0xf, `seals ${p.seals}`);
    assertEquals(
      { accmode: p.accmode, cloexec: p.cloexec, write: p.write, ftruncate: p.ftruncate },
      { accmode: 2, cloexec: 0, write: -1, ftruncate: -1 },
    );
    assertEquals(p.head, "sealed bytes her");
    ok(String(p.target).startsWith("/memfd:"), String(p.target));
  },
);

sharedTest(
  "the object descriptor is the only descriptor exec adds to the command",
  async ({ broker, dir }) => {
    const id = await publish(broker.socket, dir, enc("fd table"), uniq("fds"));
    const script = 'echo "$MEMFDBUS_FD"; exec ls -l /proc/self/fd';
    const r = await cli(["exec", id, "--socket", broker.socket, "--", "sh", "-c", script]);
    assertEquals([r.code, r.stderr], [0, ""]);
    const base = await plain("sh", ["-c", script]);
    assertEquals([base.code, base.stderr], [0, ""]);
    const [fdLine = "", ...rest] = r.stdout.split("\n");
    const fd = Number(fdLine);
    const got = parseFdListing(rest.join("\n"));
    const baseline = parseFdListing(base.stdout);
    ok(baseline.has(0) && baseline.has(1) && baseline.has(2), base.stdout);
    ok(!baseline.has(fd), `baseline already has ${fd}`);
    assertEquals(
      [...got.keys()].sort((a, b) => a - b),
      [...baseline.keys(), fd].sort((a, b) => a - b),
    );
    ok((got.get(fd) ?? "").startsWith("/memfd:"), `${fd} -> ${got.get(fd)}`);
  },
);

sharedTest(
  "exec exits with the command's exit code and passes its stdout and stderr through",
  async ({ broker, dir }) => {
    const id = await publish(broker.socket, dir, enc("x"), uniq("exit"));
    const s = ["--socket", broker.socket];
    const [r7, r0, r3] = await Promise.all([
      cli(["exec", id, ...s, "--", "sh", "-c", "exit 7"]),
      cli(["exec", id, ...s, "--", "true"]),
      cli(["exec", id, ...s, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]),
    ]);
    assertEquals([r7.code, r7.stdout, r7.stderr], [7, "", ""]);
    assertEquals([r0.code, r0.stdout, r0.stderr], [0, "", ""]);
    assertEquals([r3.code, r3.stdout, r3.stderr], [3, "out\n", "err\n"]);
  },
);

sharedTest(
  "exec of a missing command exits 127 with 'command not found: NAME', of one it cannot execute 126",
  async ({ broker, dir }) => {
    const id = await publish(broker.socket, dir, enc("x"), uniq("noexec"));
    const s = ["--socket", broker.socket];
    Deno.writeFileSync(`${dir}/not-executable`, enc("#!/bin/sh\necho ran\n"), { mode: 0o644 });
    Deno.chmodSync(`${dir}/not-executable`, 0o644);
    const [missing, path, noperm, directory] = await Promise.all([
      cli(["exec", id, ...s, "--", "memfdbus-no-such-command-xyz", "arg"]),
      cli(["exec", id, ...s, "--", `${dir}/missing/command`]),
      cli(["exec", id, ...s, "--", `${dir}/not-executable`]),
      cli(["exec", id, ...s, "--", dir]),
    ]);
    const seen = [missing, path, noperm, directory].map((r) => [r.code, r.stdout, r.stderr]);
    assertEquals(seen, [
      [127, "", "command not found: memfdbus-no-such-command-xyz\n"],
      [127, "", `command not found: ${dir}/missing/command\n`],
      [126, "", `cannot execute ${dir}/not-executable: Permission denied\n`],
      [126, "", `cannot execute ${dir}: Is a directory\n`],
    ]);
  },
);

// ---------------------------------------------------------------------------------------------
// Descriptors that outlive the object and the broker

Deno.test(
  "a consumer started by exec keeps reading identical bytes after a drop and after the broker stops",
  async () => {
    using dir = tempDir();
    await using broker = await BrokerProcess.start(dir.path);
    const data = enc("held-".repeat(40_000));
    const name = uniq("held");
    const id = await publish(broker.socket, dir.path, data, name);
    const script = 'echo ready; read x; cat "/proc/self/fd/$MEMFDBUS_FD"; echo MARK; read x; ' +
      'exec cat "/proc/self/fd/$MEMFDBUS_FD"';
    const [program = "", ...args] = cliArgv([
      "exec",
      "--name",
      name,
      "--socket",
      broker.socket,
      "--",
      "sh",
      "-c",
      script,
    ]);
    const child = new Deno.Command(program, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    let text = "";
    const reading = (async (): Promise<void> => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) text += chunk;
    })();
    const errText = new Response(child.stderr).text();
    try {
      await waitFor(() => text.startsWith("ready\n"), {
        what: "the consumer to start",
        timeoutMs: 10_000,
      });

      const d = await cli(["drop", id, "--socket", broker.socket]);
      assertEquals([d.code, d.stdout, d.stderr], [0, `${id}\n`, ""]);
      assertFails(
        await cli(["get", "--name", name, "-", "--socket", broker.socket]),
        "broker error: object not found\n",
      );
      await writer.write(enc("\n"));
      await waitFor(() => text.endsWith("MARK\n"), { what: "the first read", timeoutMs: 10_000 });

      const status = await broker.stop("SIGTERM");
      assertEquals([status.code, exists(broker.socket)], [0, false]);
      await writer.write(enc("\n"));
      await writer.close();
      const st = await child.status;
      await reading;
      assertEquals([st.code, await errText], [0, ""]);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }
    const payload = dec(data);
    ok(text === `ready\n${payload}MARK\n${payload}`, `consumer output: ${text.length} chars`);
  },
);

// ---------------------------------------------------------------------------------------------
// Broker shutdown

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`${signal} stops the broker with exit code 0 and unlinks its socket`, async () => {
    using dir = tempDir();
    const broker = await BrokerProcess.start(dir.path);
    try {
      assertEquals(broker.lines[0], `memfdbus broker listening on ${broker.socket}`);
      ok(Deno.lstatSync(broker.socket).isSocket, "socket exists while running");
      Deno.writeFileSync(`${dir.path}/obj`, enc("kept until shutdown"));
      putId(await cli(["put", `${dir.path}/obj`, "--socket", broker.socket]));
      const status = await broker.stop(signal);
      assertEquals(
        { code: status.code, signal: status.signal, stderr: broker.stderr },
        { code: 0, signal: null, stderr: "" },
      );
      assertEquals(exists(broker.socket), false);
      // Every line after the listening line is still a JSON audit record.
      for (const line of broker.lines.slice(1)) JSON.parse(line);
      assertFails(
        await cli(["list", "--socket", broker.socket]),
        noBrokerLine(broker.socket),
      );
    } finally {
      await broker[Symbol.asyncDispose]();
    }
  });
}

stopSharedTest();
