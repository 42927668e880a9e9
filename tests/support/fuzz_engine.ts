/**
 * A seeded protocol fuzzer for a live broker, shared by the fast fault suite and
 * `deno task fuzz`. Case `i` of seed `s` is always the same bytes, descriptors and ending, so any
 * failure can be replayed from the printed seed and case number.
 *
 * Every case opens a connection, sends one or more chunks (each chunk one sendmsg, carrying 0 to
 * 3 descriptors), ends by waiting, half-closing, closing or stalling, and then requires a valid
 * reply or a clean close within a bound. Replies are checked against the protocol: known error
 * texts, the echoed command, descriptors only with a GET success, and so on.
 *
 * @module
 */

import { Connection } from "../../src/client/connection.ts";
import { nameProblem } from "../../src/protocol/names.ts";
import { digestBytes } from "../../src/hash/digest.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import { fstat } from "../../src/sys/fd.ts";
import { SEALS_IMMUTABLE, SHUT_WR } from "../../src/sys/linux.ts";
import { getSeals, Memfd, Seal } from "../../src/sys/memfd.ts";
import { closeAll } from "../../src/sys/unix_socket.ts";
import {
  Cmd,
  decodeHeader,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  isValidDigest,
  isValidHeader,
  MAGIC,
  Text,
  VERSION,
  withExt,
} from "../../src/protocol/wire.ts";
import {
  accessMode,
  type Exchange,
  exchange,
  isKnownText,
  isTimeout,
  makeEventfd,
  makeSocket,
  readAllAt,
  readOneReply,
} from "./faults.ts";
import { listRequest } from "./wire.ts";
import { makePipe } from "./fds.ts";

// ---- random numbers --------------------------------------------------------------------------

/** A small, fast, seedable generator (mulberry32). */
export class Rng {
  #s: number;

  constructor(seed: number) {
    this.#s = seed >>> 0;
  }

