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
const link = (fd) => { try { return Deno.readLinkSync("/proc/self/fd/" + fd); } catch { return ""; } };
const fds = () => [...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name));
// The broker's poller: the epoll that watches the listening socket bound to the path. The
// socket is bound before the poller exists, and a Worker's runtime may add epolls of its own:
// wait for exactly this one.
const brokerEpoll = () => {
  const inodes = Deno.readTextFileSync("/proc/net/unix").split("\\n")
    .map((l) => l.trim().split(/\\s+/)).filter((c) => c[7] === socket).map((c) => c[6]);
  const listeners = fds().filter((fd) => inodes.some((i) => link(fd) === "socket:[" + i + "]"));
  return fds().find((fd) => {
    if (link(fd) !== "anon_inode:[eventpoll]") return false;
    let info = "";
    try { info = Deno.readTextFileSync("/proc/self/fdinfo/" + fd); } catch { return false; }
    return [...info.matchAll(/^tfd:\\s+(\\d+)/gm)].some((m) => listeners.includes(Number(m[1])));
  });
};
const timer = setInterval(() => {
  const fd = brokerEpoll();
  if (fd === undefined) return;
  clearInterval(timer);
  const nul = libc.symbols.open(new TextEncoder().encode("/dev/null\\0"), 0, 0);
  libc.symbols.dup3(nul, fd, 0o2000000);
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
