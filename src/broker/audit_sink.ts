/**
 * Where the broker's audit records go: a buffered writer to a descriptor (stdout by default) that
 * the loop flushes before it sleeps, or a callback per line, or nowhere. The record format itself
 * is pure and lives in `src/core/audit.ts`; this module adds the time stamp, the peer fields and
 * the writing.
 *
 * Diagnostics that are not audit records (the audit output itself broke, an internal error) go to
 * a {@link Diagnostics} function the embedder can replace; the default writes a line to stderr.
 *
 * @module
 */

import { type AuditPeer, type AuditRecord, droppedRecord, formatRecord } from "../core/audit.ts";
import {
  AuditBudget,
  type AuditBudgetRules,
  Charge,
  type DroppedSummary,
  droppedText,
} from "../core/audit_budget.ts";
import { fromBinary } from "../protocol/bytes.ts";
import { errno, errnoErrorOf, libc } from "../ffi.ts";
import { isRegular, pollOne, tryFstat } from "../sys/fd.ts";
import { realtimeNs } from "../sys/clock.ts";
import { EAGAIN, EINTR, POLLOUT } from "../sys/linux.ts";
import type { BrokerCounters } from "./counters.ts";

/**
 * Where audit records go: a descriptor (stdout is 1), a callback per line, or nowhere.
 *
 * @example Collecting the audit records of an in-process broker
 * ```ts
 * import { Broker, Client } from "@memfdbus/memfdbus";
 * const dir = Deno.makeTempDirSync();
 * const records: string[] = [];
 * {
 *   await using broker = await Broker.start({
 *     socket: `${dir}/bus.sock`,
 *     audit: (line) => records.push(line), // or 1 (stdout, the default), 2, or null
 *   });
 *   await using client = new Client({ socket: broker.socket });
 *   await client.list();
 * }
 * console.log(records[0]); // memfdbus broker listening on .../bus.sock
 * console.log(JSON.parse(records[1] ?? "{}").op); // "list"
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export type AuditSink = number | ((line: string) => void) | null;

/** Receives one diagnostic line (no trailing newline) meant for the operator. */
export type Diagnostics = (message: string) => void;

const encoder = new TextEncoder();

/** The most one diagnostic line writes to stderr at a time: what a pipe takes whole (PIPE_BUF). */
const DIAGNOSTIC_SLICE = 4096;

/** Diagnostic lines stderr could not take, not yet reported. */
let diagnosticsDropped = 0;

/**
 * The default {@link Diagnostics}: one line on stderr; a broken stderr is ignored. The line is
 * written only as far as stderr takes it now (polled, at most 4 KiB per write), never waiting:
 * a stderr pipe nobody drains (a stalled journal, `2>&1` into a stalled audit reader) froze the
 * whole broker in write(2) at the first summary of a uid over its audit budget. A line stderr
 * cannot take is dropped and counted; the next one that fits says how many were lost.
 */
export function stderrDiagnostics(message: string): void {
  try {
    if (!pollOne(2, POLLOUT, 0)) {
      diagnosticsDropped++;
      return;
    }
    const lost = diagnosticsDropped;
    diagnosticsDropped = 0;
    const text = lost > 0
      ? `memfdbus broker: stderr stalled: ${lost} diagnostic lines were dropped\n${message}\n`
      : message + "\n";
    const bytes = encoder.encode(text);
    for (let off = 0; off < bytes.length;) {
      if (off > 0 && !pollOne(2, POLLOUT, 0)) return;
      const part = bytes.subarray(off, off + DIAGNOSTIC_SLICE);
      const n = libc.symbols.write(2, part, BigInt(part.length));
      if (n < 0) {
        if (errno() === EINTR) continue;
        return;
      }
      off += Number(n);
    }
  } catch {
    // Nowhere left to report to.
  }
}

