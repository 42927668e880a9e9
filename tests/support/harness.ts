/**
 * Test harness: a real broker subprocess, the real CLI, a raw protocol client, sealed memfds and
 * descriptor counting. Nothing here mocks the kernel.
 *
 * @module
 */

import { Connection } from "../../src/client/connection.ts";
import { closeAll } from "../../src/sys/unix_socket.ts";
import { digestBytes } from "../../src/hash/digest.ts";
import { Memfd, Seal } from "../../src/sys/memfd.ts";
import { decodeHeader, encodeHeader, type Header, HEADER_SIZE } from "../../src/protocol/wire.ts";
import { waitFor } from "./wait.ts";

/** The repository root. */
export const ROOT: string = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
/** The CLI entry point. */
export const CLI: string = `${ROOT}/cli.ts`;
/** Permission flags the CLI runs with (the same as `deno task broker`). */
export const CLI_PERMS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-net",
];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 encode. */
export function enc(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s);
}

/** UTF-8 decode. */
export function dec(b: Uint8Array): string {
  return decoder.decode(b);
}

/** A fresh temporary directory, removed by the returned disposer. */
export function tempDir(): { path: string } & Disposable {
  const path = Deno.makeTempDirSync({ prefix: "memfdbus-test-" });
  return {
    path,
    [Symbol.dispose]: () => Deno.removeSync(path, { recursive: true }),
  };
}

