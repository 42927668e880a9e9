/**
 * The programs in examples/: they type-check, and they work against a real broker subprocess
 * run exactly as their header comments say.
 *
 * @module
 */

import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, cli, dec, digestOf, enc, ROOT, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

const EXAMPLES = `${ROOT}/examples`;
/** The permissions the header comments give. */
const CLIENT_PERMS = ["--allow-ffi", "--allow-read", "--allow-env=MEMFDBUS_JOB_ID"];
const SERVE_PERMS = ["--allow-ffi", "--allow-env=MEMFDBUS_JOB_ID", "--allow-net=127.0.0.1"];

/** A `deno run` of an example, with its stdout collected line by line. */
class Example implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly stdout: Uint8Array[] = [];
  stderr = "";
  readonly #done: Promise<void>;

  constructor(file: string, perms: readonly string[], args: readonly string[]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", ...perms, `${EXAMPLES}/${file}`, ...args],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    const out = (async (): Promise<void> => {
      for await (const chunk of child.stdout) this.stdout.push(chunk);
    })();
    const err = (async (): Promise<void> => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
      }
    })();
    this.#done = Promise.all([out, err]).then(() => {});
  }

  /** Everything written to stdout so far. */
  bytes(): Uint8Array {
    const all = new Uint8Array(this.stdout.reduce((n, c) => n + c.length, 0));
    let off = 0;
    for (const c of this.stdout) {
      all.set(c, off);
      off += c.length;
    }
    return all;
  }

  /** stdout so far as text. */
  text(): string {
    return dec(this.bytes());
  }

  /** Wait for the process to end; its exit code. */
  async exited(): Promise<number> {
    const status = await this.child.status;
    await this.#done;
    return status.code;
  }

  /** Send a signal, then wait for the exit code. */
  stop(signal: Deno.Signal = "SIGTERM"): Promise<number> {
    try {
      this.child.kill(signal);
    } catch {
      // Already gone.
    }
    return this.exited();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/** Run an example to completion. */
async function runExample(
  file: string,
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string; bytes: Uint8Array }> {
  await using p = new Example(file, CLIENT_PERMS, args);
  const code = await p.exited();
  return { code, stdout: p.text(), stderr: p.stderr, bytes: p.bytes() };
}

/** Connections the broker at `socket` has accepted and not closed (from /proc/net/unix). */
function acceptedConnections(socket: string): number {
  const lines = Deno.readTextFileSync("/proc/net/unix").split("\n");
  // The listener is one line with the path; every accepted connection adds another.
  return lines.filter((l) => l.endsWith(` ${socket}`)).length - 1;
}

/** The pattern examples/publish.ts generates for `--bytes n`. */
function generated(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 31 + (i >>> 8)) & 0xff;
  return bytes;
}

