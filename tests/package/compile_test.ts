/**
 * `deno task compile` and the executable it builds. The build is attempted once, at load, with a
 * time limit; where the denort runtime cannot be had (no download, no DENORT_BIN) the tests of
 * the executable are reported as ignored, with the reason printed, never as passed. Any other
 * build failure makes them fail.
 *
 * @module
 */

import { assertEquals, ok } from "../support/assert.ts";
import { COMPILE_PERMISSIONS, RUNTIME_UNAVAILABLE } from "../../scripts/compile.ts";
import { CLI, dec, ROOT } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

const SCRIPT = `${ROOT}/scripts/compile.ts`;
/** The permissions `deno task compile` runs the script with. */
const SCRIPT_PERMS = ["--allow-run", "--allow-read", "--allow-write", "--allow-env"];
/** How long the build may take here; a stalled runtime download ends it. */
const BUILD_TIMEOUT_MS = Number(Deno.env.get("MEMFDBUS_COMPILE_TIMEOUT_MS") ?? "90000");

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(
  argv: readonly string[],
  env: Record<string, string> = {},
  cwd?: string,
): Promise<Ran> {
  const [cmd = "", ...args] = argv;
  const out = await new Deno.Command(cmd, {
    args,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(cwd === undefined ? {} : { cwd }),
  }).output();
  return { code: out.code, stdout: dec(out.stdout), stderr: dec(out.stderr) };
}

/** Run the compile script as `deno task compile` does, writing to `output`. */
function compileScript(output: string, env: Record<string, string> = {}): Promise<Ran> {
  return run([
    Deno.execPath(),
    "run",
    ...SCRIPT_PERMS,
    SCRIPT,
    "--output",
    output,
    "--timeout-ms",
    String(BUILD_TIMEOUT_MS),
  ], env);
}

// ---- the one build, at load ----------------------------------------------------------------

const buildDir = Deno.makeTempDirSync({ prefix: "memfdbus-compile-" });
globalThis.addEventListener("unload", () => Deno.removeSync(buildDir, { recursive: true }));
const BIN = `${buildDir}/memfdbus`;
const build = await compileScript(BIN);
/** The runtime could not be had: the executable's tests are ignored. */
const unavailable = build.code === RUNTIME_UNAVAILABLE;
if (unavailable) {
  console.log(`compile_test: tests of the compiled executable ignored: ${build.stderr.trim()}`);
}

// ---- a broker from any argv ----------------------------------------------------------------

/** A broker process started from `argv`, with its stdout lines. */
class Broker implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  readonly #done: Promise<void>;

  constructor(argv: readonly string[]) {
    const [cmd = "", ...args] = argv;
    const child = new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    const lines = (async (): Promise<void> => {
      let pending = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
          this.lines.push(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      }
    })();
    const errors = (async (): Promise<void> => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
      }
    })();
    this.#done = Promise.all([lines, errors]).then(() => {});
  }

  /** Wait for the listening line; throws with stderr when the broker died first. */
  async listening(): Promise<string> {
    let exited = false;
    void this.child.status.then(() => (exited = true));
    await waitFor(() => this.lines.length > 0 || exited, {
      what: "broker listening line",
      timeoutMs: 15_000,
    });
    if (this.lines.length === 0) {
      await this.#done;
      throw new Error(`broker exited before listening: ${this.stderr}`);
    }
    return this.lines[0] ?? "";
  }

  /** SIGTERM, then the exit code. */
  async stop(): Promise<number> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    const status = await this.child.status;
    await this.#done;
    return status.code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.child.status;
    await this.#done;
  }
}

/**
 * Run a broker and put, get, exec and list against it through `memfdbus` (an argv prefix), with
 * a JSONC config file (the npm parser must be there) and an object big enough that its digest is
 * verified on the hash Worker.
 */
