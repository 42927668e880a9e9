/**
 * Shared helpers of the `broker_wire_*_test.ts` files: exact protocol v1 texts copied from
 * PROTOCOL.md, request builders, reply and audit assertions, a session that pairs every request
 * with its audit record, and a few descriptor probes for the test process itself.
 *
 * @module
 */

import { assertEquals, ok } from "./assert.ts";
import {
  AUDIT_KEYS,
  type AuditLine,
  type BrokerProcess,
  CLI,
  CLI_PERMS,
  digestOf,
  enc,
  RawClient,
  type RawReply,
  request,
  sealedMemfd,
} from "./harness.ts";
import { letTimePass, waitFor } from "./wait.ts";
import { Cmd, type Header, MAGIC, VERSION } from "../../src/protocol/wire.ts";
import { closeQuietly, cstr, errno, libc } from "../../src/ffi.ts";
import { Seal } from "../../src/sys/memfd.ts";
import { O_CLOEXEC } from "../../src/sys/linux.ts";

/** Reply status codes (PROTOCOL.md §2.1). */
export const ST = { OK: 0, ERR: 1, NOT_FOUND: 2, BAD_REQUEST: 3, FORBIDDEN: 4 } as const;

/** The exact texts of PROTOCOL.md §3, typed out again so a wrong constant in src/ is caught. */
export const T = {
  badHeader: "invalid protocol header",
  unknownCommand: "unknown command",
  clientQuota: "broker client quota exceeded",
  nameTooLong: "name too long",
  jobTooLong: "job id too long",
  allowTooLong: "allowed job id too long",
  requestTooLarge: "request payload exceeds broker limit",
  nameOverLimit: "object name exceeds broker name limit",
  readName: "failed to read object name",
  emptyName: "name must not be empty",
  invalidDigest: "invalid object digest",
  readDigest: "failed to read object digest",
  allowNeedsOwner: "allowed job requires owner job",
  readJob: "failed to read job id",
  emptyJob: "job id must not be empty",
  readAllow: "failed to read allowed job id",
  emptyAllow: "allowed job id must not be empty",
  missingFd: "missing memfd descriptor",
  notRegular: "descriptor is not a regular memfd-like file",
  getSealsEinval: "F_GET_SEALS failed: Invalid argument",
  notSealed: "fd is not fully immutable-sealed",
  digestMismatch: "digest mismatch",
  objectQuota: "broker object quota exceeded",
  bothSelectors: "specify object id or name, not both",
  noSelector: "missing object selector",
  notFound: "object not found",
  accessDenied: "access denied",
  listTooLarge: "list response too large",
  // Texts of this implementation for conditions the C broker did not answer (D6, D11).
  nulInName: "object name must not contain NUL bytes",
  nulInJob: "job id must not contain NUL bytes",
  nulInAllow: "allowed job id must not contain NUL bytes",
  fdLimit: "broker descriptor limit reached",
} as const;

/** Bytes as a binary (latin1) string, one character per byte, for exact comparisons. */
export function bin(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return s;
}

