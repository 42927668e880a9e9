import { assertEquals, ok, rejects, throws } from "../support/assert.ts";
import { Broker, type BrokerStartOptions } from "../../src/broker.ts";
import { BusObject, Client, type ClientOptions, parseList } from "../../src/client.ts";
import { SocketPathError } from "../../src/client/connection.ts";
import { digestBytes } from "../../src/hash/digest.ts";
import { BrokerError, ErrnoError, ProtocolError, TimeoutError } from "../../src/errors.ts";
import { ConnectError } from "../../src/client/connection.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import { FileDescriptor, fstat, statusFlags } from "../../src/sys/fd.ts";
import { O_NONBLOCK } from "../../src/sys/linux.ts";
import { getSeals, Memfd, Seal } from "../../src/sys/memfd.ts";
import { waitReady } from "../../src/sys/reactor.ts";
import {
  acceptUnix,
  bindUnix,
  connectUnix,
  listenUnix,
  recvMsg,
  sendMsg,
  sendSome,
  sockaddrUn,
  unixSocket,
} from "../../src/sys/unix_socket.ts";
import { decodeHeader, encodeHeader, Flag, type Header, withExt } from "../../src/protocol/wire.ts";
import { dec, enc } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import {
  fdGuard,
  fdTarget,
  hasCloexec,
  isOpen,
  offsetOf,
  ownFds,
  ownLabel,
  ownTempDir as tempDir,
  pipe,
  writeFd,
} from "../support/fds.ts";

// ---- harness --------------------------------------------------------------------------------

interface Env {
  readonly broker: Broker;
  readonly socket: string;
  readonly lines: string[];
  readonly dir: string;
  /** A client of this broker (closed by the test, e.g. with `await using`). */
  client(options?: ClientOptions): Client;
  /** Parsed audit records so far. */
  audit(): Record<string, unknown>[];
  /** Wait until the broker has no connection open, then count this module's own descriptors. */
  settledFds(): Promise<number>;
}

/**
 * The client-side reactor creates its epoll descriptors on first use and keeps them; use it once
 * so descriptor baselines do not count them.
 */
async function warmReactor(): Promise<void> {
  using dir = tempDir();
  const addr = sockaddrUn(`${dir.path}/w.sock`);
  if (addr === null) throw new Error("path too long");
  const l = unixSocket();
  const c = unixSocket();
  try {
    bindUnix(l, addr);
    listenUnix(l, 1);
    assertEquals(connectUnix(c, addr), 0);
    await waitReady(c, 0x004, 1000, "warm-up");
  } finally {
    closeQuietly(c);
    closeQuietly(l);
  }
}

/** A test against an in-process broker that is closed at the end; checks for descriptor leaks. */
function brokerTest(
  name: string,
  options: Partial<BrokerStartOptions>,
  fn: (env: Env) => Promise<void>,
): void {
  Deno.test(name, async () => {
    await warmReactor();
    using dir = tempDir();
    const socket = `${dir.path}/b.sock`;
    const lines: string[] = [];
    const guard = fdGuard();
    const broker = await Broker.start({ socket, audit: (l) => lines.push(l), ...options });
    const env: Env = {
      broker,
      socket,
      lines,
      dir: dir.path,
      client: (o: ClientOptions = {}): Client => new Client({ socket, jobId: null, ...o }),
      audit: (): Record<string, unknown>[] =>
        lines.slice(1).map((l) => JSON.parse(l) as Record<string, unknown>),
      settledFds: async (): Promise<number> => {
        await waitFor(() => broker.connectionCount === 0, { what: "broker connections to close" });
        return ownFds().length;
      },
    };
    try {
      await fn(env);
    } finally {
      await broker.close();
    }
    guard.assertClean("after the broker closed");
  });
}

const HELLO_DIGEST = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A raw descriptor of a memfd holding `text` with `seals`; the caller closes it. */
function sealedFd(text: string, seals: number = Seal.IMMUTABLE): number {
  const m = Memfd.create(ownLabel("fake"));
  m.writeAll(enc(text));
  m.seek(0);
  if (seals !== 0) m.addSeals(seals);
  return m.release();
}

function streamOf(...chunks: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(c): void {
      for (const s of chunks) c.enqueue(enc(s));
      c.close();
    },
  });
}

async function rejectsBroker(p: Promise<unknown>, status: number, text: string): Promise<void> {
  await rejects(p, (e: unknown) => {
    ok(e instanceof BrokerError, `expected BrokerError, got ${String(e)}`);
    assertEquals([e.status, e.text, e.message, e.name], [
      status,
      text,
      `broker error: ${text}`,
      "BrokerError",
    ]);
    return true;
  });
}

// ---- put ------------------------------------------------------------------------------------