  /** A uniform u32. */
  u32(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  /** One element of a non-empty array. */
  pick<T>(xs: readonly T[]): T {
    const x = xs[this.int(xs.length)];
    if (x === undefined) throw new RangeError("pick from an empty array");
    return x;
  }

  /** n random bytes. */
  bytes(n: number): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A random u64. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
}

/** The generator of case `index` under `seed` (independent of every other case). */
export function caseRng(seed: number, index: number): Rng {
  // splitmix32-style mixing of the two numbers.
  let z = (seed ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return new Rng((z ^ (z >>> 16)) >>> 0);
}

// ---- cases -----------------------------------------------------------------------------------

/** A descriptor to create and attach to a message. */
export type FdSpec =
  | { readonly kind: "memfd"; readonly content: Uint8Array; readonly seals: number }
  | { readonly kind: "pipe" | "eventfd" | "socket" };

/** One sendmsg: bytes and the descriptors attached to it. */
export interface Chunk {
  readonly bytes: Uint8Array;
  readonly fds: readonly FdSpec[];
}

/** How the client ends its side of a case. */
export type Ending = "wait" | "shutdown" | "close" | "stall";

/** One fuzz case. */
export interface FuzzCase {
  readonly index: number;
  /** What kind of case this is (for reports). */
  readonly label: string;
  readonly chunks: readonly Chunk[];
  readonly ending: Ending;
  /** A reply this case must get, when its outcome is certain. */
  readonly expect?: { readonly status: number; readonly text: string; readonly cmd: number };
}

const enc = new TextEncoder();
const NAMES: readonly Uint8Array[] = [
  enc.encode("a"),
  enc.encode("b"),
  enc.encode("model.bin"),
  enc.encode("with space"),
  enc.encode("tab\tname"),
  enc.encode("new\nline"),
  enc.encode("ütf-8 ✓"),
  new Uint8Array([0x80, 0xff, 0xfe, 0x41]),
  enc.encode("x".repeat(300)),
];
const JOBS: readonly Uint8Array[] = [enc.encode("alpha"), enc.encode("beta"), enc.encode("j")];
const LENGTHS: readonly number[] = [
  0,
  1,
  2,
  5,
  47,
  48,
  49,
  70,
  71,
  72,
  255,
  256,
  257,
  4095,
  4096,
  65535,
  65536,
  65537,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
];
const U64S: readonly bigint[] = [
  0n,
  1n,
  2n,
  5n,
  100n,
  1n << 31n,
  1n << 32n,
  1n << 53n,
  (1n << 53n) + 1n,
  1n << 63n,
  (1n << 64n) - 1n,
];
/** Largest body a case sends. */
const BODY_CAP = 8192;

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function pickName(r: Rng): Uint8Array {
  if (r.chance(0.15)) return r.bytes(1 + r.int(40));
  return r.pick(NAMES);
}

function maybeJob(r: Rng, p: number): Uint8Array {
  if (!r.chance(p)) return new Uint8Array(0);
  return r.chance(0.1) ? r.bytes(1 + r.int(20)) : r.pick(JOBS);
}

/**
 * A TAKEOVER from a peer with the broker's uid (the fuzzer runs as the broker's user) makes the
 * broker pause accepting until the handover times out: a legitimate privileged operation, not a
 * fuzz target, so it is never generated.
 */
function notTakeover(cmd: number): number {
  // WATCH (0x103, right after TAKEOVER) is left out too: an accepted watch keeps its connection
  // open for events instead of answering once. 0x1ff is a command no broker knows.
  return cmd === Cmd.TAKEOVER || cmd === Cmd.WATCH ? UNKNOWN_CMD : cmd;
}

/** A command number no broker knows (answered `unknown command`). */
const UNKNOWN_CMD = 0x1ff;

/** Rewrite a TAKEOVER or WATCH command that bit flips produced in an encoded request. */
function avoidTakeover(bytes: Uint8Array): void {
  const cmd = bytes.length >= 8 ? (bytes[6] ?? 0) | ((bytes[7] ?? 0) << 8) : -1;
  // Clearing the high byte leaves GET (0x002) or LIST (0x003).
  if (cmd === Cmd.TAKEOVER || cmd === Cmd.WATCH) bytes[7] = 0;
}

/** Commands the broker knows (TAKEOVER and WATCH are never generated: see notTakeover). */
const KNOWN = new Set<number>([Cmd.PUT, Cmd.GET, Cmd.LIST, Cmd.DROP, Cmd.STAT, Cmd.USAGE]);

function flags(r: Rng): number {
  if (r.chance(0.75)) return 0;
  // Extension bits count only with the marker; random values (almost never the marker) must be
  // ignored like any reserved value.
  return r.chance(0.5)
    ? withExt(Flag.KEEP_ALIVE)
    : r.chance(0.5)
    ? withExt(Flag.WAIT)
    : r.chance(0.5)
    ? r.u32()
    : Flag.KEEP_ALIVE;
}

interface Built {
  header: Header;
  body: Uint8Array;
  fds: FdSpec[];
  /** Names and job ids obey the name rule: a PUT like this must be accepted. */
  clean: boolean;
}

function header(h: Partial<Header>): Header {
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
    ...h,
  };
}

/** A well-formed request of a random command (a PUT carries a good sealed memfd). */
function validRequest(r: Rng, index: number): Built {
  const cmd = r.pick([Cmd.PUT, Cmd.PUT, Cmd.PUT, Cmd.GET, Cmd.GET, Cmd.LIST, Cmd.DROP, Cmd.STAT]);
  if (cmd === Cmd.PUT) {
    const name = pickName(r);
    const content = r.bytes(r.chance(0.5) ? r.int(64) : r.int(BODY_CAP));
    const digest = enc.encode(digestBytes(content));
    const job = maybeJob(r, 0.3);
    const allow = job.length > 0 && r.chance(0.3) ? r.pick(JOBS) : new Uint8Array(0);
    return {
      header: header({
        cmd,
        size: BigInt(content.length),
        nameLen: name.length,
        textLen: DIGEST_LEN,
        jobLen: job.length,
        allowLen: allow.length,
        reserved: r.chance(0.2) ? withExt(Flag.KEEP_ALIVE) : 0,
      }),
      body: concat(name, digest, job, allow),
      fds: [{ kind: "memfd", content, seals: Seal.IMMUTABLE }],
      // The name rule (issue 10): no NUL or other control byte, valid UTF-8.
      clean: !name.includes(0) && !job.includes(0) && nameProblem(name, "object name") === null &&
        nameProblem(job, "job id") === null && nameProblem(allow, "allowed job id") === null,
    };
  }
  const job = maybeJob(r, 0.3);
  if (cmd === Cmd.LIST) {
    return { header: header({ cmd, jobLen: job.length }), body: job, fds: [], clean: false };
  }
  const byName = r.chance(0.5);
  const name = byName ? pickName(r) : new Uint8Array(0);
  const id = byName ? 0n : BigInt(1 + r.int(Math.max(4, index / 3)));
  let flagBits = r.chance(0.2) ? Flag.KEEP_ALIVE : 0;
  let size = 0n;
  if (byName && cmd !== Cmd.DROP && r.chance(0.1)) {
    flagBits |= Flag.WAIT;
    size = BigInt(r.int(60));
  }
  return {
    header: header({
      cmd,
      objectId: id,
      nameLen: name.length,
      jobLen: job.length,
      reserved: withExt(flagBits),
      size,
    }),
    body: concat(name, job),
    fds: [],
    clean: false,
  };
}

function randomFd(r: Rng): FdSpec {
  switch (r.int(8)) {
    case 0:
      return { kind: "pipe" };
    case 1:
      return { kind: "eventfd" };
    case 2:
      return { kind: "socket" };
    case 3:
      return { kind: "memfd", content: r.bytes(r.int(100)), seals: 0 };
    case 4:
      return { kind: "memfd", content: r.bytes(r.int(100)), seals: r.int(32) };
    default:
      return { kind: "memfd", content: r.bytes(r.int(100)), seals: Seal.IMMUTABLE };
  }
}

function randomFds(r: Rng): FdSpec[] {
  const n = r.chance(0.6) ? 0 : r.chance(0.6) ? 1 : r.chance(0.6) ? 2 : 3;
  return Array.from({ length: n }, () => randomFd(r));
}

function setField(h: Header, r: Rng): void {
  switch (r.int(10)) {
    case 0:
      h.cmd = notTakeover(r.chance(0.5) ? r.int(8) : r.u32() & 0xffff);
      break;
    case 1:
      h.jobLen = r.pick(LENGTHS);
      break;
    case 2:
      h.nameLen = r.pick(LENGTHS);
      break;
    case 3:
      h.textLen = r.pick(LENGTHS);
      break;
    case 4:
      h.allowLen = r.pick(LENGTHS);
      break;
    case 5:
      h.objectId = r.pick(U64S);
      break;
    case 6:
      h.size = r.pick(U64S);
      break;
    case 7:
      h.reserved = r.u32();
      break;
    case 8:
      h.status = r.u32();
      break;
    default:
      h.version = r.chance(0.5) ? 0 : r.u32() & 0xffff;
  }
}

/** Split bytes into 1..4 chunks; descriptors go on the first chunk unless moved. */
function split(r: Rng, bytes: Uint8Array, fds: FdSpec[]): Chunk[] {
  if (bytes.length < 2 || r.chance(0.7)) return [{ bytes, fds }];
  const cuts = new Set<number>();
  const n = 1 + r.int(3);
  for (let i = 0; i < n; i++) cuts.add(1 + r.int(bytes.length - 1));
  const points = [0, ...[...cuts].sort((a, b) => a - b), bytes.length];
  const chunks: Chunk[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const start = points[i] ?? 0;
    const end = points[i + 1] ?? bytes.length;
    chunks.push({ bytes: bytes.subarray(start, end), fds: [] });
  }
  const at = r.chance(0.8) ? 0 : r.int(chunks.length);
  const target = chunks[at];
  if (target !== undefined) chunks[at] = { bytes: target.bytes, fds };
  // Sometimes extra descriptors ride on a later chunk too.
  if (r.chance(0.2)) {
    const k = r.int(chunks.length);
    const c = chunks[k];
    if (c !== undefined) chunks[k] = { bytes: c.bytes, fds: [...c.fds, ...randomFds(r)] };
  }
  return chunks;
}

/** The descriptor the broker keeps: the first one sent while the header is incomplete. */
function firstFdWithHeader(chunks: readonly Chunk[]): FdSpec | undefined {
  let off = 0;
  for (const c of chunks) {
    if (off >= HEADER_SIZE) return undefined;
    if (c.fds.length > 0) return c.fds[0];
    off += c.bytes.length;
  }
  return undefined;
}

function endingFor(r: Rng, complete: boolean): Ending {
  if (complete) return r.chance(0.8) ? "wait" : r.chance(0.5) ? "shutdown" : "close";
  return r.chance(0.75) ? "shutdown" : r.chance(0.85) ? "close" : "stall";
}

/** The body a header declares: structured or random bytes, possibly short or long. */
function bodyFor(r: Rng, h: Header): { body: Uint8Array; complete: boolean } {
  const declared = h.nameLen + h.textLen + h.jobLen + h.allowLen;
  if (declared <= BODY_CAP && r.chance(0.75)) {
    const body = r.bytes(declared);
    if (r.chance(0.5) && h.textLen === DIGEST_LEN) {
      body.set(enc.encode(digestBytes(r.bytes(4))), Math.min(h.nameLen, declared - DIGEST_LEN));
    }
    return { body, complete: true };
  }
  const n = r.int(Math.min(declared, BODY_CAP) + 1);
  return { body: r.bytes(n), complete: n >= declared };
}

/** Case `index` of `seed`. */
export function makeCase(seed: number, index: number): FuzzCase {
  const r = caseRng(seed, index);
  const strategy = r.int(100);
  if (strategy < 22) {
    // A valid request, possibly split, possibly followed by trailing bytes.
    const b = validRequest(r, index);
    const trailing = r.chance(0.1) ? r.bytes(1 + r.int(100)) : new Uint8Array(0);
    const bytes = concat(encodeHeader(b.header), b.body, trailing);
    const fds = r.chance(0.8) ? b.fds : randomFds(r);
    const ending = endingFor(r, true);
    const chunks = split(r, bytes, fds);
    const goodPut = b.header.cmd === Cmd.PUT && b.clean && firstFdWithHeader(chunks) === b.fds[0];
    return {
      index,
      label: `valid-${b.header.cmd}`,
      chunks,
      ending,
      ...(goodPut && ending !== "close" ? { expect: { status: 0, text: "", cmd: Cmd.PUT } } : {}),
    };
  }
  if (strategy < 40) {
    // Bit flips of a valid request.
    const b = validRequest(r, index);
    const bytes = concat(encodeHeader(b.header), b.body);
    const flips = 1 + r.int(4);
    for (let i = 0; i < flips; i++) {
      const pos = r.chance(0.7) ? r.int(HEADER_SIZE) : r.int(bytes.length);
      bytes[pos] = (bytes[pos] ?? 0) ^ (1 << r.int(8));
    }
    avoidTakeover(bytes);
    const h = decodeHeader(bytes);
    const complete = bytes.length - HEADER_SIZE >= h.nameLen + h.textLen + h.jobLen + h.allowLen;
    return {
      index,
      label: "bitflip",
      chunks: split(r, bytes, r.chance(0.8) ? b.fds : randomFds(r)),
      ending: endingFor(r, complete),
    };
  }
  if (strategy < 55) {
    // A valid request with one header field set to an interesting value.
    const b = validRequest(r, index);
    const h = { ...b.header };
    setField(h, r);
    if (r.chance(0.3)) setField(h, r);
    const { body, complete } = r.chance(0.5)
      ? { body: b.body, complete: b.body.length >= h.nameLen + h.textLen + h.jobLen + h.allowLen }
      : bodyFor(r, h);
    return {
      index,
      label: "field",
      chunks: split(r, concat(encodeHeader(h), body), r.chance(0.7) ? b.fds : randomFds(r)),
      ending: endingFor(r, complete),
    };
  }
  if (strategy < 72) {
    // Valid magic and version, random command and lengths, structured or random body.
    const h = header({
      cmd: notTakeover(r.chance(0.8) ? r.int(8) : r.u32() & 0xffff),
      status: r.chance(0.9) ? 0 : r.u32(),
      jobLen: r.chance(0.5) ? r.pick(LENGTHS) : r.int(300),
      objectId: r.chance(0.5) ? r.pick(U64S) : r.u64(),
      size: r.chance(0.5) ? r.pick(U64S) : r.u64(),
      nameLen: r.chance(0.5) ? r.pick(LENGTHS) : r.int(300),
      textLen: r.chance(0.5) ? r.pick(LENGTHS) : r.int(300),
      allowLen: r.chance(0.5) ? r.pick(LENGTHS) : r.int(300),
      reserved: flags(r),
    });
    const { body, complete } = bodyFor(r, h);
    const unknown = !KNOWN.has(h.cmd);
    const ending = endingFor(r, complete);
    return {
      index,
      label: "random-header",
      chunks: split(r, concat(encodeHeader(h), body), randomFds(r)),
      ending: unknown && ending === "stall" ? "shutdown" : ending,
      ...(unknown && ending !== "close"
        ? { expect: { status: 3, text: Text.unknownCommand, cmd: h.cmd } }
        : {}),
    };
  }
  if (strategy < 84) {
    // A valid request cut short, then half-closed, closed or left hanging.
    const b = validRequest(r, index);
    const bytes = concat(encodeHeader(b.header), b.body);
    const cut = r.chance(0.5) ? r.int(HEADER_SIZE) : r.int(bytes.length);
    return {
      index,
      label: `truncated-${cut < HEADER_SIZE ? "header" : "body"}`,
      chunks: split(r, bytes.subarray(0, cut), cut === 0 ? [] : b.fds),
      ending: endingFor(r, false),
    };
  }
  if (strategy < 94) {
    // Garbage: random bytes, usually not a valid header at all.
    const bytes = r.bytes(r.int(r.chance(0.5) ? 60 : 400));
    const badHeader = bytes.length >= HEADER_SIZE && !isValidHeader(decodeHeader(bytes));
    const ending = endingFor(r, badHeader);
    return {
      index,
      label: "garbage",
      chunks: split(r, bytes, randomFds(r)),
      ending,
      ...(badHeader && ending !== "close"
        ? { expect: { status: 3, text: Text.badHeader, cmd: 0 } }
        : {}),
    };
  }
  // A PUT whose descriptor is hostile or whose claimed size is huge.
  const b = validRequest(r, index);
  const h = b.header.cmd === Cmd.PUT ? { ...b.header } : header({ cmd: Cmd.PUT });
  const name = enc.encode("hostile");
  const content = r.bytes(r.int(64));
  const digest = enc.encode(digestBytes(content));
  h.nameLen = name.length;
  h.textLen = DIGEST_LEN;
  h.jobLen = 0;
  h.allowLen = 0;
  h.size = r.chance(0.3) ? r.pick(U64S) : BigInt(content.length);
  const fdChoice = r.int(5);
  const fds: FdSpec[] = fdChoice === 0
    ? [{ kind: "memfd", content, seals: Seal.IMMUTABLE }, randomFd(r), randomFd(r)]
    : fdChoice === 1
    ? [{ kind: "memfd", content, seals: r.int(16) }]
    : fdChoice === 2
    ? []
    : [randomFd(r)];
  return {
    index,
    label: "hostile-fd",
    chunks: split(r, concat(encodeHeader(h), name, digest), fds),
    ending: endingFor(r, true),
  };
}

// ---- running ---------------------------------------------------------------------------------

function createFd(spec: FdSpec): number {
  switch (spec.kind) {
    case "pipe": {
      const [a, b] = makePipe();
      closeQuietly(b);
      return a;
    }
    case "eventfd":
      return makeEventfd();
    case "socket":
      return makeSocket();
    case "memfd": {
      const m = Memfd.create("fuzz");
      if (spec.content.length > 0) m.writeAll(spec.content);
      m.seek(0);
      if (spec.seals !== 0) m.addSeals(spec.seals & 0x1f);
      return m.release();
    }
  }
}

/** Bounds of one run. */
export interface FuzzBounds {
  /** Longest a case may wait for its reply or close (ms). */
  readonly replyMs: number;
  /** Longest a broker may take to close after a final reply (ms). */
  readonly closeMs: number;
}

/** What one case did. */
export interface CaseOutcome {
  /** Null when every invariant held, else what went wrong. */
  readonly problem: string | null;
  /** A whole header reached the broker, so it owes one audit record. */
  readonly headerSent: boolean;
  /**
   * A GET/STAT --wait whose client half-closed or closed: if the broker parked it, it hangs up
   * without a reply or an audit record (see {@link isParkedWait} and fault_slow_test.ts).
   */
  readonly abandonedWait: boolean;
}

/**
 * True for a request the broker parks (GET or STAT by name with the WAIT bit) when the name
 * does not exist yet.
 */
export function isParkedWait(req: Uint8Array, sent: number): boolean {
  if (sent < HEADER_SIZE) return false;
  const h = decodeHeader(req);
  return isValidHeader(h) && (h.cmd === Cmd.GET || h.cmd === Cmd.STAT) && h.nameLen > 0 &&
    h.objectId === 0n && (extFlags(h.reserved) & Flag.WAIT) !== 0;
}

/** Run one case against the broker at `socket`. */
export async function runCase(
  socket: string,
  c: FuzzCase,
  bounds: FuzzBounds,
): Promise<CaseOutcome> {
  const state = { sent: 0, req: new Uint8Array(HEADER_SIZE), abandoned: false };
  const problem = await runCaseInner(socket, c, bounds, state);
  return {
    problem,
    headerSent: state.sent >= HEADER_SIZE,
    abandonedWait: state.abandoned,
  };
}

async function runCaseInner(
  socket: string,
  c: FuzzCase,
  bounds: FuzzBounds,
  state: { sent: number; req: Uint8Array; abandoned: boolean },
): Promise<string | null> {
  let conn: Connection;
  try {
    conn = await Connection.connect(socket, 5000);
  } catch (e) {
    return `connect failed: ${(e as Error).message}`;
  }
  try {
    let sent = 0;
    let sendFailed = false;
    const firstBytes = state.req;
    for (const chunk of c.chunks) {
      const fds = chunk.fds.map(createFd);
      try {
        await conn.send(chunk.bytes, performance.now() + bounds.replyMs, "send", fds);
        if (sent < HEADER_SIZE) {
          firstBytes.set(chunk.bytes.subarray(0, HEADER_SIZE - sent), sent);
        }
        sent += chunk.bytes.length;
        state.sent = sent;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code !== "EPIPE" && code !== "ECONNRESET") {
          return `send failed: ${(e as Error).message}`;
        }
        sendFailed = true;
        break;
      } finally {
        closeAll(fds);
      }
    }
    if (c.ending === "close") {
      state.abandoned = isParkedWait(firstBytes, sent);
      return null;
    }
    if (c.ending === "shutdown") libc.symbols.shutdown(conn.fd, SHUT_WR);
    let x: Exchange;
    try {
      x = await readOneReply(conn, performance.now() + bounds.replyMs);
    } catch (e) {
      if (isTimeout(e)) return `no reply and no close within ${bounds.replyMs} ms (hang)`;
      return `bad reply: ${(e as Error).message}`;
    }
    if (x.kind === "closed") {
      if (c.ending === "shutdown" && isParkedWait(firstBytes, sent)) {
        state.abandoned = true;
        return null;
      }
      if (sent >= HEADER_SIZE && !sendFailed) {
        return "a whole header was sent but the broker closed without a reply";
      }
      if (c.expect !== undefined) return `expected ${c.expect.text || "OK"}, got a close`;
      return null;
    }
    try {
      const problem = checkReply(firstBytes, sent, x);
      if (problem !== null) return problem;
      const h = x.header;
      if (h === null) return "no header";
      if (c.expect !== undefined) {
        const got = `${h.status}/${h.status === 0 ? "" : x.text}/cmd=${h.cmd}`;
        const want = `${c.expect.status}/${c.expect.text}/cmd=${c.expect.cmd}`;
        if (got !== want) return `expected ${want}, got ${got}`;
      }
      if ((extFlags(h.reserved) & Flag.KEEP_ALIVE) === 0) {
        // Without keep-alive the reply is the last thing on the connection.
        try {
          const more = await readOneReply(conn, performance.now() + bounds.closeMs);
          closeAll(more.fds);
          if (more.kind === "reply") return "a second reply after a final one";
        } catch (e) {
          if (isTimeout(e)) {
            return `the broker did not close within ${bounds.closeMs} ms of replying`;
          }
          return `bytes after the final reply: ${(e as Error).message}`;
        }
      }
      return null;
    } finally {
      closeAll(x.fds);
    }
  } finally {
    conn.close();
  }
}