/** A binary (latin1) string back to bytes. */
export function unbin(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

/** Strings (UTF-8) and byte arrays concatenated. */
export function cat(...parts: (string | Uint8Array)[]): Uint8Array {
  const bs = parts.map((p) => (typeof p === "string" ? enc(p) : p));
  const out = new Uint8Array(bs.reduce((a, b) => a + b.length, 0));
  let off = 0;
  for (const b of bs) {
    out.set(b, off);
    off += b.length;
  }
  return out;
}

/** `n` bytes of `byte`. */
export function filled(n: number, byte = 0x61): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

/** A reply header: magic and version set, the given fields, every other field zero. */
export function replyHeader(fields: Partial<Header>): Header {
  return {
    magic: MAGIC,
    version: VERSION,
    cmd: 0,
    status: 0,
    jobLen: 0,
    objectId: 0n,
    size: 0n,
    nameLen: 0,
    textLen: 0,
    allowLen: 0,
    reserved: 0,
    ...fields,
  };
}

/** Assert an error reply: exact header (all unused fields zero), exact text, no descriptor. */
export function assertErrorReply(r: RawReply, cmd: number, status: number, text: string): void {
  assertEquals(
    { header: r.header, text: bin(r.body), fds: r.fds.length },
    {
      header: replyHeader({ cmd, status, textLen: enc(text).length }),
      text,
      fds: 0,
    },
  );
}

/** Assert a PUT or DROP OK reply: id and size, no body, no descriptor. */
export function assertIdReply(r: RawReply, cmd: number, id: number, size: number): void {
  assertEquals(
    { header: r.header, body: r.body.length, fds: r.fds.length },
    { header: replyHeader({ cmd, objectId: BigInt(id), size: BigInt(size) }), body: 0, fds: 0 },
  );
}

// ---- requests ------------------------------------------------------------------------------

/** Raw bytes of a string or byte array. */
function raw(v: string | Uint8Array | undefined): Uint8Array {
  return v === undefined ? new Uint8Array(0) : typeof v === "string" ? enc(v) : v;
}

/** What a PUT request carries besides the name and the bytes. */
export interface PutOptions {
  /** Owner job. */
  job?: string | Uint8Array;
  /** Allowed job. */
  allow?: string | Uint8Array;
  /** Digest text (default: the real digest of the bytes). */
  digest?: string;
  /** Claimed size (default: the byte count). */
  size?: bigint;
  /** The reserved field (extension flags). */
  reserved?: number;
}

/** The bytes of a complete PUT request (header, name, digest, job, allow). */
export function putRequest(
  name: string | Uint8Array,
  data: Uint8Array,
  o: PutOptions = {},
): Uint8Array {
  const n = raw(name);
  const d = enc(o.digest ?? digestOf(data));
  const j = raw(o.job);
  const a = raw(o.allow);
  return request(
    {
      cmd: Cmd.PUT,
      size: o.size ?? BigInt(data.length),
      nameLen: n.length,
      textLen: d.length,
      jobLen: j.length,
      allowLen: a.length,
      reserved: o.reserved ?? 0,
    },
    n,
    d,
    j,
    a,
  );
}

/** A GET or DROP selector. */
export interface Selector {
  /** Object id. */
  id?: number | bigint;
  /** Object name. */
  name?: string | Uint8Array;
  /** Caller job. */
  job?: string | Uint8Array;
  /** The reserved field. */
  reserved?: number;
}

/** The bytes of a GET (or, with cmd 4, DROP) request. */
export function selectRequest(cmd: number, s: Selector): Uint8Array {
  const n = raw(s.name);
  const j = raw(s.job);
  return request(
    {
      cmd,
      objectId: BigInt(s.id ?? 0),
      nameLen: n.length,
      jobLen: j.length,
      reserved: s.reserved ?? 0,
    },
    n,
    j,
  );
}

/** The bytes of a LIST request. */
export function listRequest(job?: string | Uint8Array, reserved = 0): Uint8Array {
  const j = raw(job);
  return request({ cmd: Cmd.LIST, jobLen: j.length, reserved }, j);
}

/** One LIST line as PROTOCOL.md §3.4 defines it. */
export function listLine(
  id: number,
  owner: string | null,
  allowed: string | null,
  size: number,
  digest: string,
  name: string,
): string {
  return `${id}\towner=${owner ?? "-"}\tallowed=${allowed ?? "-"}\t${size}\t${digest}\t${name}\n`;
}

// ---- audit ---------------------------------------------------------------------------------

/** An expected audit record without ts_ns; `operation` is filled from `op`. */
export type ExpectedAudit = {
  op: string;
  result: string;
  selector?: string | null;
  object_id?: number | null;
  name?: string | null;
  size?: number | null;
  count?: number | null;
  digest?: string | null;
  job_id?: string | null;
  error?: string | null;
};

/** The full expected record (every key, nulls where not given), in the C key order. */
export function expectedRecord(e: ExpectedAudit): Record<string, unknown> {
  return {
    op: e.op,
    operation: e.op,
    result: e.result,
    selector: e.selector ?? null,
    object_id: e.object_id ?? null,
    name: e.name ?? null,
    size: e.size ?? null,
    count: e.count ?? null,
    digest: e.digest ?? null,
    job_id: e.job_id ?? null,
    error: e.error ?? null,
  };
}

/**
 * Check one audit line's form: a compact JSON object whose keys are exactly the twelve keys in
 * order, ts_ns a plausible CLOCK_REALTIME integer, and every string escaped as JSON.stringify
 * escapes it (which matches the C escaping for everything a test sends). Returns it parsed.
 * Session.nextAudit applies it to every record a test reads.
 */
export function checkAuditLine(line: string): AuditLine {
  const m = /^\{"ts_ns":(\d+),/.exec(line);
  ok(m !== null, `audit line does not start with ts_ns: ${line}`);
  const ts = BigInt(m[1] ?? "0");
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  ok(ts > nowNs - 600_000_000_000n && ts <= nowNs + 1_000_000_000n, `implausible ts_ns ${ts}`);
  const parsed = JSON.parse(line) as AuditLine;
  assertEquals(Object.keys(parsed), [...AUDIT_KEYS]);
  // Integers beyond 2^53 (ts_ns, a u64 size) do not survive JSON.parse: compare them as text.
  const norm = line.replace(/:(\d{16,})([,}])/g, ":0$2");
  assertEquals(norm, JSON.stringify(JSON.parse(norm)), "audit line is not compact canonical JSON");
  return parsed;
}

/** Assert a raw audit line: its form, and every field but ts_ns. */
export function assertAudit(line: string, e: ExpectedAudit): void {
  const parsed = checkAuditLine(line);
  const { ts_ns: _ts, ...rest } = parsed;
  assertEquals(rest, expectedRecord(e));
}

/**
 * A broker and the number of its audit records the test has accounted for: every exchange must
 * produce exactly one new record, which it returns.
 */
export class Session {
  readonly broker: BrokerProcess;
  seen: number;

  constructor(broker: BrokerProcess) {
    this.broker = broker;
    this.seen = broker.lines.length - 1;
  }

  /** The socket path. */
  get socket(): string {
    return this.broker.socket;
  }

  /** Wait for the next audit line (exactly one more than accounted for) and return it. */
  async nextAudit(): Promise<string> {
    await this.broker.waitAudit(this.seen + 1);
    const line = this.broker.lines[this.seen + 1] ?? "";
    this.seen++;
    checkAuditLine(line);
    return line;
  }

  /**
   * Assert that no audit line beyond those accounted for appears within `windowMs`: time passes
   * on purpose, since this shows that something does NOT happen.
   */
  async assertNoNewAudit(windowMs = 150): Promise<void> {
    await letTimePass(windowMs);
    assertEquals(this.broker.lines.slice(this.seen + 1), []);
  }

  /**
   * Send one request on a fresh connection, read the reply, check that the broker then closes
   * the connection without sending anything more, and return the reply with its audit line.
   */
  async exchange(
    bytes: Uint8Array,
    fds: readonly number[] = [],
  ): Promise<{ reply: RawReply; line: string }> {
    assertEquals(this.broker.lines.length - 1, this.seen, "unaccounted audit records");
    using c = await RawClient.connect(this.socket);
    await c.send(bytes, fds);
    const reply = await c.reply();
    const rest = await c.readToEnd();
    assertEquals({ trailing: rest.bytes.length, fds: rest.fds.length }, { trailing: 0, fds: 0 });
    return { reply, line: await this.nextAudit() };
  }

  /** PUT `data` in a memfd sealed with `seals` (the four immutability seals by default). */
  async put(
    name: string | Uint8Array,
    data: Uint8Array,
    o: PutOptions & { seals?: number } = {},
  ): Promise<{ reply: RawReply; line: string }> {
    using m = sealedMemfd(data, o.seals ?? Seal.IMMUTABLE);
    return await this.exchange(putRequest(name, data, o), [m.fd]);
  }

  /** PUT that must succeed; returns the new id. */
  async putOk(name: string, data: Uint8Array, o: PutOptions = {}): Promise<number> {
    const { reply } = await this.put(name, data, o);
    assertEquals(reply.header.status, ST.OK, `PUT ${name} failed: ${bin(reply.body)}`);
    return Number(reply.header.objectId);
  }

  /** GET, closing any received descriptor; returns the reply (fds already closed). */
  async get(s: Selector): Promise<{ reply: RawReply; line: string }> {
    const r = await this.exchange(selectRequest(Cmd.GET, s));
    for (const fd of r.reply.fds) closeQuietly(fd);
    return r;
  }

  /** DROP. */
  async drop(s: Selector): Promise<{ reply: RawReply; line: string }> {
    return await this.exchange(selectRequest(Cmd.DROP, s));
  }

  /** LIST; returns the reply and the listing text. */
  async list(job?: string): Promise<{ reply: RawReply; line: string; text: string }> {
    const r = await this.exchange(listRequest(job));
    return { ...r, text: bin(r.reply.body) };
  }

  /** The broker's descriptor count with no client connection open (see BrokerProcess). */
  async settledFdCount(): Promise<number> {
    return await this.broker.settledFdCount();
  }

  /** Wait until the broker's descriptor count equals `n`; fails with the last count seen. */
  async expectFdCount(n: number, what = "broker descriptor count"): Promise<void> {
    let last = -1;
    try {
      await waitFor(() => (last = this.broker.fdCount()) === n, { what });
    } catch {
      assertEquals(last, n, what);
    }
  }
}

// ---- descriptors of the test process -------------------------------------------------------

/** open(path, O_RDONLY|O_CLOEXEC). */
export function openReadOnly(path: string): number {
  const fd = libc.symbols.open(cstr(path), O_CLOEXEC, 0);
  ok(fd >= 0, `open ${path} failed: errno ${errno()}`);
  return fd;
}

/** pread of `n` bytes from offset 0 (does not move the file offset). */
export function preadAll(fd: number, n: number): Uint8Array {
  const buf = new Uint8Array(n);
  const r = Number(libc.symbols.pread(fd, buf, BigInt(n), 0n));
  ok(r >= 0, `pread failed: errno ${errno()}`);
  return buf.subarray(0, r);
}

/** read(2) of up to `n` bytes at the current offset. */
export function readSome(fd: number, n: number): Uint8Array {
  const buf = new Uint8Array(n);
  const r = Number(libc.symbols.read(fd, buf, BigInt(n)));
  ok(r >= 0, `read failed: errno ${errno()}`);
  return buf.subarray(0, r);
}

/** write(2) of one byte: returns the result and errno. */
export function tryWrite(fd: number): { result: number; errno: number } {
  const r = Number(libc.symbols.write(fd, new Uint8Array([0x78]), 1n));
  return { result: r, errno: r < 0 ? errno() : 0 };
}

/** `pos` and `flags` (octal in /proc) of a descriptor of this process. */
export function fdInfo(fd: number): { pos: number; flags: number } {
  const text = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  const pos = /^pos:\s+(\d+)$/m.exec(text);
  const flags = /^flags:\s+([0-7]+)$/m.exec(text);
  return { pos: Number(pos?.[1] ?? -1), flags: parseInt(flags?.[1] ?? "-1", 8) };
}

/** The inode number behind a descriptor of this process. */
export function inodeOf(fd: number): string {
  return Deno.readLinkSync(`/proc/self/fd/${fd}`);
}

/** F_GET_SEALS of a descriptor. */
export function sealsOf(fd: number): number {
  return libc.symbols.fcntl(fd, 1034, 0);
}

/** shutdown(SHUT_WR) on a raw client's socket: the broker sees end of stream. */
export function shutdownWrite(c: RawClient): void {
  ok(libc.symbols.shutdown(c.conn.fd, 1) === 0, `shutdown failed: errno ${errno()}`);
}

/** shutdown(SHUT_RD) on a raw client's socket: the broker's replies then fail with EPIPE. */
export function shutdownRead(c: RawClient): void {
  ok(libc.symbols.shutdown(c.conn.fd, 0) === 0, `shutdown failed: errno ${errno()}`);
}

/** Close a list of descriptors. */
export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) closeQuietly(fd);
}