brokerTest("put from a path names the object after the file's base name", {}, async (env) => {
  Deno.writeFileSync(`${env.dir}/model.bin`, enc("hello"));
  await using client = env.client();
  const r = await client.put(`${env.dir}/model.bin`);
  assertEquals(r, { id: 1n, size: 5, digest: HELLO_DIGEST, name: "model.bin" });
  const named = await client.put(`${env.dir}/model.bin`, { name: "other" });
  assertEquals(named, { id: 2n, size: 5, digest: HELLO_DIGEST, name: "other" });
  assertEquals(env.broker.objectCount, 2);
  assertEquals(env.lines[0], `memfdbus broker listening on ${env.socket}`);
  assertEquals(env.audit().map((a) => [a.op, a.result, a.object_id, a.name]), [
    ["put", "ok", 1, "model.bin"],
    ["put", "ok", 2, "other"],
  ]);
});

brokerTest("put from a missing path fails with open input: PATH: ENOENT", {}, async (env) => {
  await using client = env.client();
  await rejects(client.put(`${env.dir}/missing.bin`), (e: unknown) => {
    ok(e instanceof ErrnoError);
    assertEquals([e.code, e.message], [
      "ENOENT",
      `open input: ${env.dir}/missing.bin: No such file or directory`,
    ]);
    return true;
  });
  assertEquals(env.broker.objectCount, 0);
});

