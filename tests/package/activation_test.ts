/**
 * systemd socket activation of `memfdbus broker`: the test plays systemd. It creates and binds
 * the listening socket itself and starts the broker with it as descriptor 3, LISTEN_FDS=1 and
 * LISTEN_PID set to the broker's own pid (bash dups the descriptor, then execs deno, so the pid
 * is the one bash had).
 *
 * @module
 */

import { assertEquals, ok } from "../support/assert.ts";
import { setCloexec } from "../../src/sys/fd.ts";
import { closeQuietly } from "../../src/ffi.ts";
import { parseConfig } from "../../src/core/config.ts";
import { defaultBrokerOptions } from "../../src/core/options.ts";
import { bindUnix, listenUnix, sockaddrUn, unixSocket } from "../../src/sys/unix_socket.ts";
import { BrokerProcess, cli, enc, fdTable, ROOT, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

/** A listening socket bound at `path`, as systemd would create it from memfdbus.socket. */
function listeningSocket(path: string): number {
  const addr = sockaddrUn(path);
  if (addr === null) throw new Error(`socket path too long: ${path}`);
  const fd = unixSocket(false);
  bindUnix(fd, addr);
  listenUnix(fd, 16);
  return fd;
}

/**
 * Start the broker with `fd` as its descriptor 3 (and the original number closed), LISTEN_FDS=1
 * and LISTEN_PID from `pid` (`$$`: its own pid). Our copy of `fd` is closed once it runs.
 */
async function startActivated(
  dir: string,
  fd: number,
  pid: string,
  args: readonly string[],
): Promise<BrokerProcess> {
  setCloexec(fd, false); // Deno.Command children inherit exactly the descriptors without it
  const script = `exec 3<&${fd} ${fd}<&-; LISTEN_PID=${pid} LISTEN_FDS=1 exec "$@"`;
  try {
    return await BrokerProcess.start(dir, args, { wrap: ["bash", "-c", script, "bash"] });
  } finally {
    closeQuietly(fd);
  }
}

function inode(path: string): number | null {
  try {
    return Deno.lstatSync(path).ino;
  } catch {
    return null;
  }
}

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("an activated broker serves the socket it inherits and leaves the file to systemd", async () => {
  using dir = tempDir();
  const path = `${dir.path}/activated.sock`;
  const other = `${dir.path}/other.sock`;
  const fd = listeningSocket(path);
  const ino = inode(path);
  const socketName = fdTable().get(fd);
  await using broker = await startActivated(dir.path, fd, "$$", ["--socket", other]);

  assertEquals(broker.lines[0], `memfdbus broker listening on ${path}`);
  const table = fdTable(broker.pid);
  assertEquals(table.get(3), socketName);
  assertEquals([...table.values()].filter((v) => v === socketName).length, 1);

  Deno.writeFileSync(`${dir.path}/in.txt`, enc("activated"));
  const put = await cli(["put", `${dir.path}/in.txt`, "--socket", path]);
  assertEquals([put.code, put.stdout, put.stderr], [0, "1\n", ""]);
  const get = await cli(["get", "--name", "in.txt", "-", "--socket", path]);
  assertEquals([get.code, get.stdout, get.stderr], [0, "activated", ""]);
  const audit = await broker.waitAudit(2);
  assertEquals(audit.map((r) => `${r.op} ${r.result}`), ["put ok", "get ok"]);
  assertEquals(names(dir.path), ["activated.sock", "in.txt"]);

  const status = await broker.stop("SIGTERM");
  assertEquals([status.code, broker.stderr], [0, ""]);
  assertEquals(inode(path), ino, "the socket file was removed or replaced");
  assertEquals(names(dir.path), ["activated.sock", "in.txt"]);
});

for (
  const [what, pid] of [
    ["another process's pid", "1"],
    ["an empty value", ""],
  ] as const
) {
  Deno.test(`a broker ignores LISTEN_PID holding ${what} and creates its own socket`, async () => {
    using dir = tempDir();
    const path = `${dir.path}/activated.sock`;
    const own = `${dir.path}/own.sock`;
    const fd = listeningSocket(path);
    const ino = inode(path);
    await using broker = await startActivated(dir.path, fd, pid, ["--socket", own]);

    assertEquals(broker.lines[0], `memfdbus broker listening on ${own}`);
    ok(Deno.lstatSync(own).isSocket, "the broker did not create its socket");
    Deno.writeFileSync(`${dir.path}/in.txt`, enc("own socket"));
    const put = await cli(["put", `${dir.path}/in.txt`, "--socket", own]);
    assertEquals([put.code, put.stdout, put.stderr], [0, "1\n", ""]);
    const get = await cli(["get", "1", "-", "--socket", own]);
    assertEquals([get.code, get.stdout], [0, "own socket"]);

    const status = await broker.stop("SIGTERM");
    assertEquals([status.code, broker.stderr], [0, ""]);
    assertEquals(inode(own), null, "the broker left its own socket behind");
    assertEquals(inode(path), ino);
  });
}

// ---- the operator files in contrib/ ---------------------------------------------------------

const CONTRIB = `${ROOT}/contrib`;

/** `Key=value` lines of a systemd unit (comments and sections skipped), last value wins. */
function unitKeys(path: string): Map<string, string> {
  const keys = new Map<string, string>();
  for (const line of Deno.readTextFileSync(path).split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m !== null) keys.set(m[1] ?? "", m[2] ?? "");
  }
  return keys;
}

