/**
 * Issue 10, points 1 and 7: peers are authenticated where trust is implied. Another uid (65534,
 * through setpriv) squatting a broker or shadow socket path is refused, socket paths in
 * directories other users can write are refused, a shadow serves one broker, and what a shadow
 * sends is checked like a published object. Real broker processes and real second users.
 */

import { assertEquals, ok, rejects as assertRejects } from "../support/assert.ts";
import {
  BrokerProcess,
  CLI,
  CLI_PERMS,
  digestOf,
  enc,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { exists } from "../support/cli.ts";
import { Tracker, WITH_RUN } from "../support/shadow.ts";
import { PYTHON, standIn } from "../support/stand_in.ts";
import { Client } from "../../src/client.ts";
import { BrokerIdentityError } from "../../src/client/peer_check.ts";
import { Cmd, encodeHeader } from "../../src/protocol/wire.ts";
import { openListener } from "../../src/sys/listener.ts";
import { acceptUnix, sendSome } from "../../src/sys/unix_socket.ts";
import { pollOne } from "../../src/sys/fd.ts";
import { EAGAIN, POLLOUT } from "../../src/sys/linux.ts";
import { FrameConn } from "../../src/shadow/frame_conn.ts";
import { Frame, SHADOW_MAGIC, toWire } from "../../src/protocol/shadow_frames.ts";
import { Memfd } from "../../src/sys/memfd.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";

const NOBODY = 65534;
const canSwitchUser = libc.symbols.geteuid() === 0 &&
  new Deno.Command("setpriv", { args: ["--version"], stdout: "null", stderr: "null" })
    .outputSync().success;
/** A system python (not a per-user shim) that uid 65534 can run, for the squatting process. */
const hasPython = (() => {
  try {
    return Deno.statSync(PYTHON).isFile;
  } catch {
    return false;
  }
})();
// Skipped where impossible: a process of another uid needs root, setpriv and a system python3.
const SKIP = !(canSwitchUser && hasPython);

/** A process of uid 65534 listening on `path` until disposed, see {@link standIn}. */
function squatter(path: string, reply?: Uint8Array): Promise<AsyncDisposable> {
  return standIn(path, { uid: NOBODY, ...(reply === undefined ? {} : { reply }) });
}

/** Run the CLI; kill it after `ms` if it has not exited (a broker that starts serves forever). */
async function runBriefly(
  args: readonly string[],
  ms = 20_000,
): Promise<{ code: number; signal: string | null; stderr: string; stdout: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return {
    code: out.code,
    signal: out.signal,
    stderr: dec.decode(out.stderr),
    stdout: dec.decode(out.stdout),
  };
}

Deno.test({
  name: "a client refuses a broker socket squatted by another uid, naming it",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    Deno.chmodSync(dir.path, 0o1777);
    const path = `${dir.path}/memfdbus.sock`;
    await using _s = await squatter(path);
    const r = await runBriefly(["list", "--socket", path]);
    assertEquals(r.code, 1, r.stderr);
    ok(
      r.stderr.includes(
        `refusing the broker on ${path}: it runs as uid ${NOBODY}, expected uid 0 ` +
          `(set --broker-uid or MEMFDBUS_BROKER_UID to trust another)`,
      ),
      r.stderr,
    );
  },
});

Deno.test({
  name: "--broker-uid and the brokerUid option trust a broker of another uid, by number or name",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    Deno.chmodSync(dir.path, 0o1777);
    const path = `${dir.path}/memfdbus.sock`;
    // An empty LIST reply: whoever listens there answers like a broker with no objects.
    await using _s = await squatter(path, encodeHeader({ cmd: Cmd.LIST }));
    const refused = await runBriefly(["list", "--socket", path]);
    assertEquals(refused.code, 1, refused.stderr);
    ok(refused.stderr.includes(`it runs as uid ${NOBODY}`), refused.stderr);
    for (const flag of [["--broker-uid", String(NOBODY)], ["--broker-uid=nobody"]]) {
      const r = await runBriefly(["list", ...flag, "--socket", path]);
      assertEquals([r.code, r.stderr], [0, ""], flag.join(" "));
    }
    const bad = await runBriefly(["list", "--socket", path, "--broker-uid", "no-such-user-x"]);
    assertEquals([bad.code, bad.stderr], [1, 'unknown broker user: "no-such-user-x"\n']);
    {
      await using c = new Client({ socket: path, keepAlive: false });
      await assertRejects(() => c.list(), BrokerIdentityError);
    }
    for (const brokerUid of [NOBODY, "nobody"]) {
      await using c = new Client({ socket: path, keepAlive: false, brokerUid });
      assertEquals(await c.list(), []);
    }
  },
});