brokerTest(
  "put from bytes and from a ReadableStream publishes their exact contents",
  {},
  async (env) => {
    await using client = env.client();
    const a = await client.put(enc("hello"), { name: "bytes" });
    const b = await client.put(streamOf("he", "", "llo"), { name: "stream" });
    assertEquals(a, { id: 1n, size: 5, digest: HELLO_DIGEST, name: "bytes" });
    assertEquals(b, { id: 2n, size: 5, digest: HELLO_DIGEST, name: "stream" });
    using obj = await client.get(2n);
    assertEquals(obj.text(), "hello");
    const empty = await client.put(new Uint8Array(0), { name: "empty" });
    assertEquals(empty.size, 0);
    assertEquals(
      empty.digest,
      "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    using e = await client.get(empty.id);
    assertEquals([e.size, e.view.length, e.text()], [0, 0, ""]);
  },
);

brokerTest(
  "put from {fd} reads a regular file from offset 0 and leaves the caller's offset alone",
  {},
  async (env) => {
    Deno.writeFileSync(`${env.dir}/f`, enc("0123456789"));
    await using client = env.client();
    using f = FileDescriptor.open(`${env.dir}/f`);
    libc.symbols.lseek(f.fd, 3n, 0);
    const r = await client.put({ fd: f.fd }, { name: "file" });
    assertEquals([r.size, r.digest], [10, digestBytes(enc("0123456789"))]);
    assertEquals(offsetOf(f.fd), 3);
    assertEquals(isOpen(f.fd), true);
    const cur = await client.put({ fd: f.fd, fromCurrentOffset: true }, { name: "rest" });
    assertEquals(cur.size, 7);
    using obj = await client.get({ name: "rest" });
    assertEquals(obj.text(), "3456789");
  },
);

brokerTest("put from {fd} of a pipe reads it to its end", {}, async (env) => {
  await using client = env.client();
  using p = pipe();
  const data = new Uint8Array(40000).map((_, i) => i & 0xff);
  writeFd(p.writeFd, data);
  p.closeWrite();
  const r = await client.put({ fd: p.readFd }, { name: "piped" });
  assertEquals([r.size, r.digest], [40000, digestBytes(data)]);
  using obj = await client.get(r.id);
  assertEquals(obj.view, data);
});

brokerTest(
  "put of an already sealed Memfd publishes the same file without a copy",
  {},
  async (env) => {
    await using client = env.client();
    using m = Memfd.create("sealed");
    m.writeAll(enc("hello"));
    m.seal();
    const r = await client.put(m, { name: "memfd" });
    assertEquals(r, { id: 1n, size: 5, digest: HELLO_DIGEST, name: "memfd" });
    assertEquals(m.closed, false);
    using obj = await client.get(1);
    assertEquals(fstat(obj.fd).ino, fstat(m.fd).ino);
    assertEquals(fstat(obj.fd).dev, fstat(m.fd).dev);
  },
);

brokerTest("put of an unsealed Memfd copies it into a new sealed memfd", {}, async (env) => {
  await using client = env.client();
  using m = Memfd.create("open");
  m.writeAll(enc("hello"));
  const r = await client.put(m, { name: "copy" });
  assertEquals([r.size, r.digest], [5, HELLO_DIGEST]);
  using obj = await client.get(r.id);
  ok(fstat(obj.fd).ino !== fstat(m.fd).ino);
  assertEquals(getSeals(obj.fd), 0xf);
  // The caller's memfd stays writable and unsealed.
  assertEquals(m.seals(), 0);
  m.writeAll(enc("!"));
  assertEquals(obj.text(), "hello");
});

brokerTest("put with contentAddressed publishes under the digest string", {}, async (env) => {
  await using client = env.client();
  const a = await client.put(enc("hello"), { contentAddressed: true });
  const b = await client.put(enc("hello"), { contentAddressed: true });
  assertEquals(a, { id: 1n, size: 5, digest: HELLO_DIGEST, name: HELLO_DIGEST });
  assertEquals(b.id, 2n);
  assertEquals(b.name, HELLO_DIGEST);
  using obj = await client.get({ name: HELLO_DIGEST });
  assertEquals([obj.id, obj.name], [2n, HELLO_DIGEST]);
});

brokerTest("put with a job and an allowed job sets owner and allowed", {}, async (env) => {
  await using owner = env.client({ jobId: "own" });
  const r = await owner.put(enc("hello"), { name: "shared", allowJob: "friend" });
  assertEquals(r.id, 1n);
  await using admin = env.client();
  assertEquals(await admin.list(), [{
    id: 1n,
    owner: "own",
    allowed: "friend",
    size: 5,
    digest: HELLO_DIGEST,
    name: "shared",
  }]);
  assertEquals((await admin.list({ jobId: "friend" })).length, 1);
  assertEquals((await admin.list({ jobId: "stranger" })).length, 0);
  assertEquals(env.audit()[0]?.job_id, "own");
});

// ---- get ------------------------------------------------------------------------------------

brokerTest(
  "get by number, bigint, {id} and {name} returns the object's fields and contents",
  {},
  async (env) => {
    await using client = env.client();
    await client.put(enc("old"), { name: "n" });
    await client.put(enc("hello"), { name: "n" });
    for (const sel of [2, 2n, { id: 2 }, { id: 2n }, { name: "n" }, { name: enc("n") }]) {
      using obj = await client.get(sel);
      ok(obj instanceof BusObject);
      assertEquals([obj.id, obj.size, obj.digest, obj.name], [2n, 5, HELLO_DIGEST, "n"]);
      assertEquals(obj.nameBytes, enc("n"));
      assertEquals(obj.view, enc("hello"));
      assertEquals(obj.text(), "hello");
      assertEquals(await obj.verify(), true);
      assertEquals(obj.closed, false);
    }
    using old = await client.get(1);
    assertEquals(old.text(), "old");
  },
);

brokerTest(
  "get hands out a close-on-exec, sealed descriptor of its own that refuses writes",
  {},
  async (env) => {
    await using client = env.client();
    await client.put(enc("hello"), { name: "n" });
    using a = await client.get(1);
    using b = await client.get(1, { verify: true });
    ok(a.fd !== b.fd);
    assertEquals(fstat(a.fd).ino, fstat(b.fd).ino);
    assertEquals(statusFlags(a.fd) & 3, 2); // O_RDWR, as the C broker hands out
    assertEquals(statusFlags(a.fd) & O_NONBLOCK, 0);
    assertEquals(hasCloexec(a.fd), true);
    assertEquals(getSeals(a.fd), 0xf);
    assertEquals(fstat(a.fd).size, 5n);
    assertEquals(libc.symbols.write(a.fd, enc("x"), 1n), -1n);
  },
);

brokerTest("BusObject bytes() copies and map() gives an independent mapping", {}, async (env) => {
  await using client = env.client();
  await client.put(enc("hello"), { name: "n" });
  const obj = await client.get(1);
  const copy = obj.bytes();
  const map = obj.map();
  obj.close();
  assertEquals(dec(copy), "hello");
  assertEquals(dec(map.bytes), "hello");
  map.close();
  assertEquals(map.closed, true);
});

brokerTest(
  "BusObject.close detaches the view and closes the descriptor, and is safe twice",
  {},
  async (env) => {
    await using client = env.client();
    await client.put(enc("hello"), { name: "n" });
    const obj = await client.get(1);
    const fd = obj.fd;
    const target = fdTarget(fd);
    const view = obj.view;
    assertEquals(view.length, 5);
    obj.close();
    assertEquals(view.length, 0);
    ok(fdTarget(fd) !== target, "the object's descriptor is closed");
    assertEquals(obj.closed, true);
    throws(() => obj.fd, { name: "TypeError", message: "Object is closed" });
    throws(() => obj.view, { name: "TypeError", message: "Object is closed" });
    obj.close();
  },
);

brokerTest(
  "BusObject.releaseFd hands over the descriptor and close leaves it open",
  {},
  async (env) => {
    await using client = env.client();
    await client.put(enc("hello"), { name: "n" });
    const obj = await client.get(1);
    const fd = obj.releaseFd();
    throws(() => obj.fd, { name: "TypeError", message: "Object is closed" });
    obj.close();
    assertEquals(isOpen(fd), true);
    const buf = new Uint8Array(5);
    assertEquals(libc.symbols.pread(fd, buf, 5n, 0n), 5n);
    assertEquals(dec(buf), "hello");
    closeQuietly(fd);
  },
);

brokerTest("an object fetched before a drop stays readable after it", {}, async (env) => {
  await using client = env.client();
  await client.put(enc("hello"), { name: "n" });
  using obj = await client.get(1);
  assertEquals(await client.drop(1), { id: 1n, size: 5 });
  assertEquals(obj.text(), "hello");
  assertEquals(await obj.verify(), true);
});

// ---- list and drop --------------------------------------------------------------------------

brokerTest("list, listText and listRaw return the same listing", {}, async (env) => {
  await using client = env.client();
  assertEquals(await client.list(), []);
  assertEquals(await client.listText(), "");
  assertEquals((await client.listRaw()).length, 0);
  await client.put(enc("hello"), { name: "a" });
  await client.put(enc("hello"), { name: "b c", jobId: "j" });
  const text = `1\towner=-\tallowed=-\t5\t${HELLO_DIGEST}\ta\n` +
    `2\towner=j\tallowed=-\t5\t${HELLO_DIGEST}\tb c\n`;
  assertEquals(await client.listText(), text);
  assertEquals(await client.listRaw(), enc(text));
  assertEquals(await client.list(), [
    { id: 1n, owner: null, allowed: null, size: 5, digest: HELLO_DIGEST, name: "a" },
    { id: 2n, owner: "j", allowed: null, size: 5, digest: HELLO_DIGEST, name: "b c" },
  ]);
  assertEquals(parseList(text), await client.list());
  assertEquals((await client.list({ jobId: "other" })).map((e) => e.id), [1n]);
});

brokerTest("drop by id and by name removes objects and reports id and size", {}, async (env) => {
  await using client = env.client();
  await client.put(enc("hello"), { name: "n" });
  await client.put(enc("hi"), { name: "n" });
  assertEquals(await client.drop({ name: "n" }), { id: 2n, size: 2 });
  using left = await client.get({ name: "n" });
  assertEquals(left.id, 1n);
  assertEquals(await client.drop(1n), { id: 1n, size: 5 });
  assertEquals(env.broker.objectCount, 0);
  await rejectsBroker(client.drop(1n), 2, "object not found");
});

brokerTest(
  "broker refusals become BrokerError with status 2 or 4 and the broker's text",
  {},
  async (env) => {
    await using owner = env.client({ jobId: "alpha" });
    await owner.put(enc("hello"), { name: "mine" });
    await using other = env.client({ jobId: "beta" });
    await rejectsBroker(other.get(1), 4, "access denied");
    await rejectsBroker(other.drop({ name: "mine" }), 4, "access denied");
    await rejectsBroker(other.get(99), 2, "object not found");
    await rejectsBroker(other.get({ name: "nope" }), 2, "object not found");
    assertEquals(env.broker.objectCount, 1);
    const records = env.audit().slice(1).map((a) => [a.op, a.result, a.job_id]);
    assertEquals(records, [
      ["get", "forbidden", "beta"],
      ["drop", "forbidden", "beta"],
      ["get", "not_found", "beta"],
      ["get", "not_found", "beta"],
    ]);
  },
);

// ---- job ids --------------------------------------------------------------------------------

/**
 * Run `fn` with MEMFDBUS_JOB_ID set to `value` (or unset), restoring it right after. The
 * environment is shared by every test module running in this process, so `fn` is synchronous
 * and the window stays as short as possible.
 */
function withJobEnv<T>(value: string | undefined, fn: () => T): T {
  const saved = Deno.env.get("MEMFDBUS_JOB_ID");
  if (value === undefined) Deno.env.delete("MEMFDBUS_JOB_ID");
  else Deno.env.set("MEMFDBUS_JOB_ID", value);
  try {
    return fn();
  } finally {
    if (saved === undefined) Deno.env.delete("MEMFDBUS_JOB_ID");
    else Deno.env.set("MEMFDBUS_JOB_ID", saved);
  }
}

brokerTest(
  "the job id comes from the option, else MEMFDBUS_JOB_ID, and null means unscoped",
  {},
  async (env) => {
    // The client reads the environment when it is constructed.
    const [fromEnv, explicit, unscoped] = withJobEnv("envjob", () => [
      new Client({ socket: env.socket }),
      new Client({ socket: env.socket, jobId: "opt" }),
      new Client({ socket: env.socket, jobId: null }),
    ]);
    try {
      assertEquals([fromEnv.jobId, explicit.jobId, unscoped.jobId], ["envjob", "opt", null]);
      await fromEnv.put(enc("a"), { name: "e" });
      await explicit.put(enc("b"), { name: "o" });
      await unscoped.put(enc("c"), { name: "u" });
      // A per-call job overrides the client's, and a per-call null makes the call unscoped.
      await fromEnv.put(enc("d"), { name: "u2", jobId: null });
      await fromEnv.put(enc("e"), { name: "c2", jobId: "call" });
    } finally {
      fromEnv.close();
      explicit.close();
      unscoped.close();
    }
    assertEquals(env.audit().map((a) => [a.name, a.job_id]), [
      ["e", "envjob"],
      ["o", "opt"],
      ["u", null],
      ["u2", null],
      ["c2", "call"],
    ]);
    assertEquals(withJobEnv("", () => new Client({ socket: env.socket }).jobId), null);
    assertEquals(withJobEnv(undefined, () => new Client({ socket: env.socket }).jobId), null);
    await env.settledFds();
  },
);

// ---- argument errors ------------------------------------------------------------------------

Deno.test("Client argument errors are TypeError or RangeError, raised before connecting", async () => {
  await warmReactor();
  const guard = fdGuard();
  using dir = tempDir();
  // No broker listens here: any attempt to connect would fail with ENOENT instead.
  await using c = new Client({ socket: `${dir.path}/none.sock`, jobId: null });
  const cases: [() => Promise<unknown>, string, string][] = [
    [() => c.put(enc("x"), { name: "" }), "TypeError", "object name must not be empty"],
    [
      () => c.put(enc("x"), { name: "a\0b" }),
      "TypeError",
      "object name must not contain NUL bytes",
    ],
    [() => c.put(enc("x"), { name: "n".repeat(65537) }), "RangeError", "object name too long"],
    [
      () => c.put(enc("x"), { name: new Uint8Array(0) }),
      "TypeError",
      "object name must not be empty",
    ],
    [() => c.put(enc("x")), "TypeError", "put needs a name (or contentAddressed)"],
    [() => c.put(enc("x"), { name: "n", jobId: "j".repeat(257) }), "RangeError", "job id too long"],
    [() => c.put(enc("x"), { name: "n", jobId: "" }), "TypeError", "job id must not be empty"],
    [
      () => c.put(enc("x"), { name: "n", allowJob: "b" }),
      "TypeError",
      "allowJob requires a job id",
    ],
    [
      () => c.put(enc("x"), { name: "n", jobId: "a", allowJob: "" }),
      "TypeError",
      "allowed job id must not be empty",
    ],
    [
      () => c.put(enc("x"), { name: "n", jobId: "a", allowJob: "b".repeat(257) }),
      "RangeError",
      "allowed job id too long",
    ],
    [
      () => c.put(enc("x"), { name: "n", contentAddressed: true }),
      "TypeError",
      "contentAddressed cannot be combined with name",
    ],
    [() => c.get(0), "RangeError", 'Invalid object id "0"'],
    [() => c.get(0n), "RangeError", 'Invalid object id "0"'],
    [() => c.get(-1), "RangeError", 'Invalid object id "-1"'],
    [() => c.get(1.5), "RangeError", 'Invalid object id "1.5"'],
    [() => c.get(2n ** 64n), "RangeError", 'Invalid object id "18446744073709551616"'],
    [() => c.get({ id: 0 }), "RangeError", 'Invalid object id "0"'],
    [() => c.get({ name: "" }), "TypeError", "object name must not be empty"],
    [() => c.drop({ name: "a\0" }), "TypeError", "object name must not contain NUL bytes"],
    [() => c.list({ jobId: "j".repeat(257) }), "RangeError", "job id too long"],
  ];
  for (const [fn, name, message] of cases) {
    await rejects(fn(), { name, message });
  }
  // 65536 bytes is the largest legal name, so that one gets as far as connecting.
  await rejects(c.put(enc("x"), { name: "n".repeat(65536) }), { name: "ConnectError" });
  await rejects(c.get(2n ** 64n - 1n), { name: "ConnectError" });
  throws(() => new Client({ jobId: "j".repeat(257) }), {
    name: "RangeError",
    message: "job id too long",
  });
  throws(() => new Client({ jobId: "" }), {
    name: "TypeError",
    message: "job id must not be empty",
  });
  guard.assertClean();
});

// ---- connection failures and timeouts -------------------------------------------------------

Deno.test("a missing socket rejects with a ConnectError (an ErrnoError ENOENT) naming the socket", async () => {
  await warmReactor();
  const guard = fdGuard();
  using dir = tempDir();
  await using c = new Client({ socket: `${dir.path}/none.sock`, jobId: null });
  for (const op of [(): Promise<unknown> => c.list(), (): Promise<unknown> => c.get(1)]) {
    await rejects(op(), (e: unknown) => {
      ok(e instanceof ErrnoError);
      ok(e instanceof ConnectError);
      assertEquals([e.code, e.errno, e.syscall, e.message, e.socket], [
        "ENOENT",
        2,
        "connect",
        `connect: No such file or directory (socket ${dir.path}/none.sock)`,
        `${dir.path}/none.sock`,
      ]);
      return true;
    });
  }
  guard.assertClean();
});

Deno.test("a socket path of 108 bytes rejects with SocketPathError", async () => {
  const path = "/" + "s".repeat(107);
  await using c = new Client({ socket: path, jobId: null });
  await rejects(c.list(), (e: unknown) => {
    ok(e instanceof SocketPathError);
    assertEquals(e.message, `socket path too long: ${path}`);
    return true;
  });
});

/** A listening socket that never accepts or answers; `accept` takes connections and holds them. */
class HungBroker implements Disposable {
  readonly dir = tempDir();
  readonly path = `${this.dir.path}/hung.sock`;
  readonly fd: number;
  readonly held: number[] = [];

  constructor() {
    const addr = sockaddrUn(this.path);
    if (addr === null) throw new Error("path too long");
    this.fd = unixSocket();
    bindUnix(this.fd, addr);
    listenUnix(this.fd, 16);
  }

  /** Accept everything pending and keep it open without reading. */
  accept(): number {
    let n = 0;
    for (;;) {
      const c = acceptUnix(this.fd);
      if (c < 0) return n;
      this.held.push(c);
      n++;
    }
  }

  [Symbol.dispose](): void {
    for (const c of this.held) closeQuietly(c);
    closeQuietly(this.fd);
    this.dir[Symbol.dispose]();
  }
}

async function assertTimesOut(
  p: Promise<unknown>,
  timeoutMs: number,
  message: string,
): Promise<number> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  const start = performance.now();
  try {
    await rejects(p, (e: unknown) => {
      ok(e instanceof TimeoutError, `expected TimeoutError, got ${String(e)}`);
      assertEquals([e.name, e.message, e.timeoutMs], ["TimeoutError", message, timeoutMs]);
      return true;
    });
  } finally {
    clearInterval(timer);
  }
  const elapsed = performance.now() - start;
  ok(elapsed >= timeoutMs - 20, `rejected after ${elapsed} ms, before the timeout`);
  // Generous: a loaded machine delays timers; a client that ignored its deadline would not.
  ok(elapsed < timeoutMs + 5000, `rejected after ${elapsed} ms, long after the timeout`);
  // The caller's event loop kept running during the wait: a client that blocked the thread for
  // the whole wait lets no interval tick before its rejection is handled.
  ok(ticks >= 1, `no interval tick during a ${elapsed} ms wait`);
  return elapsed;
}

