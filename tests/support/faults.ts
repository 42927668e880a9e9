/**
 * Support for the fault suites: hostile descriptors, the broker's known error texts, bounded raw
 * exchanges, store counting and descriptor accounting. Real kernel objects only.
 *
 * @module
 */

import { Connection } from "../../src/client/connection.ts";
import { TimeoutError } from "../../src/errors.ts";
import { check, cstr, libc } from "../../src/ffi.ts";
import {
  EFD_CLOEXEC,
  F_GETFL,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  SHUT_WR,
} from "../../src/sys/linux.ts";
import { PolicyText } from "../../src/core/policy.ts";
import { USAGE_BAD_REQUEST } from "../../src/core/handlers/usage.ts";
import { closeAll, unixSocket } from "../../src/sys/unix_socket.ts";
import {
  decodeHeader,
  type Header,
  HEADER_SIZE,
  isValidHeader,
  Text,
} from "../../src/protocol/wire.ts";
import { BrokerProcess, catchesSignal, dec } from "./harness.ts";
import { listRequest } from "./wire.ts";
import { waitFor } from "./wait.ts";

/** An eventfd. */
export function makeEventfd(): number {
  return check(libc.symbols.eventfd(0, EFD_CLOEXEC), "eventfd");
}

/** An unconnected AF_UNIX stream socket. */
export function makeSocket(): number {
  return unixSocket(true);
}

/** open(2) a path; throws on failure. */
export function openPath(path: string, flags: number): number {
  return check(libc.symbols.open(cstr(path), flags | O_CLOEXEC, 0o600), "open");
}

/** A directory opened O_RDONLY|O_DIRECTORY. */
export function openDirectory(path: string): number {
  return openPath(path, O_RDONLY | O_DIRECTORY);
}

/** The access mode bits (O_ACCMODE) of a descriptor. */
export function accessMode(fd: number): number {
  return check(libc.symbols.fcntl(fd, F_GETFL, 0), "fcntl") & 3;
}

/** pread the whole of a descriptor's first `size` bytes through read(2) after an lseek. */
export function readAllAt(fd: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let off = 0;
  while (off < size) {
    const n = Number(
      libc.symbols.pread(fd, out.subarray(off), BigInt(size - off), BigInt(off)),
    );
    if (n <= 0) throw new Error(`pread returned ${n} at ${off} of ${size}`);
    off += n;
  }
  return out;
}

/** Every fixed error text the broker may send (protocol texts and identity-policy texts). */
export const KNOWN_TEXTS: ReadonlySet<string> = new Set<string>([
  ...Object.values(Text),
  ...Object.values(PolicyText),
  USAGE_BAD_REQUEST,
]);

/** Error texts with a variable part. */
const VARIABLE_TEXTS: readonly RegExp[] = [
  /^size mismatch: header=\d+ fd=\d+$/,
  /^F_GET_SEALS failed: [A-Za-z].*$/,
  /^fstat failed: [A-Za-z].*$/,
  /^digest verification read failed: [A-Za-z].*$/,
  /^(object name|job id|allowed job id) must not contain control byte 0x[0-9a-f]{2} \(at byte \d+\)$/,
  /^(object name|job id|allowed job id) must not contain control character U\+00[89][0-9a-f] \(at byte \d+\)$/,
  /^(object name|job id|allowed job id) must be valid UTF-8 \(invalid byte 0x[0-9a-f]{2} at byte \d+\)$/,
  /^too many digests in flight for this peer \(.*\): retry later$/,
];

/** True for a text the broker is documented to send. */
export function isKnownText(text: string): boolean {
  return KNOWN_TEXTS.has(text) || VARIABLE_TEXTS.some((r) => r.test(text));
}

/** A reply taken off the wire by {@link exchange}. */
export interface Exchange {
  /** "reply": a whole reply arrived; "closed": the broker closed before any byte. */
  readonly kind: "reply" | "closed";
  /** The reply header (kind "reply"). */
  readonly header: Header | null;
  /** The reply body (name and text bytes). */
  readonly body: Uint8Array;
  /** The body as text. */
  readonly text: string;
  /** Descriptors that came with the reply (the caller closes them). */
  readonly fds: number[];
  /** Milliseconds from the first send to the reply (or close). */
  readonly ms: number;
}

/** Send `bytes` (descriptors on the first sendmsg) and read one reply or a clean close. */
export async function exchange(
  socket: string,
  bytes: Uint8Array,
  fds: readonly number[] = [],
  opts: { timeoutMs?: number; shutdown?: boolean } = {},
): Promise<Exchange> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const conn = await Connection.connect(socket, timeoutMs);
  const t0 = performance.now();
  try {
    try {
      await conn.send(bytes, t0 + timeoutMs, "send", fds);
    } catch (e) {
      if (
        (e as { code?: string }).code !== "EPIPE" && (e as { code?: string }).code !== "ECONNRESET"
      ) {
        throw e;
      }
    }
    if (opts.shutdown) libc.symbols.shutdown(conn.fd, SHUT_WR);
    return await readOneReply(conn, t0 + timeoutMs, t0);
  } finally {
    conn.close();
  }
}