// ---- a broker whose stdout is kept as raw bytes --------------------------------------------

/** A broker subprocess whose audit lines are kept byte for byte (no UTF-8 decoding). */
export class RawStdoutBroker implements AsyncDisposable {
  readonly socket: string;
  readonly child: Deno.ChildProcess;
  #buf: number[] = [];
  #err = "";
  #done: Promise<void>;

  private constructor(socket: string, child: Deno.ChildProcess) {
    this.socket = socket;
    this.child = child;
    const out = (async () => {
      for await (const chunk of child.stdout) for (const b of chunk) this.#buf.push(b);
    })();
    const err = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#err += chunk;
      }
    })();
    this.#done = Promise.all([out, err]).then(() => {});
  }

  /** Start a broker on `socket` and wait for its listening line. */
  static async start(socket: string): Promise<RawStdoutBroker> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...CLI_PERMS, CLI, "broker", "--socket", socket],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const b = new RawStdoutBroker(socket, child);
    await waitFor(() => b.lines().length >= 1, { what: "listening line", timeoutMs: 15000 });
    return b;
  }

  /** Everything written to stdout so far. */
  raw(): Uint8Array {
    return Uint8Array.from(this.#buf);
  }

  /** Everything written to stderr so far. */
  stderr(): string {
    return this.#err;
  }

  /** Resolves once stdout and stderr are closed. */
  done(): Promise<void> {
    return this.#done;
  }

  /** Complete stdout lines as raw bytes. */
  lines(): Uint8Array[] {
    const out: Uint8Array[] = [];
    let start = 0;
    for (let i = 0; i < this.#buf.length; i++) {
      if (this.#buf[i] === 0x0a) {
        out.push(Uint8Array.from(this.#buf.slice(start, i)));
        start = i + 1;
      }
    }
    return out;
  }

  /** Stop with SIGTERM (if still running) and wait. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await this.child.status;
    await this.#done;
  }
}