/** What an {@link AuditLog} needs besides its descriptor. */
export interface AuditLogOptions {
  /** The time stamp of a record, in ns; CLOCK_REALTIME by default. */
  readonly clock?: () => bigint;
  /** Where the one report of a broken output, and of dropped records, goes; stderr by default. */
  readonly report?: Diagnostics;
  /** Most bytes held for an output that does not keep up (default {@link AUDIT_BUFFER_BYTES}). */
  readonly bufferBytes?: number;
  /** Told the number of records dropped each time some are (the broker's counters). */
  readonly onDropped?: (count: number) => void;
}

/** Bytes of audit lines held for an output that does not keep up, by default (4 MiB). */
export const AUDIT_BUFFER_BYTES = 4 << 20;

/**
 * The most a write to a pipe, socket or terminal is given at once: at most PIPE_BUF bytes are
 * written only when poll says the output is writable, so the write cannot block (a pipe that
 * polls writable has room for PIPE_BUF bytes, written atomically).
 */
const WRITE_SLICE = 4096;

const NOT_ASCII = /[\u0080-\uffff]/;
const asciiEncoder = new TextEncoder();

/**
 * Buffers audit lines and writes them to a descriptor (stdout by default). The event loop is
 * never blocked by the output: {@link AuditLog.flush} writes only while poll says the output is
 * writable, and a reader that stalls (a pipe nobody reads, a terminal on hold) only makes lines
 * wait, up to a bound ({@link AUDIT_BUFFER_BYTES}); past it new records are dropped and counted.
 * Once the output takes everything held again, one diagnostic line says how many were dropped
 * (`memfdbus broker: the audit output stalled: 12 audit records were dropped`), and the count
 * goes to the broker's counters. A closed or broken output never kills the broker (defect D22):
 * the first failure is reported once and logging stops.
 */
export class AuditLog {
  readonly #fd: number;
  readonly #clock: () => bigint;
  readonly #report: Diagnostics;
  readonly #bound: number;
  readonly #onDropped: (count: number) => void;
  /** Lines not encoded yet (binary strings). */
  #pending = "";
  /** Encoded bytes waiting for the output, oldest first; the first is written from #offset. */
  readonly #queue: Uint8Array[] = [];
  #offset = 0;
  #queued = 0;
  #dropped = 0;
  #broken = false;
  /** Regular files never block: they get whole writes; anything else gets polled slices. */
  readonly #slice: number;
  /** When set, each record carries the peer's pid, uid and gid. */
  withPeer = false;
  /** Lines handed to the log (whether or not they could be written). */
  records = 0;

  /**
   * @param fd the descriptor to write to; negative for no log at all
   * @param options clock, reports and the buffer bound
   */
  constructor(fd = 1, options: AuditLogOptions = {}) {
    this.#fd = fd;
    this.#clock = options.clock ?? realtimeNs;
    this.#report = options.report ?? stderrDiagnostics;
    this.#bound = options.bufferBytes ?? AUDIT_BUFFER_BYTES;
    this.#onDropped = options.onDropped ?? (() => {});
    const st = fd >= 0 ? tryFstat(fd) : -1;
    this.#slice = typeof st !== "number" && isRegular(st.mode) ? Infinity : WRITE_SLICE;
  }

  /** True while lines wait for the output (the loop then comes back to flush them). */
  get waiting(): boolean {
    return !this.#broken && (this.#queued > 0 || this.#pending !== "");
  }

  /** Records dropped since the output last caught up. */
  get dropped(): number {
    return this.#dropped;
  }