/**
 * Read one reply from `conn` before `deadline`: a whole header and its body, or a clean close
 * before the first byte. A close inside a reply, or the deadline, throws.
 */
export async function readOneReply(
  conn: Connection,
  deadline: number,
  t0 = performance.now(),
): Promise<Exchange> {
  let first: { bytes: Uint8Array; fds: number[] };
  try {
    first = await conn.recvExact(1, deadline, "receive reply");
  } catch (e) {
    if ((e as { code?: string }).code === "ECONNRESET") {
      return {
        kind: "closed",
        header: null,
        body: new Uint8Array(0),
        text: "",
        fds: [],
        ms: performance.now() - t0,
      };
    }
    throw e;
  }
  const fds = [...first.fds];
  try {
    const rest = await conn.recvExact(HEADER_SIZE - 1, deadline, "receive reply header");
    fds.push(...rest.fds);
    const hb = new Uint8Array(HEADER_SIZE);
    hb[0] = first.bytes[0] ?? 0;
    hb.set(rest.bytes, 1);
    const header = decodeHeader(hb);
    if (!isValidHeader(header)) throw new Error(`reply with a bad magic/version: ${[...hb]}`);
    const len = header.nameLen + header.textLen;
    if (len > 64 << 20) throw new Error(`reply body of ${len} bytes`);
    const body = await conn.recvExact(len, deadline, "receive reply body");
    fds.push(...body.fds);
    return {
      kind: "reply",
      header,
      body: body.bytes,
      text: dec(body.bytes),
      fds,
      ms: performance.now() - t0,
    };
  } catch (e) {
    closeAll(fds);
    throw e;
  }
}

/** True when an error is a deadline passing. */
export function isTimeout(e: unknown): boolean {
  return e instanceof TimeoutError;
}

/** A status/text pair from an error reply, for compact assertions. */
export function statusText(x: Exchange): [number, string] | "closed" {
  if (x.kind === "closed" || x.header === null) return "closed";
  return [x.header.status, x.header.status === 0 ? "" : x.text];
}

/**
 * The number of stored objects, counted from an unscoped LIST (one line per object; a line
 * starts with the id, owner and allowed columns, the size and the digest).
 */
export async function storedCount(socket: string): Promise<number> {
  const x = await exchange(socket, listRequest());
  closeAll(x.fds);
  if (x.kind !== "reply" || x.header?.status !== 0) {
    throw new Error(`LIST failed: ${x.kind} ${x.header?.status} ${x.text}`);
  }
  return countListLines(x.text);
}

/** Count the object lines of a LIST text (names may contain newlines; lines are recognised). */
export function countListLines(text: string): number {
  const re = /(?:^|\n)\d+\towner=[^\t\n]*\tallowed=[^\t\n]*\t\d+\tsha256:[0-9a-f]{64}\t/g;
  let n = 0;
  while (re.exec(text) !== null) n++;
  return n;
}

/**
 * Wait until the broker holds exactly `fixed + objects` descriptors (connections it is still
 * closing are given `timeoutMs`). Returns the last count seen; throws with the fd table when
 * the count does not settle.
 */
export async function expectFdCount(
  broker: BrokerProcess,
  expected: number,
  timeoutMs = 5000,
): Promise<void> {
  let last = -1;
  try {
    await waitFor(() => (last = broker.fdCount()) === expected, {
      what: "fd count",
      timeoutMs: timeoutMs,
    });
  } catch {
    const table: string[] = [];
    for (const e of Deno.readDirSync(`/proc/${broker.pid}/fd`)) {
      try {
        table.push(`${e.name} -> ${Deno.readLinkSync(`/proc/${broker.pid}/fd/${e.name}`)}`);
      } catch {
        // Closed meanwhile.
      }
    }
    table.sort((a, b) => parseInt(a) - parseInt(b));
    throw new Error(
      `broker holds ${last} descriptors, expected ${expected}\n  ${table.join("\n  ")}`,
    );
  }
}

/** Resident set size of a process in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m === null ? 0 : Number(m[1]);
}

/**
 * Start a broker subprocess and wait until it has its SIGTERM handler, so that the suites can
 * stop it with SIGTERM and expect exit code 0 (src/cli/broker.ts installs the handlers before the
 * listening line; this checks it rather than trusting it).
 */
export async function startBroker(
  dir: string,
  args: readonly string[] = [],
  opts: { env?: Record<string, string>; wrap?: readonly string[] } = {},
): Promise<BrokerProcess> {
  const broker = await BrokerProcess.start(dir, args, opts);
  await waitFor(() => catchesSignal(broker.pid, "SIGTERM"), {
    what: "the broker's SIGTERM handler",
  });
  return broker;
}

/** The p-th percentile (0..1) of some numbers. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
}