/** Protocol invariants of one reply to a request whose first bytes are `req`. */
export function checkReply(req: Uint8Array, sent: number, x: Exchange): string | null {
  const h = x.header;
  if (h === null) return "no header";
  if (sent < HEADER_SIZE) return `a reply (${h.status} ${x.text}) to ${sent} header bytes`;
  const rq = decodeHeader(req);
  if (h.status > 4) return `status ${h.status}`;
  if (h.status !== 0) {
    if (!isKnownText(x.text)) return `unknown error text ${JSON.stringify(x.text)}`;
    if (
      h.nameLen !== 0 || h.objectId !== 0n || h.size !== 0n || h.allowLen !== 0 || h.jobLen !== 0
    ) {
      return `error reply with non-zero fields: ${
        JSON.stringify(h, (_k, v) => typeof v === "bigint" ? String(v) : v)
      }`;
    }
    if (x.fds.length > 0) return `${x.fds.length} descriptors with an error reply`;
    if (x.text === Text.badHeader) {
      if (isValidHeader(rq)) return "invalid protocol header for a valid header";
      if (h.cmd !== 0) return `bad-header reply with cmd ${h.cmd}`;
      return null;
    }
    if (!isValidHeader(rq)) return `a valid-header reply (${x.text}) to an invalid header`;
    if (x.text === Text.clientQuota || x.text === Text.fdLimit) {
      return `unexpected ${x.text} (a leak of connections or descriptors?)`;
    }
    if (h.cmd !== rq.cmd) return `reply cmd ${h.cmd} to request cmd ${rq.cmd}`;
    const unknown = !KNOWN.has(rq.cmd);
    if (unknown !== (x.text === Text.unknownCommand)) {
      return `cmd ${rq.cmd} answered ${JSON.stringify(x.text)}`;
    }
    return null;
  }
  if (!isValidHeader(rq)) return "a success reply to an invalid header";
  if (h.cmd !== rq.cmd) return `OK reply cmd ${h.cmd} to request cmd ${rq.cmd}`;
  switch (h.cmd) {
    case Cmd.GET: {
      if (x.fds.length !== 1) return `GET OK with ${x.fds.length} descriptors`;
      if (h.textLen !== DIGEST_LEN || h.nameLen === 0) return "GET OK without name or digest";
      const digest = x.body.subarray(h.nameLen);
      if (!isValidDigest(digest)) return "GET OK with a malformed digest";
      const fd = x.fds[0] ?? -1;
      const st = fstat(fd);
      if (st.size !== h.size) return `GET fd size ${st.size} != reply size ${h.size}`;
      if ((getSeals(fd) & SEALS_IMMUTABLE) !== SEALS_IMMUTABLE) return "GET fd is not sealed";
      // O_RDWR as from the C broker: the seals, not the access mode, refuse writes.
      if (accessMode(fd) !== 2) return "GET fd is not O_RDWR";
      const got = digestBytes(readAllAt(fd, Number(h.size)));
      if (got !== new TextDecoder("latin1").decode(digest)) return "GET fd content != digest";
      return null;
    }
    case Cmd.PUT:
      if (x.fds.length > 0) return "descriptors with a PUT reply";
      if (h.objectId === 0n || h.size !== rq.size) return "PUT OK without id or size";
      return null;
    case Cmd.DROP:
      if (x.fds.length > 0) return "descriptors with a DROP reply";
      if (h.objectId === 0n) return "DROP OK without id";
      return null;
    case Cmd.LIST:
      if (x.fds.length > 0) return "descriptors with a LIST reply";
      return null;
    case Cmd.STAT:
      if (x.fds.length > 0) return "descriptors with a STAT reply";
      try {
        JSON.parse(x.text);
      } catch {
        return `STAT text is not JSON: ${x.text}`;
      }
      return null;
    case Cmd.USAGE:
      // One bit flip turns a DROP (0x004) into a USAGE (0x104): answered with JSON text.
      if (x.fds.length > 0) return "descriptors with a USAGE reply";
      try {
        JSON.parse(x.text);
      } catch {
        return `USAGE text is not JSON: ${x.text}`;
      }
      return null;
    default:
      return `success for cmd ${h.cmd}`;
  }
}

