/**
 * Issue 11, points 3 and 5: nothing left behind and signals as an operator expects — an
 * interrupted `get` removes its temporary file and exits 128+N, a closed output pipe ends it
 * with 141, the shadow removes its socket on SIGTERM/SIGINT, and a broker ignores SIGHUP unless
 * it runs in a terminal (where SIGHUP stops it and SIGUSR2 is refused). Real processes only.
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  alive,
  BrokerProcess,
  catchesSignal,
  CLI,
  CLI_PERMS,
  enc,
  tempDir,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { exists, listDir, scriptPath, terminalCommand } from "../support/cli.ts";
import { brokerPids, signal } from "../support/shadow.ts";
import { Client } from "../../src/client.ts";

const SIZE = 384 * 1024 * 1024;

/** Publish SIZE bytes under `name` with the library (fast, no CLI copy). */
async function publishBig(socket: string, name: string): Promise<void> {
  await using client = new Client({ socket, jobId: null });
  const bytes = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i += 4096) bytes[i] = i & 0xff;
  await client.put(bytes, { name });
}

function spawnCli(args: readonly string[], stdout: "null" | "piped" = "null"): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, ...args],
    stdin: "null",
    stdout,
    stderr: "piped",
  }).spawn();
}

for (const [sig, code] of [["SIGTERM", 143], ["SIGINT", 130], ["SIGHUP", 129]] as const) {
  Deno.test({
    name: `${sig} during a large get to a file removes the temporary file and exits ${code}`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      using dir = tempDir();
      await using broker = await BrokerProcess.start(dir.path);
      await publishBig(broker.socket, "big");
      const outDir = `${dir.path}/out`;
      Deno.mkdirSync(outDir);
      // The copy takes a fraction of a second: stop the process (SIGSTOP) as soon as its
      // temporary file appears, so the signal surely arrives mid-copy. A copy that finished
      // before it could be stopped is retried.
      for (let attempt = 1;; attempt++) {
        const child = spawnCli([
          "get",
          "--name",
          "big",
          `${outDir}/model.bin`,
          "--socket",
          broker.socket,
        ]);
        let stopped = false;
        const inFlight = (): boolean =>
          listDir(outDir).some((n) => n.startsWith(".model.bin.memfdbus-"));
        // Polled every millisecond, to catch the copy while its temporary file exists.
        await waitFor(() => inFlight() || exists(`${outDir}/model.bin`), {
          what: "the get to write its temporary file or finish",
          everyMs: 1,
        });
        if (inFlight()) {
          Deno.kill(child.pid, "SIGSTOP");
          stopped = inFlight();
        }
        if (!stopped) {
          const st = await child.status;
          await child.stderr.cancel();
          assertEquals(st.code, 0, "get failed instead of finishing");
          ok(attempt < 20, "the copy always finished before it could be stopped");
          Deno.removeSync(`${outDir}/model.bin`);
          continue;
        }
        Deno.kill(child.pid, sig);
        Deno.kill(child.pid, "SIGCONT");
        const out = await child.output().catch(async () => {
          const st = await child.status;
          return { code: st.code, stderr: new Uint8Array() };
        });
        assertEquals([out.code, new TextDecoder().decode(out.stderr)], [code, ""]);
        assertEquals(listDir(outDir), [], "a temporary file or a partial OUT was left behind");
        return;
      }
    },
  });
}

Deno.test({
  name: "get to a pipe whose reader goes away exits 141 quietly",
  sanitizeResources: false,
  fn: async () => {
    using dir = tempDir();
    await using broker = await BrokerProcess.start(dir.path);
    await using client = new Client({ socket: broker.socket, jobId: null });
    await client.put(new Uint8Array(8 * 1024 * 1024), { name: "pipe" });
    const child = spawnCli(["get", "--name", "pipe", "-", "--socket", broker.socket], "piped");
    const reader = child.stdout.getReader();
    await reader.read(); // some bytes arrived: the copy is under way
    await reader.cancel(); // the reader goes away, as `| head -c1` does
    const status = await child.status;
    const stderr = new TextDecoder().decode(
      new Uint8Array(await new Response(child.stderr).arrayBuffer()),
    );
    assertEquals([status.code, stderr], [141, ""]);
  },
});

