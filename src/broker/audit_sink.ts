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

import { type AuditPeer, type AuditRecord, formatRecord } from "../core/audit.ts";
import { fromBinary } from "../protocol/bytes.ts";
import { errno, errnoErrorOf, libc } from "../ffi.ts";
import { pollOne, writeAll } from "../sys/fd.ts";
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

/** The default {@link Diagnostics}: one line on stderr; a broken stderr is ignored. */
export function stderrDiagnostics(message: string): void {
  try {
    writeAll(2, encoder.encode(message + "\n"));
  } catch {
    // Nowhere left to report to.
  }
}

/** What an {@link AuditLog} needs besides its descriptor. */
export interface AuditLogOptions {
  /** The time stamp of a record, in ns; CLOCK_REALTIME by default. */
  readonly clock?: () => bigint;
  /** Where the one report of a broken output goes; stderr by default. */
  readonly report?: Diagnostics;
}

/**
 * Buffers audit lines and writes them to a descriptor (stdout by default) in one write per
 * {@link AuditLog.flush}. A closed or broken output never kills the broker (defect D22): the
 * first failure is reported once and logging stops.
 */
export class AuditLog {
  readonly #fd: number;
  readonly #clock: () => bigint;
  readonly #report: Diagnostics;
  #pending = "";
  #broken = false;
  /** When set, each record carries the peer's pid, uid and gid. */
  withPeer = false;
  /** Lines handed to the log (whether or not they could be written). */
  records = 0;

  /**
   * @param fd the descriptor to write to; negative for no log at all
   * @param options clock and failure report
   */
  constructor(fd = 1, options: AuditLogOptions = {}) {
    this.#fd = fd;
    this.#clock = options.clock ?? realtimeNs;
    this.#report = options.report ?? stderrDiagnostics;
  }

  /** Queue one record, time-stamped now. */
  record(r: AuditRecord, peer?: AuditPeer): void {
    this.records++;
    if (this.#broken || this.#fd < 0) return;
    this.#pending += formatRecord(this.#clock(), r, this.withPeer ? peer : undefined);
  }

  /** Queue a raw line (the startup line). */
  line(text: string): void {
    if (!this.#broken && this.#fd >= 0) this.#pending += text + "\n";
  }

  /** Write what is queued. Blocks only as long as the output itself blocks. */
  flush(): void {
    if (this.#pending === "" || this.#broken) return;
    const bytes = fromBinary(this.#pending);
    this.#pending = "";
    let off = 0;
    while (off < bytes.length) {
      const n = libc.symbols.write(this.#fd, bytes.subarray(off), BigInt(bytes.length - off));
      if (n >= 0) {
        off += Number(n);
        continue;
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) {
        // A nonblocking output that is full: wait briefly rather than drop the audit trail.
        pollOne(this.#fd, POLLOUT, 100);
        continue;
      }
      this.#broken = true;
      const err = errnoErrorOf("write", e);
      this.#report(
        `memfdbus: audit log write failed (${err.code}: ${err.description}); ` +
          "audit records are dropped",
      );
      return;
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
}

/** The broker's audit destination: the descriptor writer or the embedder's callback. */
export class AuditOutput {
  readonly #log: AuditLog;
  readonly #callback: ((line: string) => void) | null;
  readonly #clock: () => bigint;
  readonly #counters: BrokerCounters;
  /** True when records carry the peer's credentials (then sessions look them up). */
  readonly withPeer: boolean;

  /**
   * @param sink descriptor, callback or null
   * @param options peer fields, counters, diagnostics
   */
  constructor(sink: AuditSink, options: AuditOutputOptions) {
    this.#clock = options.clock ?? realtimeNs;
    this.#callback = typeof sink === "function" ? sink : null;
    this.#log = new AuditLog(typeof sink === "number" ? sink : -1, {
      clock: this.#clock,
      report: options.report,
    });
    this.#log.withPeer = options.withPeer;
    this.withPeer = options.withPeer;
    this.#counters = options.counters;
  }

  /** A line that is not a record (the startup line). */
  line(text: string): void {
    if (this.#callback !== null) this.#callback(text);
    else this.#log.line(text);
  }

  /** One record, with the peer's credentials when the log wants them. */
  record(rec: AuditRecord, peer?: AuditPeer): void {
    this.#counters.count(rec);
    if (this.#callback !== null) {
      this.#callback(
        formatRecord(this.#clock(), rec, this.withPeer ? peer : undefined).slice(0, -1),
      );
    } else this.#log.record(rec, peer);
  }

  /** Write what is buffered (before the loop sleeps, and at the end). */
  flush(): void {
    this.#log.flush();
  }
}
