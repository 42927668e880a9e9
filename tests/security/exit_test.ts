/**
 * Issue 10, point 8: a broker that stops on an internal error exits non-zero with the reason on
 * stderr, so `Restart=on-failure` brings it back. The fault is real: a process runs the CLI's
 * `broker` command and, once it listens, puts /dev/null over the broker's epoll descriptor, so
 * the next epoll_wait fails inside the event loop.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { ROOT, tempDir } from "../support/harness.ts";
import { letTimePass } from "../support/wait.ts";
import { Client } from "../../src/client.ts";

const SCRIPT = `
import { main } from "${ROOT}/src/cli/main.ts";
import { libc } from "${ROOT}/src/ffi.ts";
const socket = Deno.args[0];
const epolls = () => new Set([...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name))
  .filter((fd) => { try { return Deno.readLinkSync("/proc/self/fd/" + fd) === "anon_inode:[eventpoll]"; } catch { return false; } }));
const before = epolls();
const timer = setInterval(() => {
  try { Deno.lstatSync(socket); } catch { return; }
  clearInterval(timer);
  const nul = libc.symbols.open(new TextEncoder().encode("/dev/null\\0"), 0, 0);
  for (const fd of epolls()) if (!before.has(fd)) libc.symbols.dup3(nul, fd, 0o2000000);
  console.error("broke the epoll descriptor");
}, 5);
Deno.exit(await main(["broker", "--socket", socket]));
`;

Deno.test("a broker whose event loop fails exits with status 1 and says why on stderr", async () => {
  using dir = tempDir();
  const script = `${dir.path}/break.ts`;
  Deno.writeTextFileSync(script, SCRIPT);
  const socket = `${dir.path}/bus.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", script, socket],
    stdout: "null",
    stderr: "piped",
    stdin: "null",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  // Wake the loop once the descriptor is broken: its next wait fails.
  let exited = false;
  const poke = (async () => {
    while (!exited) {
      await letTimePass(50); // the pace of the pokes, until the broker has exited
      try {
        await using c = new Client({ socket, timeoutMs: 500 });
        await c.list();
      } catch {
        // Not listening yet, or already gone.
      }
    }
  })();
  const out = await child.output();
  exited = true;
  clearTimeout(timer);
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals([out.code, out.signal], [1, null], stderr);
  ok(stderr.includes("broke the epoll descriptor"), stderr);
  ok(stderr.includes("memfdbus broker: internal error:"), stderr);
  await poke;
});
