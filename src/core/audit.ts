/**
 * The JSONL audit log: one compact JSON object per request with the twelve keys of the C broker
 * in their order, strings escaped exactly as it escapes them, and a buffered writer that flushes
 * before the broker sleeps.
 *
 * @module
 */

import { fromBinary } from "../protocol/bytes.ts";
import { jsonBinaryString } from "../protocol/names.ts";
import { errno, libc } from "../ffi.ts";
import { CLOCK_REALTIME, EAGAIN, EINTR } from "../sys/linux.ts";

/** What happened to a request. */
export type AuditResult = "ok" | "bad_request" | "not_found" | "forbidden" | "error";

/** The operation of a request. */
export type AuditOp =
  | "put"
  | "get"
  | "list"
  | "drop"
  | "stat"
  | "recover"
  | "takeover"
  | "unknown";

/** One audit record. Strings are binary strings (raw bytes); null prints as JSON null. */
export interface AuditRecord {
  /** The operation. */
  op: AuditOp;
  /** The outcome. */
  result: AuditResult;
  /** `"id"`, `"name"` or null. */
  selector: string | null;
  /** An object id; 0 prints as null, like the C broker. */
  objectId: bigint | number | null;
  /** An object name. */
  name: string | null;
  /** A size. */
  size: bigint | number | null;
  /** LIST line count. */
  count: number | null;
  /** A digest string. */
  digest: string | null;
  /** The caller's job (the owner job for PUT). */
  jobId: string | null;
  /** The exact error text, or null on success. */
  error: string | null;
}

/** The kernel-reported identity of the peer, added after the twelve keys when enabled. */
export interface AuditPeer {
  /** Peer process id. */
  readonly pid: number;
  /** Peer user id. */
  readonly uid: number;
  /** Peer group id. */
  readonly gid: number;
}

/** A record with every field null, to be filled in. */
export function blankRecord(op: AuditOp, result: AuditResult, error: string | null): AuditRecord {
  return {
    op,
    result,
    selector: null,
    objectId: null,
    name: null,
    size: null,
    count: null,
    digest: null,
    jobId: null,
    error,
  };
}

/**
 * Escape a binary string as a JSON string the way the C broker does: `\\ \" \b \f \n \r \t`,
 * other bytes below 0x20 as `\u00xx`, every other byte raw, and the string ends at the first NUL.
 */
export function jsonString(s: string | null): string {
  return jsonBinaryString(s);
}

function u64OrNull(v: bigint | number | null): string {
  return v === null || v === 0 || v === 0n ? "null" : String(v);
}

function countOrNull(v: bigint | number | null): string {
  return v === null ? "null" : String(v);
}

/** One audit line (a binary string ending in `\n`). */
export function formatRecord(tsNs: bigint, r: AuditRecord, peer?: AuditPeer): string {
  let line = `{"ts_ns":${tsNs},"op":"${r.op}","operation":"${r.op}","result":"${r.result}"` +
    `,"selector":${jsonString(r.selector)},"object_id":${u64OrNull(r.objectId)}` +
    `,"name":${jsonString(r.name)},"size":${countOrNull(r.size)},"count":${countOrNull(r.count)}` +
    `,"digest":${jsonString(r.digest)},"job_id":${jsonString(r.jobId)}` +
    `,"error":${jsonString(r.error)}`;
  if (peer !== undefined) {
    line += `,"peer_pid":${peer.pid},"peer_uid":${peer.uid},"peer_gid":${peer.gid}`;
  }
  return line + "}\n";
}

const tsBuf = new BigInt64Array(2);
const tsBytes = new Uint8Array(tsBuf.buffer);

/** CLOCK_REALTIME in nanoseconds (0 if the clock call fails, like the C broker). */
export function realtimeNs(): bigint {
  if (libc.symbols.clock_gettime(CLOCK_REALTIME, tsBytes) !== 0) return 0n;
  const sec = tsBuf[0] ?? 0n;
  const nsec = tsBuf[1] ?? 0n;
  if (sec < 0n || nsec < 0n) return 0n;
  return sec * 1_000_000_000n + nsec;
}

/**
 * Buffers audit lines and writes them to a descriptor (stdout by default) in one write per
 * {@link AuditLog.flush}. A closed or broken output never kills the broker (defect D22): the
 * first failure is reported once on stderr and logging stops.
 */
export class AuditLog {
  readonly #fd: number;
  #pending = "";
  #broken = false;
  /** When set, each record carries the peer's pid, uid and gid. */
  withPeer = false;
  /** Lines handed to the log (whether or not they could be written). */
  records = 0;

  /**
   * @param fd the descriptor to write to; negative for no log at all
   */
  constructor(fd = 1) {
    this.#fd = fd;
  }

  /** Queue one record, time-stamped now. */
  record(r: AuditRecord, peer?: AuditPeer): void {
    this.records++;
    if (this.#broken || this.#fd < 0) return;
    this.#pending += formatRecord(realtimeNs(), r, this.withPeer ? peer : undefined);
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
        const pollfd = new Uint8Array(8);
        new DataView(pollfd.buffer).setInt32(0, this.#fd, true);
        new DataView(pollfd.buffer).setInt16(4, 0x4, true);
        libc.symbols.poll(pollfd, 1n, 100);
        continue;
      }
      this.#broken = true;
      console.error(`memfdbus: audit log write failed (errno ${e}); audit records are dropped`);
      return;
    }
  }
}