Deno.test("the contrib units and config agree on socket, config path and descriptor budget", async () => {
  const socket = unitKeys(`${CONTRIB}/memfdbus.socket`);
  const service = unitKeys(`${CONTRIB}/memfdbus.service`);
  assertEquals(socket.get("ListenStream"), "/run/memfdbus.sock");
  assertEquals(
    service.get("ExecStart"),
    "/usr/local/bin/memfdbus broker --config /etc/memfdbus.jsonc",
  );
  assertEquals(service.get("MemoryDenyWriteExecute"), undefined, "V8 needs W+X memory");
  const { options } = await parseConfig(
    Deno.readTextFileSync(`${CONTRIB}/memfdbus.jsonc`),
    "memfdbus.jsonc",
    defaultBrokerOptions(),
  );
  assertEquals(options.socket, socket.get("ListenStream"));
  const limit = BigInt(service.get("LimitNOFILE") ?? "0");
  ok(
    options.maxObjects + BigInt(options.maxClients) + 100n <= limit,
    `maxObjects ${options.maxObjects} + maxClients ${options.maxClients} + 100 > ${limit}`,
  );
});

const socketActivate = (() => {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/systemd-socket-activate`).isFile) {
        return `${dir}/systemd-socket-activate`;
      }
    } catch {
      // Not in this directory.
    }
  }
  return null;
})();
if (socketActivate === null) {
  console.log("activation_test: systemd-socket-activate not found, its test is ignored");
}

Deno.test({
  name: "under systemd-socket-activate the broker runs with the contrib config on systemd's socket",
  ignore: socketActivate === null,
  fn: async () => {
    using dir = tempDir();
    const path = `${dir.path}/systemd.sock`;
    // systemd-socket-activate listens, then execs the broker (same pid) on the first connection.
    const starting = BrokerProcess.start(
      dir.path,
      ["--config", `${CONTRIB}/memfdbus.jsonc`, "--socket", `${dir.path}/unused.sock`],
      { wrap: [socketActivate ?? "", "-l", path] },
    );
    await waitFor(() => inode(path) !== null, {
      what: "systemd-socket-activate to listen",
      timeoutMs: 15_000,
    });
    Deno.writeFileSync(`${dir.path}/in.txt`, enc("from systemd"));
    const put = await cli(["put", `${dir.path}/in.txt`, "--socket", path]);
    await using broker = await starting;
    assertEquals([put.code, put.stdout, put.stderr], [0, "1\n", ""]);
    assertEquals(broker.lines[0], `memfdbus broker listening on ${path}`);
    const get = await cli(["get", "1", "-", "--socket", path]);
    assertEquals([get.code, get.stdout], [0, "from systemd"]);
    const audit = await broker.waitAudit(2);
    assertEquals(audit.map((r) => `${r.op} ${r.result} ${r.peer_uid === Deno.uid()}`), [
      "put ok true",
      "get ok true",
    ]);
    const status = await broker.stop("SIGTERM");
    assertEquals(status.code, 0);
    ok(inode(path) !== null, "the broker removed systemd's socket");
    assertEquals(inode(`${dir.path}/unused.sock`), null);
  },
});