Deno.test("a broker that never accepts makes list() reject with TimeoutError in time", async () => {
  await warmReactor();
  const guard = fdGuard();
  {
    using hung = new HungBroker();
    await using c = new Client({ socket: hung.path, jobId: null, timeoutMs: 300 });
    await assertTimesOut(c.list(), 300, "receive response: timed out after 300 ms");
  }
  await guard.waitClean();
});

Deno.test("a broker that accepts but never replies makes get() reject with TimeoutError", async () => {
  await warmReactor();
  const guard = fdGuard();
  {
    using hung = new HungBroker();
    await using c = new Client({ socket: hung.path, jobId: null, timeoutMs: 300 });
    const p = c.get({ name: "x" });
    await waitFor(() => hung.accept() > 0 || hung.held.length > 0, { what: "a connection" });
    await assertTimesOut(p, 300, "receive response: timed out after 300 ms");
    assertEquals(hung.held.length, 1);
  }
  await guard.waitClean();
});

// ---- keep-alive -----------------------------------------------------------------------------

/** This module's open sockets (bound or connected to a path under its own directories). */
function socketInodes(): Set<string> {
  return new Set(ownFds().filter((t) => t.includes("socket:")));
}

brokerTest("with keepAlive several requests reuse one connection", {}, async (env) => {
  await using client = env.client({ keepAlive: true });
  await client.put(enc("hello"), { name: "n" });
  await waitFor(() => env.broker.connectionCount === 1, { what: "one idle connection" });
  const sockets = socketInodes();
  for (let i = 0; i < 3; i++) {
    await client.list();
    using obj = await client.get(1);
    assertEquals(obj.text(), "hello");
    assertEquals(env.broker.connectionCount, 1);
  }
  assertEquals(socketInodes(), sockets);
  client.close();
  await env.settledFds();
});