Deno.test("a broker refuses a socket path in a directory other users can write", async () => {
  using dir = tempDir();
  Deno.chmodSync(dir.path, 0o777);
  const path = `${dir.path}/bus.sock`;
  const r = await runBriefly(["broker", "--socket", path]);
  assertEquals([r.code, r.signal], [1, null], r.stderr);
  ok(
    r.stderr.includes(
      `refusing unsafe socket path ${path}: directory ${dir.path} is writable by other users ` +
        `(mode 0777) and not sticky; use a directory that only this user (or root) can write`,
    ),
    r.stderr,
  );
});

Deno.test("a broker refuses a --metrics socket path in a directory other users can write", async () => {
  using dir = tempDir();
  using shared = tempDir();
  Deno.chmodSync(shared.path, 0o777);
  const metrics = `${shared.path}/metrics.sock`;
  const r = await runBriefly(["broker", "--socket", `${dir.path}/bus.sock`, "--metrics", metrics]);
  assertEquals([r.code, r.signal, r.stdout], [1, null, ""], r.stderr);
  ok(
    r.stderr.includes(
      `refusing unsafe socket path ${metrics}: directory ${shared.path} is writable by other ` +
        `users (mode 0777) and not sticky`,
    ),
    r.stderr,
  );
  assertEquals([exists(metrics), exists(`${dir.path}/bus.sock`)], [false, false]);
});

Deno.test({
  name:
    "a shadow path held by another uid is refused: by its owner in a sticky directory, by SO_PEERCRED otherwise",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    using shared = tempDir();
    Deno.chmodSync(shared.path, 0o1777);
    const shadow = `${shared.path}/shadow.sock`;
    await using _s = await squatter(shadow);
    const args = ["broker", "--socket", `${dir.path}/bus.sock`, "--shadow", shadow];
    const owned = await runBriefly(args);
    assertEquals([owned.code, owned.signal], [1, null], owned.stderr);
    ok(
      owned.stderr.includes(
        `refusing unsafe socket path ${shadow}: it belongs to uid ${NOBODY}, in ${shared.path}`,
      ),
      owned.stderr,
    );
    // Its file handed to root, the listener is still uid 65534: SO_PEERCRED tells.
    Deno.chownSync(shadow, 0, 0);
    const cred = await runBriefly(args);
    assertEquals([cred.code, cred.signal], [1, null], cred.stderr);
    ok(
      cred.stderr.includes(
        `refusing the shadow at ${shadow}: it runs as uid ${NOBODY}, not as this process's uid 0`,
      ),
      cred.stderr,
    );
  },
});

Deno.test("a second broker on a shadow that serves another is refused and exits non-zero", async () => {
  using dir = tempDir();
  await using t = new Tracker();
  const shadow = `${dir.path}/shadow.sock`;
  const first = await t.broker(dir.path, ["--shadow", shadow]);
  {
    await using c = new Client({ socket: first.socket });
    await c.put(enc("kept"), { name: "kept" });
  }
  const r = await runBriefly(["broker", "--socket", `${dir.path}/two.sock`, "--shadow", shadow]);
  assertEquals([r.code, r.signal], [1, null], r.stderr);
  // Refused before it ever said it listens, and its socket is gone.
  assertEquals([r.stdout, exists(`${dir.path}/two.sock`)], ["", false]);
  ok(
    r.stderr.includes(
      `the shadow at ${shadow} refused this broker: it already serves the broker with pid`,
    ),
    r.stderr,
  );
  await using c = new Client({ socket: first.socket });
  assertEquals((await c.list()).map((e) => e.name), ["kept"], "the first broker keeps its shadow");
});