async function endToEnd(memfdbus: readonly string[]): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "memfdbus-e2e-" });
  try {
    const socket = `${dir}/bus.sock`;
    Deno.writeTextFileSync(
      `${dir}/memfdbus.jsonc`,
      `{\n  // where clients connect\n  "socket": "${socket}",\n  "maxObjects": 10,\n}\n`,
    );
    const small = new TextEncoder().encode("hello from a compiled memfdbus\n");
    const big = new Uint8Array(3 << 20).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
    Deno.writeFileSync(`${dir}/small.txt`, small);
    Deno.writeFileSync(`${dir}/big.bin`, big);
    const bus = ([cmd = "", ...args]: string[], env: Record<string, string> = {}): Promise<Ran> =>
      run([...memfdbus, cmd, "--socket", socket, ...args], env, dir);

    await using broker = new Broker([...memfdbus, "broker", "--config", `${dir}/memfdbus.jsonc`]);
    assertEquals(await broker.listening(), `memfdbus broker listening on ${socket}`);

    const put1 = await bus(["put", `${dir}/small.txt`, "--name", "greeting"]);
    assertEquals([put1.code, put1.stdout, put1.stderr], [0, "1\n", ""]);
    const put2 = await bus(["put", `${dir}/big.bin`, "--name", "big"], {
      MEMFDBUS_JOB_ID: "alpha",
    });
    assertEquals([put2.code, put2.stdout, put2.stderr], [0, "2\n", ""]);

    const get1 = await bus(["get", "--name", "greeting", "-"]);
    assertEquals([get1.code, get1.stdout, get1.stderr], [0, dec(small), ""]);
    const get2 = await bus(["get", "2", `${dir}/copy.bin`]);
    assertEquals([get2.code, get2.stderr], [0, ""]);
    ok(Deno.readFileSync(`${dir}/copy.bin`).every((b, i) => b === big[i]), "copy differs");

    const exec = await bus([
      "exec",
      "--name",
      "big",
      "--",
      "sh",
      "-c",
      'wc -c < /proc/self/fd/$MEMFDBUS_FD; echo "$MEMFDBUS_OBJECT_ID $MEMFDBUS_NAME"',
    ]);
    assertEquals([exec.code, exec.stdout.replace(/^ +/, ""), exec.stderr], [
      0,
      `${3 << 20}\n2 big\n`,
      "",
    ]);

    const list = await bus(["list"]);
    assertEquals(
      list.stdout.split("\n").filter((l) => l !== "").map((l) => l.split("\t").slice(0, 4)),
      [["1", "owner=-", "allowed=-", String(small.length)], [
        "2",
        "owner=alpha",
        "allowed=-",
        String(big.length),
      ]],
    );

    assertEquals(await broker.stop(), 0);
    assertEquals(broker.stderr, "");
    const audit = broker.lines.slice(1).map((l) => JSON.parse(l) as { op: string; result: string });
    assertEquals(audit.map((r) => `${r.op} ${r.result}`), [
      "put ok",
      "put ok",
      "get ok",
      "get ok",
      "get ok",
      "list ok",
    ]);
    ok(!Deno.readDirSync(dir).some((e) => e.name === "bus.sock"), "socket left behind");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

// ---- tests ---------------------------------------------------------------------------------

Deno.test("the compile script refuses the deno CLI as DENORT_BIN in one sentence", async () => {
  const output = `${buildDir}/refused`;
  const r = await compileScript(output, { DENORT_BIN: Deno.execPath() });
  assertEquals(r.code, RUNTIME_UNAVAILABLE);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  ok(lines[0]?.startsWith("DENORT_BIN names the deno CLI"), r.stderr);
  ok(lines[0]?.includes(`denort executable matching deno ${Deno.version.deno}`), r.stderr);
  ok(!Deno.readDirSync(buildDir).some((e) => e.name.startsWith("refused")), "output written");
});

Deno.test("the compiled permission set is enough for broker, put, get, exec and list", async () => {
  await endToEnd([Deno.execPath(), "run", "--no-prompt", ...COMPILE_PERMISSIONS, CLI]);
});

Deno.test({
  name: "without a denort runtime the compile script fails with one sentence saying how to fix it",
  ignore: !unavailable,
  fn: () => {
    assertEquals(build.code, RUNTIME_UNAVAILABLE);
    const lines = build.stderr.trim().split("\n");
    assertEquals(lines.length, 1, build.stderr);
    ok(/set DENORT_BIN to a denort executable matching deno \d/.test(lines[0] ?? ""), build.stderr);
    ok(!Deno.readDirSync(buildDir).some((e) => e.name.startsWith("memfdbus")), "output written");
  },
});

Deno.test({
  name: "deno task compile builds an executable that prints the memfdbus usage",
  ignore: unavailable,
  fn: async () => {
    assertEquals([build.code, build.stderr], [0, ""], build.stderr);
    ok(build.stdout.startsWith(`compiled ${BIN} `), build.stdout);
    const help = await run([BIN, "--help"]);
    assertEquals(help.code, 0);
    ok(help.stdout.startsWith("usage:\n  memfdbus broker"), help.stdout);
  },
});

Deno.test({
  name: "the compiled executable runs a broker and serves put, get, exec and list end to end",
  ignore: unavailable,
  fn: async () => {
    assertEquals(build.code, 0, build.stderr);
    await endToEnd([BIN]);
  },
});