brokerTest("with keepAlive false each request uses a new connection", {}, async (env) => {
  await using client = env.client({ keepAlive: false });
  await client.put(enc("hello"), { name: "n" });
  for (let i = 0; i < 3; i++) {
    await env.settledFds();
    const before = socketInodes();
    await client.list();
    await env.settledFds();
    assertEquals(socketInodes(), before);
    assertEquals(env.broker.connectionCount, 0);
  }
});

brokerTest(
  "a kept-alive connection the broker closed while idle is replaced transparently",
  { idleTimeoutMs: 100 },
  async (env) => {
    await using client = env.client({ keepAlive: true });
    await client.put(enc("hello"), { name: "n" });
    assertEquals(env.broker.connectionCount, 1);
    await waitFor(() => env.broker.connectionCount === 0, {
      what: "the idle connection to expire",
    });
    assertEquals((await client.list()).length, 1);
    using obj = await client.get(1);
    assertEquals(obj.text(), "hello");
  },
);

brokerTest("a closed Client refuses new requests", {}, async (env) => {
  const client = env.client();
  await client.list();
  client.close();
  client.close();
  await rejects(client.list(), { name: "TypeError", message: "Client is closed" });
  await env.settledFds();
});

// ---- descriptor hygiene ---------------------------------------------------------------------