/** Number of open descriptors of a process (default: this one). */
export function fdCount(pid: number | "self" = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** The descriptor numbers open in a process, with what they point at. */
export function fdTable(pid: number | "self" = "self"): Map<number, string> {
  const m = new Map<number, string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      m.set(Number(e.name), Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`));
    } catch {
      // Closed while listing (the readdir descriptor itself).
    }
  }
  return m;
}

/** True while the process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/**
 * Connections that the process `pid` has accepted on the listening socket bound to `path` and
 * not yet closed: its descriptors whose socket carries that path in /proc/net/unix (an accepted
 * connection inherits the listener's address) and is not the listener itself.
 */
export function acceptedConnections(pid: number, path: string): number {
  const inodes = new Set<string>();
  for (const line of Deno.readTextFileSync("/proc/net/unix").split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; flags 00010000 mark the listener.
    if (cols.length >= 8 && cols[7] === path && cols[3] !== "00010000") inodes.add(cols[6] ?? "");
  }
  let n = 0;
  for (const target of fdTable(pid).values()) {
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m !== null && inodes.has(m[1] ?? "")) n++;
  }
  return n;
}

/**
 * Bytes that connections accepted on the listener bound to `path` have received and their owner
 * has not read yet (the Recv-Q column of `ss -x`). Zero once a broker has read every request
 * sent to it.
 */
export function unreadBytes(path: string): number {
  const out = new Deno.Command("ss", { args: ["-xnH"], stdout: "piped", stderr: "null" })
    .outputSync();
  let n = 0;
  for (const line of dec(out.stdout).split("\n")) {
    // Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port
    const cols = line.trim().split(/\s+/);
    if (cols[1] === "ESTAB" && cols[4] === path) n += Number(cols[2] ?? 0);
  }
  return n;
}

/** True when the process `pid` has a handler installed for `signal` (SigCgt of /proc/PID/status). */
export function catchesSignal(
  pid: number,
  signal: "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGUSR2",
): boolean {
  const bit = { SIGHUP: 1, SIGINT: 2, SIGUSR2: 12, SIGTERM: 15 }[signal] - 1;
  try {
    const m = /^SigCgt:\s+([0-9a-f]+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m !== null && ((BigInt(`0x${m[1]}`) >> BigInt(bit)) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** A parsed audit record (the twelve keys, plus any extras). */
export type AuditLine = Record<string, unknown> & {
  ts_ns: number;
  op: string;
  operation: string;
  result: string;
  selector: string | null;
  object_id: number | null;
  name: string | null;
  size: number | null;
  count: number | null;
  digest: string | null;
  job_id: string | null;
  error: string | null;
};

/** The twelve keys of a C-compatible audit record, in order. */
export const AUDIT_KEYS: readonly string[] = [
  "ts_ns",
  "op",
  "operation",
  "result",
  "selector",
  "object_id",
  "name",
  "size",
  "count",
  "digest",
  "job_id",
  "error",
];

/** A broker running as a subprocess of the test. */
export class BrokerProcess implements AsyncDisposable {
  readonly socket: string;
  readonly child: Deno.ChildProcess;
  /** Raw stdout lines, the listening line first. */
  readonly lines: string[] = [];
  /** stderr text. */
  stderr = "";
  #stdoutDone: Promise<void>;
  #stderrDone: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  #exited = false;

  private constructor(socket: string, child: Deno.ChildProcess) {
    this.socket = socket;
    this.child = child;
    this.#status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#stdoutDone = (async () => {
      let pending = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          this.lines.push(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      }
      if (pending !== "") this.lines.push(pending);
    })();
    this.#stderrDone = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
      }
    })();
  }

  /**
   * Start `memfdbus broker` with `args` on a fresh socket in `dir` (unless args name one) and
   * wait for its listening line.
   */
  static async start(
    dir: string,
    args: readonly string[] = [],
    opts: { env?: Record<string, string>; wrap?: readonly string[] } = {},
  ): Promise<BrokerProcess> {
    const socket = args.includes("--socket")
      ? args[args.indexOf("--socket") + 1] ?? ""
      : `${dir}/b-${crypto.randomUUID().slice(0, 8)}.sock`;
    const full = args.includes("--socket") ? [...args] : ["--socket", socket, ...args];
    const denoArgs = ["run", ...CLI_PERMS, CLI, "broker", ...full];
    const wrap = opts.wrap ?? [];
    const cmd = wrap.length > 0
      ? new Deno.Command(wrap[0] ?? "", {
        args: [...wrap.slice(1), Deno.execPath(), ...denoArgs],
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
        env: { DENO_NO_UPDATE_CHECK: "1", ...opts.env },
      })
      : new Deno.Command(Deno.execPath(), {
        args: denoArgs,
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
        env: { DENO_NO_UPDATE_CHECK: "1", ...opts.env },
      });
    const b = new BrokerProcess(socket, cmd.spawn());
    await waitFor(
      () => b.lines.length > 0 || b.#exited,
      { what: "broker listening line", timeoutMs: 60_000 },
    );
    if (b.lines.length === 0) {
      await b.#stderrDone;
      throw new Error(`broker exited before listening: ${b.stderr}`);
    }
    return b;
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid;
  }

  /** Audit records parsed so far (every line after the listening line). */
  audit(): AuditLine[] {
    return this.lines.slice(1).map((l) => JSON.parse(l) as AuditLine);
  }

  /** Wait until at least `n` audit records exist; returns them all. */
  async waitAudit(n: number, timeoutMs = 30_000): Promise<AuditLine[]> {
    await waitFor(() => this.lines.length - 1 >= n, { what: `${n} audit records`, timeoutMs });
    return this.audit();
  }

  /** Open descriptors of the broker process. */
  fdCount(): number {
    return fdCount(this.pid);
  }

  /** Client connections the broker has accepted and not closed. */
  connections(): number {
    return acceptedConnections(this.pid, this.socket);
  }

  /**
   * The broker's descriptor count once it holds no client connection (connections it is still
   * closing are waited for): the count to compare later counts against.
   */
  async idleFdCount(what = "the broker to close its client connections"): Promise<number> {
    await waitFor(() => this.connections() === 0, { what });
    return this.fdCount();
  }

  /**
   * The broker's descriptor count once it holds no client connection and two reads 100 ms apart
   * agree (a Worker that has just finished may still be closing its descriptors).
   */
  async settledFdCount(): Promise<number> {
    await this.idleFdCount();
    let last = -1;
    return await waitFor(() => {
      const n = this.fdCount();
      const same = n === last;
      last = n;
      return same ? n : null;
    }, { what: "the broker's descriptor count to settle", everyMs: 100 });
  }

  /** Send a signal and wait for the exit status. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    if (!this.#exited) {
      try {
        this.child.kill(signal);
      } catch {
        // Already gone.
      }
    }
    const status = await this.#status;
    await this.#stdoutDone;
    await this.#stderrDone;
    return status;
  }

  /** Wait for the process to exit by itself. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.#status;
    await this.#stdoutDone;
    await this.#stderrDone;
    return status;
  }

  /** Stop with SIGKILL if still running. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(this.#exited ? "SIGTERM" : "SIGKILL");
  }
}

/** The result of running the CLI. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** stdout bytes. */
  stdoutBytes: Uint8Array;
  /** stdout as text. */
  stdout: string;
  /** stderr as text. */
  stderr: string;
}

/** Run `memfdbus ARGS` as a subprocess. */
export async function cli(
  args: readonly string[],
  opts: {
    env?: Record<string, string>;
    clearEnv?: boolean;
    stdin?: Uint8Array;
    cwd?: string;
  } = {},
): Promise<CliResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", ...opts.env },
    clearEnv: opts.clearEnv ?? false,
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdoutBytes: out.stdout,
    stdout: dec(out.stdout),
    stderr: dec(out.stderr),
  };
}

/** A memfd holding `bytes`, sealed with `seals` (the four immutability seals by default). */
export function sealedMemfd(bytes: Uint8Array, seals: number = Seal.IMMUTABLE): Memfd {
  const m = Memfd.create("test");
  m.writeAll(bytes);
  m.seek(0);
  if (seals !== 0) m.addSeals(seals);
  return m;
}

/** The digest string of some bytes. */
export function digestOf(bytes: Uint8Array): string {
  return digestBytes(bytes);
}

/** A reply read off the wire: header, body bytes and any descriptors that came with it. */
export interface RawReply {
  /** The decoded header. */
  header: Header;
  /** The body (text_len + name_len bytes, per the command). */
  body: Uint8Array;
  /** Descriptors received (owned by the caller). */
  fds: number[];
}

/**
 * A raw protocol client for tests: writes arbitrary bytes and descriptors, reads replies.
 * Async, so it works against an in-process broker too.
 */
export class RawClient implements Disposable {
  readonly conn: Connection;

  private constructor(conn: Connection) {
    this.conn = conn;
  }

  /** Connect to a broker socket. */
  static async connect(socket: string, timeoutMs = 5000): Promise<RawClient> {
    return new RawClient(await Connection.connect(socket, timeoutMs));
  }

  /** Send bytes, attaching descriptors to the first sendmsg. */
  async send(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    await this.conn.send(bytes, performance.now() + 5000, "send", fds);
  }

  /** Read one reply: the header, then `name_len + text_len` body bytes (GET OK: name+digest). */
  async reply(timeoutMs = 5000): Promise<RawReply> {
    const deadline = performance.now() + timeoutMs;
    const h = await this.conn.recvExact(HEADER_SIZE, deadline, "receive response");
    const header = decodeHeader(h.bytes);
    const bodyLen = header.nameLen + header.textLen;
    const body = await this.conn.recvExact(bodyLen, deadline, "receive body");
    return { header, body: body.bytes, fds: [...h.fds, ...body.fds] };
  }

  /**
   * Read until the broker closes the connection; returns what arrived. Throws on timeout.
   */
  async readToEnd(timeoutMs = 5000): Promise<{ bytes: Uint8Array; fds: number[] }> {
    const deadline = performance.now() + timeoutMs;
    const parts: Uint8Array[] = [];
    const fds: number[] = [];
    for (;;) {
      try {
        const c = await this.conn.recvExact(1, deadline, "read");
        parts.push(c.bytes);
        fds.push(...c.fds);
      } catch (e) {
        if ((e as { code?: string }).code === "ECONNRESET") break;
        throw e;
      }
    }
    const out = new Uint8Array(parts.length);
    parts.forEach((p, i) => (out[i] = p[0] ?? 0));
    return { bytes: out, fds };
  }

  /** Close the connection. */
  close(): void {
    this.conn.close();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Encode a request: a header from fields, followed by body parts. */
export function request(h: Partial<Header>, ...body: (Uint8Array | string)[]): Uint8Array {
  const parts = [encodeHeader(h), ...body.map((b) => (typeof b === "string" ? enc(b) : b))];
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Send one request and read one reply on a fresh connection. */
export async function roundTrip(
  socket: string,
  bytes: Uint8Array,
  fds: readonly number[] = [],
): Promise<RawReply> {
  using c = await RawClient.connect(socket);
  await c.send(bytes, fds);
  return await c.reply();
}

/** Close every descriptor of a reply. */
export function closeReply(r: RawReply): void {
  closeAll(r.fds);
}