  #append(line: string): void {
    if (this.#queued + this.#pending.length + line.length > this.#bound) {
      // Full: first hand the output what it takes now (all of it, for a regular file, which
      // never blocks), so that a burst within one loop turn (one uid's records included) does
      // not cost other records their place; only an output that really stalls drops.
      this.flush();
    }
    if (this.#queued + this.#pending.length + line.length > this.#bound) {
      this.#dropped++;
      this.#onDropped(1);
      return;
    }
    this.#pending += line;
  }

  /** Queue one record, time-stamped now. */
  record(r: AuditRecord, peer?: AuditPeer): void {
    this.records++;
    if (this.#broken || this.#fd < 0) return;
    this.#append(formatRecord(this.#clock(), r, this.withPeer ? peer : undefined));
  }

  /** True while lines handed to {@link AuditLog.append} can still be written. */
  get open(): boolean {
    return !this.#broken && this.#fd >= 0;
  }

  /** Queue one formatted record (a binary string ending in a newline); see {@link open}. */
  append(line: string): void {
    if (!this.#broken && this.#fd >= 0) this.#append(line);
  }

  /** Queue a raw line (the startup line). */
  line(text: string): void {
    if (!this.#broken && this.#fd >= 0) this.#append(text + "\n");
  }

  /**
   * At stop: write everything held, waiting for the output up to `timeoutMs` in all (a reader
   * that is merely slow still gets every record; one that never reads cannot hold the exit up).
   */
  drain(timeoutMs: number): void {
    const end = performance.now() + timeoutMs;
    for (;;) {
      this.flush();
      const left = end - performance.now();
      if (!this.waiting || left <= 0) return;
      pollOne(this.#fd, POLLOUT, Math.ceil(Math.min(left, 100)));
    }
  }

  /** Write what the output takes now without blocking; the rest waits for the next flush. */
  flush(): void {
    if (this.#broken) return;
    if (this.#pending !== "") {
      // Lines are binary strings; when every byte is ASCII (the usual case) the native UTF-8
      // encoder gives the same bytes, much faster than copying them one by one.
      const pending = this.#pending;
      const bytes = NOT_ASCII.test(pending) ? fromBinary(pending) : asciiEncoder.encode(pending);
      this.#pending = "";
      this.#queue.push(bytes);
      this.#queued += bytes.length;
    }
    while (this.#queue.length > 0) {
      const head = this.#queue[0] ?? new Uint8Array(0);
      if (this.#slice !== Infinity && !pollOne(this.#fd, POLLOUT, 0)) return;
      const part = head.subarray(this.#offset, this.#offset + Math.min(this.#slice, head.length));
      const n = libc.symbols.write(this.#fd, part, BigInt(part.length));
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e === EAGAIN) return; // a nonblocking output that is full: later
        this.#broken = true;
        const err = errnoErrorOf("write", e);
        this.#report(
          `memfdbus: audit log write failed (${err.code}: ${err.description}); ` +
            "audit records are dropped",
        );
        return;
      }
      this.#offset += Number(n);
      this.#queued -= Number(n);
      if (this.#offset >= head.length) {
        this.#queue.shift();
        this.#offset = 0;
      }
    }
    if (this.#dropped > 0) {
      this.#report(
        `memfdbus broker: the audit output stalled: ${this.#dropped} audit records were dropped`,
      );
      this.#dropped = 0;
    }
  }
}

/** How an {@link AuditOutput} is set up. */
export interface AuditOutputOptions {
  /** Add the peer's pid, uid and gid to each record. */
  readonly withPeer: boolean;
  /** Counted per record, whether or not it is written. */
  readonly counters: BrokerCounters;
  /** Where a broken output is reported. */
  readonly report: Diagnostics;
  /** The time stamp of a record, in ns. */
  readonly clock?: () => bigint;
  /**
   * The per-uid audit budget (`src/core/audit_budget.ts`), or none: every record is written.
   * Records with a peer whose uid is not exempt are charged their length.
   */
  readonly budget?: AuditBudgetRules;
  /**
   * The event loop's last clock reading (performance.now(), ms), which the budget reads: the
   * loop takes one per turn, and no record takes another.
   */
  readonly now?: () => number;
}

/** The broker's audit destination: the descriptor writer or the embedder's callback. */
export class AuditOutput {
  readonly #log: AuditLog;
  readonly #callback: ((line: string) => void) | null;
  readonly #clock: () => bigint;
  readonly #counters: BrokerCounters;
  readonly #report: Diagnostics;
  readonly #budget: AuditBudget | null;
  readonly #now: () => number;
  /** True when records carry the peer's credentials (then sessions look them up). */
  readonly withPeer: boolean;

  /**
   * @param sink descriptor, callback or null
   * @param options peer fields, counters, diagnostics
   */
  constructor(sink: AuditSink, options: AuditOutputOptions) {
    this.#clock = options.clock ?? realtimeNs;
    this.#callback = typeof sink === "function" ? sink : null;
    const counters = options.counters;
    this.#log = new AuditLog(typeof sink === "number" ? sink : -1, {
      clock: this.#clock,
      report: options.report,
      onDropped: (n) => (counters.auditDropped += n),
    });
    this.#log.withPeer = options.withPeer;
    this.withPeer = options.withPeer;
    this.#counters = options.counters;
    this.#report = options.report;
    this.#budget = options.budget === undefined ? null : new AuditBudget(options.budget);
    this.#now = options.now ?? (() => performance.now());
  }

  /** A line that is not a record (the startup line). */
  line(text: string): void {
    if (this.#callback !== null) this.#callback(text);
    else this.#log.line(text);
  }

  /**
   * One record, with the peer's credentials when the log wants them. A record of a uid over its
   * audit budget is not written (it is counted, and summed up in the uid's summary record).
   */
  record(rec: AuditRecord, peer?: AuditPeer): void {
    this.#counters.count(rec);
    const callback = this.#callback;
    const budget = this.#budget;
    if (callback === null) {
      if (budget === null || peer === undefined) return this.#log.record(rec, peer);
      this.#log.records++;
      if (!this.#log.open) return;
    }
    const line = formatRecord(this.#clock(), rec, this.withPeer ? peer : undefined);
    // The budget is charged the record's length in bytes (a line is a binary string) before it
    // joins the buffer.
    if (budget !== null && peer !== undefined && !budget.exempt(peer.uid)) {
      const charge = budget.charge(peer.uid, line.length, this.#now(), peer);
      if (charge === Charge.DROP) {
        this.#counters.auditUidDropped++;
        return;
      }
      if (charge === Charge.SUMMARY_FIRST) this.#summary(budget.takeSummary(peer.uid), budget);
    }
    if (callback !== null) callback(line.slice(0, -1));
    else this.#log.append(line);
  }

  /** Write a uid's summary of dropped records, and report it once on stderr. */
  #summary(s: DroppedSummary | null, budget: AuditBudget): void {
    if (s === null) return;
    const text = droppedText(s, budget.rate);
    const line = formatRecord(
      this.#clock(),
      droppedRecord(s.records, s.bytes, text),
      this.withPeer ? s.peer : undefined,
    );
    if (this.#callback !== null) this.#callback(line.slice(0, -1));
    else this.#log.append(line);
    this.#report(`memfdbus broker: ${text}`);
  }

  /**
   * At the broker's sweep (`now` is the loop's reading): write the summaries owed by uids over
   * their audit budget that went quiet since.
   */
  sweep(now: number): void {
    const budget = this.#budget;
    if (budget === null || budget.size === 0) return;
    for (const s of budget.sweep(now)) this.#summary(s, budget);
  }

  /** Write what the output takes now (before the loop sleeps, at each sweep, and at the end). */
  flush(): void {
    this.#log.flush();
  }

  /**
   * At stop: write every summary of dropped records still owed, then everything held, waiting
   * up to `timeoutMs` for a slow output.
   */
  drain(timeoutMs: number): void {
    const budget = this.#budget;
    if (budget !== null) {
      for (const s of budget.sweep(performance.now(), true)) this.#summary(s, budget);
    }
    this.#log.drain(timeoutMs);
  }

  /**
   * True while some uid's summary of records dropped over its audit budget is not written yet
   * (the loop then keeps sweeping: {@link AuditOutput.sweep} writes it).
   */
  get owing(): boolean {
    return this.#budget !== null && this.#budget.owing > 0;
  }

  /** True while audit lines wait for a stalled output. */
  get waiting(): boolean {
    return this.#log.waiting;
  }
}