brokerTest(
  "every client operation returns the process to its descriptor baseline",
  {},
  async (env) => {
    await using client = env.client({ keepAlive: false });
    // Object names carry this module's tag, so the memfds behind them are attributable even
    // while other test modules run in the same process.
    const file = `${env.dir}/${ownLabel("in")}`;
    Deno.writeFileSync(file, enc("hello"));
    const base = await env.settledFds();
    // Each stored object holds exactly one descriptor in the (in-process) broker.
    await client.put(file);
    assertEquals(await env.settledFds(), base + 1);
    await client.put(enc("bytes"), { name: ownLabel("b") });
    assertEquals(await env.settledFds(), base + 2);
    await client.put(streamOf("s"), { name: ownLabel("s") });
    assertEquals(await env.settledFds(), base + 3);
    const obj = await client.get(1);
    assertEquals(obj.view.length, 5);
    assertEquals(await env.settledFds(), base + 4);
    obj.close();
    assertEquals(ownFds().length, base + 3);
    await client.list();
    await client.listRaw();
    assertEquals(await env.settledFds(), base + 3);
    await rejects(client.get(99), { name: "BrokerError" });
    await rejects(client.drop(99), { name: "BrokerError" });
    assertEquals(await env.settledFds(), base + 3);
    await client.drop(1);
    await client.drop(2);
    await client.drop(3);
    assertEquals(await env.settledFds(), base);
  },
);