Deno.test("objects a shadow sends are checked like a PUT: an unsealed memfd and a plain file are refused, never served", async () => {
  using dir = tempDir();
  const shadowPath = `${dir.path}/shadow.sock`;
  const listener = openListener(shadowPath, 0o600, 4, "shadow");
  const good = sealedMemfd(enc("good"));
  const unsealed = Memfd.create("unsealed");
  unsealed.writeAll(enc("unsealed"));
  const file = `${dir.path}/plain`;
  Deno.writeFileSync(file, enc("plain"));
  const plain = Deno.openSync(file);
  const plainFd = libc.symbols.open(new TextEncoder().encode(file + "\0"), 0, 0);
  plain.close();
  const start = BrokerProcess.start(dir.path, ["--shadow", shadowPath], { wrap: WITH_RUN });
  let fd = -1;
  await waitFor(() => (fd = acceptUnix(listener.fd)) >= 0, {
    what: "the broker to connect",
    timeoutMs: 15_000,
  });
  const conn = new FrameConn(fd);
  try {
    const hello = conn.nextBlocking(10_000);
    assertEquals(hello.type, Frame.HELLO);
    const obj = (id: number, name: string, bytes: string, fd: number) =>
      toWire({
        id,
        size: bytes.length,
        fd,
        digest: digestOf(enc(bytes)),
        name,
        owner: null,
        allowed: null,
        createdNs: 1n,
      });
    conn.queue(Frame.OBJECTS, [
      obj(1, "unsealed", "unsealed", unsealed.fd),
      obj(2, "plain", "plain", plainFd),
      obj(3, "good", "good", good.fd),
    ], [unsealed.fd, plainFd, good.fd]);
    conn.queue(Frame.STATE_END, { nextId: 4 });
    conn.flushBlocking(10_000);
    await using b = await start;
    await using c = new Client({ socket: b.socket });
    assertEquals((await c.list()).map((e) => [e.id, e.name]), [[3n, "good"]]);
    const errors = b.audit().filter((r) => r.op === "recover" && r.result === "error");
    assertEquals(errors.map((r) => r.object_id).sort(), [1, 2]);
    assertEquals(
      errors.find((r) => r.object_id === 1)?.error,
      "invalid object after recovery (fd is not fully immutable-sealed): object removed",
    );
    ok(
      String(errors.find((r) => r.object_id === 2)?.error).startsWith(
        "invalid object after recovery (",
      ),
    );
  } finally {
    conn.close();
    closeQuietly(listener.fd);
    closeQuietly(plainFd);
    good.close();
    unsealed.close();
  }
});

Deno.test("a shadow frame declaring a payload over 32 MiB drops the shadow with a clear error, unbuffered", async () => {
  using dir = tempDir();
  const shadowPath = `${dir.path}/shadow.sock`;
  const listener = openListener(shadowPath, 0o600, 4, "shadow");
  const start = BrokerProcess.start(dir.path, ["--shadow", shadowPath], { wrap: WITH_RUN });
  let fd = -1;
  await waitFor(() => (fd = acceptUnix(listener.fd)) >= 0, {
    what: "the broker to connect",
    timeoutMs: 15_000,
  });
  const conn = new FrameConn(fd);
  try {
    assertEquals(conn.nextBlocking(10_000).type, Frame.HELLO);
    // A header announcing 4 GiB - 16 of payload, then the first MiB of it.
    const head = new Uint8Array(16);
    const v = new DataView(head.buffer);
    v.setUint32(0, SHADOW_MAGIC, true);
    v.setUint16(4, Frame.OBJECTS, true);
    v.setUint32(8, 0xfffffff0, true);
    sendAllBlocking(fd, head);
    sendAllBlocking(fd, new Uint8Array(1 << 20).fill(0x20));
    const text = "shadow frame payload of 4294967280 bytes exceeds the limit of 33554432";
    // The broker either starts without its shadow or stops at once; either way it says why.
    let said = "";
    const b = await start.catch((e: Error) => {
      said = e.message;
      return null;
    });
    if (b !== null) {
      await using broker = b;
      said = await waitFor(() => (broker.stderr.includes(text) ? broker.stderr : null), {
        what: "the broker to report the oversized shadow frame",
      });
    }
    ok(said.includes(text), said);
  } finally {
    conn.close();
    closeQuietly(listener.fd);
  }
});

/** Send `bytes`, waiting while the socket is full; stop quietly once the peer closed. */
function sendAllBlocking(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) {
    const n = sendSome(fd, bytes.subarray(off));
    if (n === -EAGAIN) {
      pollOne(fd, POLLOUT, 10_000);
      continue;
    }
    if (n <= 0) return; // the broker dropped the link: nothing more to send
    off += n;
  }
}
