/**
 * The USAGE reply body (an extension, command 0x104; a C broker answers `unknown command`): what
 * the broker, each job and each peer uid hold, next to their limits, as one compact JSON object:
 *
 * ```json
 * {"scope":"own","broker":{"objects":3,"bytes":4096,"max_objects":null,"max_bytes":null},
 *  "jobs":[{"job":"trainer","objects":2,"bytes":2048,"max_objects":10,"max_bytes":null}],
 *  "uids":[{"uid":1001,"objects":3,"bytes":4096,"max_objects":750,"max_bytes":null}]}
 * ```
 *
 * The broker and uid entries also carry `metadata_bytes` and `max_metadata_bytes`: the metadata
 * charged (name, owner and allowed job bytes plus a fixed per-object overhead) and its limit
 * (--max-metadata-bytes, or a uid's share of it; null: none). They are absent from brokers that
 * predate them, and a reader must ignore keys it does not know.
 *
 * Bytes are the bytes charged: each distinct content once (an object that shares its memfd with
 * identical content costs a holder that already holds the content nothing more). A limit of
 * null is no limit. `scope` is `all` when the caller was shown every job and uid, `own` when
 * only its own. The request is a header with `cmd` 0x104 and an optional job id (`job_len`);
 * every other field is 0. Pure: no I/O.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import { exactIntegers, isCount, jsonString } from "./json.ts";

/** What one holder (the broker, a job, a uid) holds, and its limits. */
export interface UsageEntry {
  /** Objects held. */
  readonly objects: number;
  /** Bytes charged (distinct contents). */
  readonly bytes: number;
  /** Most objects it may hold, or null for no limit. */
  readonly maxObjects: bigint | null;
  /** Most bytes it may be charged, or null for no limit. */
  readonly maxBytes: bigint | null;
  /**
   * Metadata bytes charged (names, job ids and a fixed per-object overhead; the broker and uids
   * only, absent for jobs and from brokers that predate it).
   */
  readonly metadataBytes?: number;
  /** Most metadata bytes it may be charged, or null for no limit (absent with metadataBytes). */
  readonly maxMetadataBytes?: bigint | null;
}

/** A job's usage (the job id is a binary string on the broker, text on the client). */
export interface JobUsageEntry extends UsageEntry {
  /** The job id. */
  readonly job: string;
}

/** A peer uid's usage. */
export interface UidUsageEntry extends UsageEntry {
  /** The uid, as the kernel reported it for the publisher. */
  readonly uid: number;
}

/** The whole USAGE reply. */
export interface UsageReport {
  /** `all`: every job and uid holding something (or with a quota); `own`: the caller's only. */
  readonly scope: "all" | "own";
  /** The broker: objects stored, unique bytes, --max-objects and --max-total-bytes. */
  readonly broker: UsageEntry;
  /** Jobs, in ascending byte order of their ids. */
  readonly jobs: readonly JobUsageEntry[];
  /** Uids, ascending. */
  readonly uids: readonly UidUsageEntry[];
}

function entryJson(e: UsageEntry): string {
  const meta = e.metadataBytes === undefined ? "" : `,"metadata_bytes":${e.metadataBytes},` +
    `"max_metadata_bytes":${e.maxMetadataBytes ?? "null"}`;
  return `"objects":${e.objects},"bytes":${e.bytes},` +
    `"max_objects":${e.maxObjects ?? "null"},"max_bytes":${e.maxBytes ?? "null"}${meta}`;
}

/**
 * The USAGE body as a binary string (job ids escaped as the STAT body escapes names).
 *
 * @example
 * ```ts
 * import { formatUsage } from "@memfdbus/memfdbus/protocol";
 * const broker = { objects: 0, bytes: 0, maxObjects: null, maxBytes: null };
 * console.log(formatUsage({ scope: "own", broker, jobs: [], uids: [] }));
 * // {"scope":"own","broker":{"objects":0,"bytes":0,"max_objects":null,"max_bytes":null},"jobs":[],"uids":[]}
 * ```
 */
export function formatUsage(r: UsageReport): string {
  const jobs = r.jobs.map((j) => `{"job":${jsonString(j.job)},${entryJson(j)}}`);
  const uids = r.uids.map((u) => `{"uid":${u.uid},${entryJson(u)}}`);
  return `{"scope":"${r.scope}","broker":{${entryJson(r.broker)}},` +
    `"jobs":[${jobs.join(",")}],"uids":[${uids.join(",")}]}`;
}

/** Limits keep every digit (a limit may be up to 2^64 - 1). */
const EXACT_KEYS = new Set(["max_objects", "max_bytes", "max_metadata_bytes"]);

function invalid(): ProtocolError {
  return new ProtocolError("broker sent an invalid usage reply");
}

const limit = (n: unknown): bigint | null => (typeof n === "bigint" ? n : null);

function entryOf(v: unknown): UsageEntry & Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw invalid();
  const o = v as Record<string, unknown>;
  if (!isCount(o.objects) || !isCount(o.bytes)) throw invalid();
  if (o.metadata_bytes !== undefined && !isCount(o.metadata_bytes)) throw invalid();
  return {
    ...o,
    objects: o.objects,
    bytes: o.bytes,
    maxObjects: limit(o.max_objects),
    maxBytes: limit(o.max_bytes),
    ...(o.metadata_bytes === undefined ? {} : {
      metadataBytes: o.metadata_bytes,
      maxMetadataBytes: limit(o.max_metadata_bytes),
    }),
  };
}

/**
 * Parse a USAGE body (decoded as UTF-8). Anything but the object {@link formatUsage} writes is a
 * {@link ProtocolError}.
 *
 * @example
 * ```ts
 * import { parseUsage } from "@memfdbus/memfdbus/protocol";
 * const r = parseUsage('{"scope":"all","broker":{"objects":1,"bytes":3,"max_objects":null,"max_bytes":18446744073709551615},"jobs":[],"uids":[{"uid":0,"objects":1,"bytes":3,"max_objects":null,"max_bytes":null}]}');
 * console.log(r.broker.maxBytes, r.uids[0]?.bytes); // 18446744073709551615n 3
 * ```
 */
export function parseUsage(text: string): UsageReport {
  let v: unknown;
  try {
    v = JSON.parse(text, exactIntegers(EXACT_KEYS));
  } catch {
    throw invalid();
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw invalid();
  const o = v as Record<string, unknown>;
  if (
    (o.scope !== "all" && o.scope !== "own") || !Array.isArray(o.jobs) || !Array.isArray(o.uids)
  ) {
    throw invalid();
  }
  const plain = (e: UsageEntry): UsageEntry => ({
    objects: e.objects,
    bytes: e.bytes,
    maxObjects: e.maxObjects,
    maxBytes: e.maxBytes,
    ...(e.metadataBytes === undefined ? {} : {
      metadataBytes: e.metadataBytes,
      maxMetadataBytes: e.maxMetadataBytes ?? null,
    }),
  });
  const jobs = o.jobs.map((j): JobUsageEntry => {
    const e = entryOf(j);
    if (typeof e.job !== "string") throw invalid();
    return { job: e.job, ...plain(e) };
  });
  const uids = o.uids.map((u): UidUsageEntry => {
    const e = entryOf(u);
    if (!isCount(e.uid) || e.uid > 0xffffffff) throw invalid();
    return { uid: e.uid, ...plain(e) };
  });
  return { scope: o.scope, broker: plain(entryOf(o.broker)), jobs, uids };
}