// ---- the early-reject race (D1) -------------------------------------------------------------

brokerTest(
  "a rejected put whose send fails still reports the broker's error text (D1)",
  { maxNameBytes: 4 },
  async (env) => {
    await using client = env.client();
    const name = "n".repeat(60000);
    for (let i = 0; i < 20; i++) {
      await rejectsBroker(
        client.put(enc("payload"), { name }),
        3,
        "object name exceeds broker name limit",
      );
    }
    assertEquals(env.broker.objectCount, 0);
    const records = env.audit();
    assertEquals(records.length, 20);
    assertEquals(
      records.every((r) => r.error === "object name exceeds broker name limit"),
      true,
    );
    await env.settledFds();
  },
);

Deno.test(
  "a put whose send fails with EPIPE reports the error reply already received (D1)",
  async () => {
    // The client sends a whole request in one sendmsg, so against a real broker its send can
    // only fail on a reused connection. A fake broker makes that happen deterministically: it
    // agrees to keep-alive, then answers with an error and closes before the next request.
    await warmReactor();
    const guard = fdGuard();
    {
      using hung = new HungBroker();
      await using client = new Client({
        socket: hung.path,
        jobId: null,
        timeoutMs: 1500,
        keepAlive: true,
      });
      const first = client.list();
      await waitFor(() => hung.accept() > 0 || hung.held.length > 0, { what: "a connection" });
      const conn = hung.held[0] ?? -1;
      const req = new Uint8Array(48);
      await waitFor(() => typeof recvMsg(conn, req) !== "number", { what: "the list request" });
      assertEquals(decodeHeader(req).cmd, 3);
      assertEquals(decodeHeader(req).reserved, withExt(Flag.KEEP_ALIVE));
      sendSome(conn, encodeHeader({ cmd: 3, reserved: withExt(Flag.KEEP_ALIVE) }));
      assertEquals(await first, []);
      const text = enc("object name exceeds broker name limit");
      sendSome(conn, encodeHeader({ cmd: 1, status: 3, textLen: text.length }));
      sendSome(conn, text);
      closeQuietly(conn);
      hung.held.length = 0;
      await rejectsBroker(
        client.put(enc("payload"), { name: "n".repeat(100) }),
        3,
        "object name exceeds broker name limit",
      );
      // The reply was taken from the old connection; no new one was opened.
      assertEquals(hung.accept(), 0);
    }
    await guard.waitClean();
  },
);

Deno.test("putSealed refuses a malformed digest before connecting", async () => {
  await using client = new Client({ socket: "/nonexistent/memfdbus.sock", jobId: null });
  await rejects(
    client.putSealed(0, { size: 0, digest: "sha256:XYZ", name: enc("n") }),
    { name: "TypeError", message: 'Invalid digest "sha256:XYZ"' },
  );
});

