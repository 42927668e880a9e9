/**
 * The STAT reply body (an extension; a C broker answers `unknown command`): one compact JSON
 * object `{"id","name","size","digest","owner","allowed","created_ns","seals"}` with strings
 * escaped as the C broker escapes them. The broker writes it with {@link formatStat}; the client
 * reads it with {@link parseStat}. Pure: no I/O.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import { exactIntegers, isCount, jsonString } from "./json.ts";

/** What a STAT body says of an object (the broker's strings are binary strings). */
export interface StatFields {
  /** Object id. */
  readonly id: number | bigint;
  /** Name. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number | bigint;
  /** Digest string. */
  readonly digest: string;
  /** Owner job, or null. */
  readonly owner: string | null;
  /** Allowed job, or null. */
  readonly allowed: string | null;
  /** Publication time (CLOCK_REALTIME ns). */
  readonly createdNs: bigint;
  /** F_GET_SEALS bits, or a negative number when they could not be read (sent as null). */
  readonly seals: number;
  /**
   * Extension (after the C-compatible keys): true when the object shares its memfd with another
   * stored object of identical content. Left out when undefined.
   */
  readonly shared?: boolean | undefined;
  /**
   * Extension: what the owner job holds in the broker (objects, and bytes of distinct contents),
   * or null for an object without owner. Left out when undefined.
   */
  readonly ownerUsage?: { readonly objects: number; readonly bytes: number } | null | undefined;
  /**
   * For an object pulled from the cluster tier: the host that published it, its id there and
   * the cluster revision. Sent as `origin_host`, `origin_id`, `origin_revision` after `seals`,
   * only for such objects (a local object's body is unchanged).
   */
  readonly origin?: StatOrigin | undefined;
}

/** Where a pulled object came from (see {@link StatFields.origin}). */
export interface StatOrigin {
  /** The publishing host's id. */
  readonly host: string;
  /** The object's id on that host. */
  readonly id: number;
  /** The cluster revision that committed it. */
  readonly revision: number;
}

/**
 * The STAT body as a binary string (one character per byte).
 *
 * @example
 * ```ts
 * import { formatStat } from "@memfdbus/memfdbus/protocol";
 * const digest = "sha256:" + "0".repeat(64);
 * console.log(formatStat({
 *   id: 1, name: "m", size: 3, digest, owner: null, allowed: null, createdNs: 5n, seals: 15,
 * })); // {"id":1,"name":"m","size":3,"digest":"sha256:…","owner":null,"allowed":null,"created_ns":5,"seals":15}
 * ```
 */
export function formatStat(f: StatFields): string {
  return `{"id":${f.id},"name":${jsonString(f.name)},"size":${f.size},` +
    `"digest":${jsonString(f.digest)},"owner":${jsonString(f.owner)},` +
    `"allowed":${jsonString(f.allowed)},"created_ns":${f.createdNs},` +
    `"seals":${f.seals < 0 ? "null" : f.seals}` +
    (f.shared === undefined ? "" : `,"shared":${f.shared}`) +
    (f.ownerUsage === undefined
      ? ""
      : f.ownerUsage === null
      ? `,"owner_objects":null,"owner_bytes":null`
      : `,"owner_objects":${f.ownerUsage.objects},"owner_bytes":${f.ownerUsage.bytes}`) +
    (f.origin === undefined
      ? ""
      : `,"origin_host":${jsonString(f.origin.host)},"origin_id":${f.origin.id},` +
        `"origin_revision":${f.origin.revision}`) +
    "}";
}

/** What {@link parseStat} reads from a STAT body (id and size travel in the reply header). */
export interface StatBody {
  /** Name. */
  readonly name: string;
  /** Digest string. */
  readonly digest: string;
  /** Owner job, or null. */
  readonly owner: string | null;
  /** Allowed job, or null. */
  readonly allowed: string | null;
  /** Publication time in ns, or null when the body has none. */
  readonly createdNs: bigint | null;
  /** Seal bits, or null when unknown. */
  readonly seals: number | null;
  /** True when the object shares its memory with identical content; null when not told. */
  readonly shared: boolean | null;
  /** What the owner job holds (objects, bytes of distinct contents); null when not told. */
  readonly ownerUsage: { readonly objects: number; readonly bytes: number } | null;
  /** Where the object came from when the broker pulled it from its cluster tier, else null. */
  readonly origin: StatOrigin | null;
}

/** Numbers that must keep every digit (a time in ns exceeds 2^53). */
const EXACT_KEYS = new Set(["created_ns"]);

/**
 * Parse a STAT body (decoded as UTF-8). Anything but a JSON object whose `name` and `digest` are
 * strings and whose `owner` and `allowed` are strings or null is a {@link ProtocolError};
 * `created_ns` is read with all its digits.
 *
 * @example
 * ```ts
 * import { parseStat } from "@memfdbus/memfdbus/protocol";
 * const st = parseStat('{"id":1,"name":"m","size":3,"digest":"d","owner":null,"allowed":"b","created_ns":1760000000123456789,"seals":15}');
 * console.log(st.name, st.allowed, st.createdNs, st.seals); // m b 1760000000123456789n 15
 * ```
 */
export function parseStat(text: string): StatBody {
  let v: unknown;
  try {
    v = JSON.parse(text, exactIntegers(EXACT_KEYS));
  } catch {
    throw invalid();
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw invalid();
  const o = v as Record<string, unknown>;
  if (typeof o.name !== "string" || typeof o.digest !== "string") throw invalid();
  const owner = o.owner ?? null;
  const allowed = o.allowed ?? null;
  if (
    (owner !== null && typeof owner !== "string") ||
    (allowed !== null && typeof allowed !== "string")
  ) {
    throw invalid();
  }
  const created = o.created_ns;
  const seals = o.seals;
  const origin = typeof o.origin_host === "string" && isCount(o.origin_id) &&
      isCount(o.origin_revision)
    ? { host: o.origin_host, id: o.origin_id, revision: o.origin_revision }
    : null;
  return {
    name: o.name,
    digest: o.digest,
    owner,
    allowed,
    createdNs: typeof created === "bigint" ? created : null,
    seals: typeof seals === "number" && Number.isInteger(seals) && seals >= 0 ? seals : null,
    shared: typeof o.shared === "boolean" ? o.shared : null,
    ownerUsage: isCount(o.owner_objects) && isCount(o.owner_bytes)
      ? { objects: o.owner_objects, bytes: o.owner_bytes }
      : null,
    origin,
  };
}

function invalid(): ProtocolError {
  return new ProtocolError("broker sent an invalid stat reply");
}
