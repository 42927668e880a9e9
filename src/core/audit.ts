/**
 * The JSONL audit record: one compact JSON object per request with the twelve keys of the C
 * broker in their order, strings escaped exactly as it escapes them. Pure: the time stamp is
 * passed in, and writing the lines is the broker's audit sink (`src/broker/audit_sink.ts`).
 *
 * @module
 */

import { jsonString } from "../protocol/json.ts";

/** Re-exported: the escaping is the protocol's (see src/protocol/json.ts). */
export { jsonString };

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
  | "release"
  | "evict"
  | "watch"
  | "usage"
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
  /**
   * Why the broker let an object go on its own (`release` and `evict` records only): written
   * after the twelve keys as `reason`, with the id of the PUT that caused it as `cause_id`.
   */
  reason?: { readonly why: string; readonly causeId: number } | undefined;
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
 * The record of an object the broker released on its own: op `release` for retention, `evict`
 * for eviction under pressure (never `drop`, which is a client's request). The twelve keys carry
 * the object as a DROP record would (id, name, size, digest, and its owner job as `job_id`);
 * `reason` and `cause_id` follow them.
 *
 * @param obj the object released
 * @param op `release` (retention) or `evict` (pressure)
 * @param reason the retention or the limit, e.g. `retention`, `broker_bytes`, `job_objects`
 * @param causeId the id of the PUT that caused it
 */
export function releaseRecord(
  obj: {
    readonly id: number;
    readonly name: string;
    readonly size: number;
    readonly digest: string;
    readonly owner: string | null;
  },
  op: "release" | "evict",
  reason: string,
  causeId: number,
): AuditRecord {
  const rec = blankRecord(op, "ok", null);
  rec.objectId = obj.id;
  rec.name = obj.name;
  rec.size = obj.size;
  rec.digest = obj.digest;
  rec.jobId = obj.owner;
  rec.reason = { why: reason, causeId };
  return rec;
}

function u64OrNull(v: bigint | number | null): string {
  return v === null || v === 0 || v === 0n ? "null" : String(v);
}

function countOrNull(v: bigint | number | null): string {
  return v === null ? "null" : String(v);
}

/**
 * The summary of a uid's records dropped over its audit budget (`src/core/audit_budget.ts`): the
 * twelve keys, op `audit`, result `dropped`, `count` the records and `size` their bytes, and the
 * error text saying whose and why, e.g.
 * `uid 65534 exceeded its audit share (1 MiB/s): 2570 records dropped`.
 */
export interface DroppedRecord extends Omit<AuditRecord, "op" | "result"> {
  /** Always `audit`: a record about the audit log itself, not a request. */
  op: "audit";
  /** Always `dropped`. */
  result: "dropped";
}

/**
 * The summary record of `records` records (`bytes` bytes) dropped, with the text `error`.
 *
 * @param records how many records were not written
 * @param bytes their bytes
 * @param error the text, e.g. `uid 65534 exceeded its audit share (1 MiB/s): 2 records dropped`
 */
export function droppedRecord(records: number, bytes: number, error: string): DroppedRecord {
  return {
    op: "audit",
    result: "dropped",
    selector: null,
    objectId: null,
    name: null,
    size: bytes,
    count: records,
    digest: null,
    jobId: null,
    error,
  };
}

/** One audit line (a binary string ending in `\n`). */
export function formatRecord(
  tsNs: bigint,
  r: AuditRecord | DroppedRecord,
  peer?: AuditPeer,
): string {
  let line = `{"ts_ns":${tsNs},"op":"${r.op}","operation":"${r.op}","result":"${r.result}"` +
    `,"selector":${jsonString(r.selector)},"object_id":${u64OrNull(r.objectId)}` +
    `,"name":${jsonString(r.name)},"size":${countOrNull(r.size)},"count":${countOrNull(r.count)}` +
    `,"digest":${jsonString(r.digest)},"job_id":${jsonString(r.jobId)}` +
    `,"error":${jsonString(r.error)}`;
  if (r.reason !== undefined) {
    line += `,"reason":${jsonString(r.reason.why)},"cause_id":${r.reason.causeId}`;
  }
  if (peer !== undefined) {
    line += `,"peer_pid":${peer.pid},"peer_uid":${peer.uid},"peer_gid":${peer.gid}`;
  }
  return line + "}\n";
}