Deno.test("every example type-checks", async () => {
  const files = [...Deno.readDirSync(EXAMPLES)].filter((e) => e.name.endsWith(".ts"))
    .map((e) => `${EXAMPLES}/${e.name}`).sort();
  ok(files.length >= 3, `examples found: ${files.join(", ")}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", ...files],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(out.code, 0, dec(out.stderr));
});

Deno.test("a consumer waiting for a name gets the file the publisher then publishes", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  await using consumer = new Example("consume.ts", CLIENT_PERMS, [
    "--socket",
    broker.socket,
    "--wait-ms",
    "20000",
    "model.bin",
  ]);
  // The consumer's GET is parked in the broker before anything is published.
  await waitFor(() => acceptedConnections(broker.socket) >= 1, {
    what: "the consumer to connect",
    timeoutMs: 15_000,
  });
  assertEquals(broker.audit(), []);

  const bytes = generated(3 << 20).map((b) => b ^ 0x5a);
  Deno.writeFileSync(`${dir.path}/model.bin`, bytes);
  const published = await runExample("publish.ts", [
    "--socket",
    broker.socket,
    "model.bin",
    `${dir.path}/model.bin`,
  ]);
  const line = `1 ${bytes.length} ${digestOf(bytes)} model.bin\n`;
  assertEquals([published.code, published.stdout, published.stderr], [0, line, ""]);

  assertEquals(await consumer.exited(), 0, consumer.stderr);
  assertEquals([consumer.text(), consumer.stderr], [line, ""]);
  const audit = await broker.waitAudit(2);
  assertEquals(audit.map((r) => `${r.op} ${r.result} ${r.name}`), [
    "put ok model.bin",
    "get ok model.bin",
  ]);
});

Deno.test("the consumer writes generated bytes to stdout straight from its mapping", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const published = await runExample("publish.ts", [
    "--socket",
    broker.socket,
    "--bytes",
    "100000",
    "generated",
  ]);
  assertEquals([published.code, published.stderr], [0, ""]);
  const consumed = await runExample("consume.ts", [
    "--socket",
    broker.socket,
    "--cat",
    "generated",
  ]);
  assertEquals([consumed.code, consumed.stderr], [0, ""]);
  assertEquals(consumed.bytes, generated(100000));
});

Deno.test("the consumer gives up with exit code 1 when the name never appears", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const r = await runExample("consume.ts", ["--socket", broker.socket, "--wait-ms", "200", "x"]);
  assertEquals([r.code, r.stdout, r.stderr], [
    1,
    "",
    'nothing was published as "x" within 200 ms\n',
  ]);
});

Deno.test("the HTTP example serves the newest version of a name with its digest as ETag", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  Deno.writeFileSync(`${dir.path}/v1`, enc("version one"));
  Deno.writeFileSync(`${dir.path}/v2`, enc("version two, longer"));
  const put1 = await cli(["put", `${dir.path}/v1`, "--name", "doc", "--socket", broker.socket]);
  assertEquals(put1.code, 0, put1.stderr);

  await using server = new Example("serve.ts", SERVE_PERMS, [
    "--socket",
    broker.socket,
    "--port",
    "0",
    "doc",
  ]);
  const first = await waitFor(() => server.text().split("\n")[0]?.match(/^serving (\S+)$/), {
    what: "the example server's `serving` line",
    timeoutMs: 15_000,
  });
  const url = first[1] ?? "";

  const r1 = await fetch(url);
  assertEquals([r1.status, await r1.text()], [200, "version one"]);
  assertEquals(r1.headers.get("etag"), `"${digestOf(enc("version one"))}"`);
  assertEquals(r1.headers.get("x-memfdbus-id"), "1");

  const same = await fetch(url, { headers: { "if-none-match": r1.headers.get("etag") ?? "" } });
  assertEquals([same.status, await same.text()], [304, ""]);

  const put2 = await cli(["put", `${dir.path}/v2`, "--name", "doc", "--socket", broker.socket]);
  assertEquals(put2.code, 0, put2.stderr);
  const r2 = await fetch(url);
  assertEquals([r2.status, await r2.text()], [200, "version two, longer"]);
  assertEquals(r2.headers.get("x-memfdbus-id"), "2");

  const byName = await fetch(`${url}v1`);
  assertEquals([byName.status, await byName.text()], [404, 'nothing published as "v1"\n']);

  assertEquals(await server.stop("SIGTERM"), 0);
  assertEquals(server.stderr, "");
});

// ---- the examples in the JSDoc ----------------------------------------------------------------

Deno.test("every JSDoc example type-checks, those marked ignore included", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      `${ROOT}/scripts/check_doc_examples.ts`,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(out.code, 0, dec(out.stderr));
  ok(/^\d+ JSDoc examples type-check\n$/.test(dec(out.stdout)), dec(out.stdout));
});

Deno.test("the runnable JSDoc examples pass as documentation tests", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--doc", "--allow-all", "mod.ts", "cli.ts", "src/"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = dec(out.stdout) + dec(out.stderr);
  assertEquals(out.code, 0, text);
  ok(/^ok \| \d+ passed \| 0 failed/m.test(text), text);
});