/** A failed case. */
export interface Violation {
  readonly index: number;
  readonly label: string;
  readonly problem: string;
}

/** What {@link runRange} did. */
export interface RangeResult {
  /** Cases run. */
  readonly ran: number;
  /** Cases that delivered a whole header (each owes the audit log a record). */
  readonly headers: number;
  /** Parked waits whose client half-closed. */
  readonly abandoned: number;
  /** Failed cases. */
  readonly violations: Violation[];
}

/** Run cases [from, to) with `concurrency` at once; returns the violations. */
export async function runRange(
  socket: string,
  seed: number,
  from: number,
  to: number,
  opts: { concurrency: number; bounds: FuzzBounds; stopAfter?: number; until?: number },
): Promise<RangeResult> {
  let next = from;
  let ran = 0;
  let headers = 0;
  let abandoned = 0;
  const violations: Violation[] = [];
  const stopAfter = opts.stopAfter ?? 20;
  const worker = async (): Promise<void> => {
    while (next < to && violations.length < stopAfter) {
      if (opts.until !== undefined && performance.now() >= opts.until) return;
      const i = next++;
      const c = makeCase(seed, i);
      const o = await runCase(socket, c, opts.bounds);
      ran++;
      if (o.headerSent) headers++;
      if (o.abandonedWait) abandoned++;
      if (o.problem !== null) violations.push({ index: i, label: c.label, problem: o.problem });
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  return { ran, headers, abandoned, violations };
}

/** The unscoped LIST text. */
export async function listText(socket: string): Promise<string> {
  const x = await exchange(socket, listRequest());
  closeAll(x.fds);
  if (x.kind !== "reply" || x.header?.status !== 0) throw new Error(`LIST failed: ${x.text}`);
  return x.text;
}

/** A parsed audit record, as far as object accounting needs it. */
export interface AuditIds {
  readonly op: unknown;
  readonly result: unknown;
  readonly object_id: unknown;
}

/**
 * The ids of the stored objects by the broker's own account: each `put ok` record adds its id,
 * each `drop ok` record removes it. (LIST text cannot be parsed back in general: names and job
 * ids may hold tabs and newlines, defect D12.)
 */
export function liveIds(records: Iterable<AuditIds>): Set<number> {
  const live = new Set<number>();
  for (const r of records) {
    if (r.result !== "ok" || typeof r.object_id !== "number") continue;
    if (r.op === "put") live.add(r.object_id);
    else if (r.op === "drop") live.delete(r.object_id);
  }
  return live;
}

/** Drop objects by id (unscoped); returns how many were dropped. */
export async function dropIds(socket: string, ids: Iterable<number>): Promise<number> {
  let n = 0;
  for (const id of ids) {
    const x = await exchange(socket, encodeHeader({ cmd: Cmd.DROP, objectId: BigInt(id) }));
    closeAll(x.fds);
    if (x.header?.status !== 0) throw new Error(`DROP ${id} failed: ${x.text}`);
    n++;
  }
  return n;
}