/**
 * Answer one GET from a fake broker with `header` (plus `fds` on it) and `body`, and return how
 * the client's get() failed.
 */
async function fakeGetReply(
  header: Partial<Header>,
  body: Uint8Array,
  fds: number[] = [],
): Promise<unknown> {
  using hung = new HungBroker();
  await using client = new Client({ socket: hung.path, jobId: null, timeoutMs: 2000 });
  const p = client.get(1).then(
    (o) => {
      o.close();
      return new Error("get() succeeded");
    },
    (e: unknown) => e,
  );
  await waitFor(() => hung.accept() > 0 || hung.held.length > 0, { what: "a connection" });
  const conn = hung.held[0] ?? -1;
  assertEquals(sendMsg(conn, encodeHeader({ cmd: 2, ...header }), fds), 48);
  if (body.length > 0) assertEquals(sendSome(conn, body), body.length);
  return await p;
}

Deno.test("get() rejects protocol violations with the C library's texts and leaks nothing", async () => {
  await warmReactor();
  const guard = fdGuard();
  const name = enc("n");
  const digest = enc(HELLO_DIGEST);
  const good = { objectId: 1n, size: 5n, nameLen: 1, textLen: 71 };
  const cases: [Partial<Header>, Uint8Array, () => number[], string][] = [
    [good, concatBytes(name, digest), () => [], "broker did not send an object fd"],
    [{ ...good, magic: 0x12345678 }, new Uint8Array(0), () => [], "invalid response from broker"],
    [{ ...good, version: 2 }, new Uint8Array(0), () => [], "invalid response from broker"],
    [
      { ...good, textLen: 70 },
      concatBytes(name, digest.subarray(0, 70)),
      () => [sealedFd("hello")],
      "broker sent an invalid object digest",
    ],
    [
      { ...good, nameLen: 65537 },
      new Uint8Array(0),
      () => [sealedFd("hello")],
      "broker sent an oversized object name",
    ],
    [
      good,
      concatBytes(name, enc("sha256:" + "A".repeat(64))),
      () => [sealedFd("hello")],
      "broker sent an invalid object digest",
    ],
    [
      { ...good, size: 6n },
      concatBytes(name, digest),
      () => [sealedFd("hello")],
      "broker sent an invalid object fd: size mismatch: header=6 fd=5",
    ],
    [
      good,
      concatBytes(name, digest),
      () => [sealedFd("hello", 0)],
      "broker sent an invalid object fd: fd is not fully immutable-sealed",
    ],
  ];
  for (const [header, body, makeFds, message] of cases) {
    const fds = makeFds();
    try {
      const e = await fakeGetReply(header, body, fds);
      ok(e instanceof ProtocolError, `expected ProtocolError for "${message}", got ${String(e)}`);
      assertEquals(e.message, message);
    } finally {
      for (const fd of fds) closeQuietly(fd);
    }
  }
  await guard.waitClean();
});

Deno.test("get() reports a broker error reply as BrokerError even with an fd attached", async () => {
  await warmReactor();
  const guard = fdGuard();
  const fd = sealedFd("x");
  try {
    const text = enc("object not found");
    const e = await fakeGetReply({ status: 2, textLen: text.length }, text, [fd]);
    ok(e instanceof BrokerError);
    assertEquals([e.status, e.message], [2, "broker error: object not found"]);
    const empty = await fakeGetReply({ status: 1 }, new Uint8Array(0));
    ok(empty instanceof BrokerError);
    assertEquals([empty.status, empty.text, empty.message], [
      1,
      "",
      "broker error: request failed",
    ]);
  } finally {
    closeQuietly(fd);
  }
  await guard.waitClean();
});

brokerTest(
  "a large put from bytes or a file publishes its exact bytes, no pages past its end, copied before put returns to the caller",
  {},
  async (env) => {
    await using client = env.client();
    const size = (9 << 20) + 123;
    const bytes = new Uint8Array(size).map((_, i) => (i * 31) & 0xff);
    const want = digestBytes(bytes);
    const pending = client.put(bytes, { name: "big" });
    // The copy is done by the time put() hands back its promise: changing the bytes now
    // changes nothing published.
    const kept = bytes.slice();
    bytes.fill(0);
    const r = await pending;
    assertEquals([r.size, r.digest], [size, want]);
    Deno.writeFileSync(`${env.dir}/big.bin`, kept);
    const f = await client.put(`${env.dir}/big.bin`, { name: "from-file" });
    assertEquals([f.size, f.digest], [size, want]);
    for (const id of [r.id, f.id]) {
      using obj = await client.get(id);
      assertEquals(obj.view, kept);
      // Exactly the object's pages are allocated, none past its end.
      assertEquals(fstat(obj.fd).blocks * 512n, BigInt(Math.ceil(size / 4096) * 4096));
    }
  },
);