/** The kernel function a process's main thread sleeps in (empty when not readable). */
function wchan(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/wchan`);
  } catch {
    return "";
  }
}

for (const [sig, code] of [["SIGTERM", 143], ["SIGINT", 130], ["SIGHUP", 129]] as const) {
  Deno.test({
    name: `${sig} stops a get blocked writing to a pipe nobody reads, exit ${code}`,
    sanitizeResources: false,
    fn: async () => {
      using dir = tempDir();
      await using broker = await BrokerProcess.start(dir.path);
      await using client = new Client({ socket: broker.socket, jobId: null });
      await client.put(new Uint8Array(8 * 1024 * 1024), { name: "stall" });
      // stdout is a pipe this test never reads: the get fills it and blocks in write(2), where
      // a signal handler of its own could not run (as under `| less` left open).
      const child = spawnCli(["get", "--name", "stall", "-", "--socket", broker.socket], "piped");
      await waitFor(() => wchan(child.pid).includes("pipe"), {
        what: "the get to block writing into the full pipe",
        timeoutMs: 30_000,
      });
      child.kill(sig);
      // A get that ignored the signal would wait for the reader forever: SIGKILL (137) then.
      const guard = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const status = await child.status;
      clearTimeout(guard);
      await child.stdout.cancel();
      const stderr = new TextDecoder().decode(
        new Uint8Array(await new Response(child.stderr).arrayBuffer()),
      );
      assertEquals([status.code, stderr], [code, ""]);
    },
  });
}

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`the shadow removes its socket file when ${sig} stops it, exit 0`, async () => {
    using dir = tempDir();
    const path = `${dir.path}/shadow.sock`;
    const child = spawnCli(["shadow", "--socket", path], "piped");
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const { value } = await reader.read();
    assertEquals(value, `memfdbus shadow listening on ${path}\n`);
    ok(exists(path));
    child.kill(sig);
    const status = await child.status;
    await reader.cancel();
    const stderr = new TextDecoder().decode(
      new Uint8Array(await new Response(child.stderr).arrayBuffer()),
    );
    assertEquals([status.code, stderr, exists(path)], [0, "", false]);
  });
}

Deno.test("a broker outside a terminal ignores SIGHUP (with a line on stderr) and keeps serving", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  await using client = new Client({ socket: broker.socket, jobId: null });
  const { id } = await client.put(enc("kept"), { name: "kept" });
  await waitFor(() => catchesSignal(broker.pid, "SIGHUP"), { what: "the broker's SIGHUP handler" });
  broker.child.kill("SIGHUP");
  await waitFor(
    () => broker.stderr.includes("SIGHUP ignored"),
    { what: "the broker's note that it ignored SIGHUP", timeoutMs: 10_000 },
  );
  assertEquals(
    broker.stderr,
    "memfdbus broker: SIGHUP ignored (SIGUSR2 upgrades, SIGTERM stops)\n",
  );
  using obj = await client.get(id);
  assertEquals(obj.text(), "kept");
  const status = await broker.stop("SIGTERM");
  assertEquals([status.code, exists(broker.socket)], [0, false]);
});

const script = scriptPath();

/**
 * `memfdbus broker --socket SOCK` in a terminal of its own (util-linux script): once it listens,
 * its pid and the terminal, whose stdin is the keyboard and which exits with the broker's status.
 */
async function brokerInTerminal(sock: string): Promise<{ term: Deno.ChildProcess; pid: number }> {
  const term = terminalCommand(script ?? "script", ["broker", "--socket", sock], {
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pid = await waitFor(
    () => (exists(sock) ? brokerPids(sock)[0] : undefined),
    { what: "the broker in the terminal to listen", timeoutMs: 30_000 },
  );
  return { term, pid };
}

Deno.test({
  name:
    "in a terminal, a broker refuses SIGUSR2 (its successor would escape Ctrl-C) and SIGHUP stops it" +
    (script === null ? " [ignored: util-linux script is not installed]" : ""),
  ignore: script === null,
  fn: async () => {
    using dir = tempDir();
    const sock = `${dir.path}/tty.sock`;
    const { term, pid } = await brokerInTerminal(sock);
    await waitFor(() => catchesSignal(pid, "SIGUSR2") && catchesSignal(pid, "SIGHUP"), {
      what: "the terminal broker's SIGUSR2 and SIGHUP handlers",
    });
    signal(pid, "SIGUSR2");
    // Still the same broker, still serving, and no successor.
    await using client = new Client({ socket: sock, jobId: null });
    await waitFor(async () => (await client.list()).length === 0, {
      what: "the broker to answer",
      timeoutMs: 10_000,
    });
    signal(pid, "SIGHUP");
    await waitFor(() => !alive(pid), { what: "the broker to stop on SIGHUP", timeoutMs: 15_000 });
    await term.stdin.close();
    const out = await term.output();
    const screen = new TextDecoder().decode(out.stdout);
    ok(
      screen.includes(
        "memfdbus broker: SIGUSR2 ignored: this broker runs in a terminal, where its successor " +
          "would not stop on Ctrl-C; run `memfdbus broker --takeover` in another terminal",
      ),
      JSON.stringify(screen),
    );
    assertEquals([exists(sock), brokerPids(sock)], [false, []]);
  },
});

Deno.test({
  name: "Ctrl-C typed in the terminal stops the broker it shows, removing its socket, exit 0" +
    (script === null ? " [ignored: util-linux script is not installed]" : ""),
  ignore: script === null,
  fn: async () => {
    using dir = tempDir();
    const sock = `${dir.path}/ctrlc.sock`;
    const { term, pid } = await brokerInTerminal(sock);
    await waitFor(() => catchesSignal(pid, "SIGINT"), { what: "the broker's SIGINT handler" });
    const keyboard = term.stdin.getWriter();
    await keyboard.write(new Uint8Array([0x03])); // ^C: the terminal sends SIGINT
    await waitFor(() => !alive(pid), { what: "the broker to stop on Ctrl-C", timeoutMs: 15_000 });
    await keyboard.close();
    const out = await term.output();
    assertEquals([out.code, exists(sock), brokerPids(sock)], [0, false, []]);
  },
});
