/**
 * The data model of the cluster tier in NATS JetStream, as pure codecs (no I/O):
 *
 * - Blobs live in the object store bucket `<bucket>-blobs` under their digest string
 *   `sha256:<hex>` (content-addressed: one upload per digest, cluster-wide). The object store's
 *   own digest `SHA-256=<base64url>` is the same SHA-256; {@link toObjectDigest} maps it.
 * - Names live in the KV bucket `<bucket>-names`, one key per name (see {@link nameKey}), with
 *   history. Every message of a key is a JSON value: a **put** (a published version: digest, size,
 *   owner, allowed job, origin host and id, creation time) or a **drop** tombstone that names the
 *   revision it dropped and carries a copy of the version that is latest after it (`current`,
 *   or null). So the newest message of a key alone answers "what is latest" (one direct get, no
 *   consumer), the stream's revision order decides latest-wins across hosts, and a drop is a
 *   compare-and-set on the key's last revision (a publish racing with it makes it retry instead
 *   of being lost). {@link replay} folds a key's history into its live versions, which is how a
 *   drop finds the version that becomes latest. Versions older than the bucket's history fall
 *   out of the cluster (the window is always a suffix, so replay stays consistent).
 *
 * Names, owners and job ids are byte strings (binary strings in the broker); they travel as
 * base64. KV keys allow only `[-/_=.A-Za-z0-9]`, so a name's key is `n.` and the unpadded
 * base64url of its bytes (lossless), or, for names whose key would pass {@link KEY_MAX}, `h.` and
 * the base64url SHA-256 of the bytes (the full name is always in the value).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { DIGEST_PREFIX, isValidDigest } from "../protocol/wire.ts";
import { fromBinary, toBinary } from "../protocol/bytes.ts";
import { ClusterDataError } from "./errors.ts";

/** Longest KV key this tier writes (NATS subjects stay well below the 4 KiB control line). */
export const KEY_MAX = 1024;

/** The KV history kept per name (the server's maximum). */
export const KV_HISTORY = 64;

/** Prefix of the object store's digest strings. */
export const OBJECT_DIGEST_PREFIX = "SHA-256=";

function b64url(bytes: Uint8Array, pad: boolean): string {
  const s = btoa(toBinary(bytes)).replaceAll("+", "-").replaceAll("/", "_");
  return pad ? s : s.replace(/=+$/, "");
}

function unb64url(s: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(s)) return null;
  try {
    return fromBinary(atob(s.replaceAll("-", "+").replaceAll("_", "/")));
  } catch {
    return null;
  }
}

/**
 * The KV key of a name (a binary string of its bytes).
 *
 * @param name the name's bytes as a binary string
 */
export function nameKey(name: string): string {
  const bytes = fromBinary(name);
  const plain = "n." + b64url(bytes, false);
  if (plain.length <= KEY_MAX) return plain;
  return "h." + b64url(new Uint8Array(createHash("sha256").update(bytes).digest()), false);
}

/** `sha256:<hex>` to the object store's `SHA-256=<base64url, padded>`. */
export function toObjectDigest(digest: string): string {
  if (!isValidDigest(digest)) throw new TypeError(`Invalid digest "${digest}"`);
  const raw = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    raw[i] = parseInt(
      digest.slice(DIGEST_PREFIX.length + 2 * i, DIGEST_PREFIX.length + 2 * i + 2),
      16,
    );
  }
  return OBJECT_DIGEST_PREFIX + b64url(raw, true);
}

/** The object store's `SHA-256=<base64url>` to `sha256:<hex>`, or null when malformed. */
export function fromObjectDigest(digest: string): string | null {
  if (!digest.startsWith(OBJECT_DIGEST_PREFIX)) return null;
  const raw = unb64url(digest.slice(OBJECT_DIGEST_PREFIX.length));
  if (raw === null || raw.length !== 32) return null;
  let s = DIGEST_PREFIX;
  for (const b of raw) s += b.toString(16).padStart(2, "0");
  return s;
}

/** One published version of a name, as the broker describes it. Strings are binary strings. */
export interface ClusterEntry {
  /** The name. */
  readonly name: string;
  /** `sha256:<hex>` of the contents (the blob's key in the object store). */
  readonly digest: string;
  /** Size in bytes. */
  readonly size: number;
  /** The publishing job, or null. */
  readonly owner: string | null;
  /** The one other job that may read it, or null. */
  readonly allowed: string | null;
  /** The host id of the broker that published it. */
  readonly originHost: string;
  /** Its object id on that host. */
  readonly originId: number;
  /** When it was published there, CLOCK_REALTIME nanoseconds. */
  readonly createdNs: bigint;
}

/** A version as committed: the entry and its KV revision (cluster-wide order). */
export interface ClusterVersion extends ClusterEntry {
  /** The KV revision that committed it. */
  readonly revision: number;
}

/** A decoded KV value. */
export type KeyRecord =
  | { readonly op: "put"; readonly entry: ClusterEntry }
  | {
    readonly op: "drop";
    /** The name the tombstone belongs to. */
    readonly name: string;
    /** The revision of the version it dropped. */
    readonly target: number;
    /** The host that dropped it. */
    readonly byHost: string;
    /** The version that is latest after the drop, or null. */
    readonly current: ClusterVersion | null;
  };

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

function bytesField(s: string | null): string | null {
  return s === null ? null : btoa(s);
}

function entryJson(e: ClusterEntry): Record<string, unknown> {
  return {
    name: btoa(e.name),
    digest: e.digest,
    size: e.size,
    owner: bytesField(e.owner),
    allowed: bytesField(e.allowed),
    host: e.originHost,
    id: e.originId,
    created: e.createdNs.toString(),
  };
}

/** Encode a put value. */
export function encodePut(e: ClusterEntry): Uint8Array {
  return enc.encode(JSON.stringify({ v: 1, op: "put", ...entryJson(e) }));
}

/**
 * Encode a drop tombstone.
 *
 * @param name the name
 * @param target the revision of the dropped version
 * @param byHost the dropping host
 * @param current the version that is latest afterwards, or null
 */
export function encodeDrop(
  name: string,
  target: number,
  byHost: string,
  current: ClusterVersion | null,
): Uint8Array {
  const cur = current === null ? null : { ...entryJson(current), rev: current.revision };
  return enc.encode(
    JSON.stringify({ v: 1, op: "drop", name: btoa(name), target, host: byHost, current: cur }),
  );
}

function bad(msg: string): never {
  throw new ClusterDataError(msg);
}

function b64Field(v: unknown, what: string, nullable: boolean): string | null {
  if (v === null && nullable) return null;
  if (typeof v !== "string") return bad(`${what}: expected base64`);
  try {
    return atob(v);
  } catch {
    return bad(`${what}: expected base64`);
  }
}

function count(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    return bad(`${what}: expected a non-negative integer`);
  }
  return v;
}

function decodeEntry(o: Record<string, unknown>): ClusterEntry {
  const name = b64Field(o.name, "name", false) ?? "";
  if (name === "") bad("name: empty");
  if (typeof o.digest !== "string" || !isValidDigest(o.digest)) bad("digest: malformed");
  if (typeof o.host !== "string" || o.host === "" || o.host.length > 255) bad("host: malformed");
  if (typeof o.created !== "string" || !/^[0-9]{1,20}$/.test(o.created)) bad("created: malformed");
  return {
    name,
    digest: o.digest,
    size: count(o.size, "size"),
    owner: b64Field(o.owner, "owner", true),
    allowed: b64Field(o.allowed, "allowed", true),
    originHost: o.host,
    originId: count(o.id, "id"),
    createdNs: BigInt(o.created),
  };
}

/**
 * Decode and check a KV value; throws ClusterDataError for anything this tier did not write.
 *
 * @param value the raw value
 */
export function decodeRecord(value: Uint8Array): KeyRecord {
  let o: unknown;
  try {
    o = JSON.parse(dec.decode(value));
  } catch {
    return bad("not JSON");
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) return bad("not an object");
  const r = o as Record<string, unknown>;
  if (r.v !== 1) return bad(`unknown version ${JSON.stringify(r.v)}`);
  if (r.op === "put") return { op: "put", entry: decodeEntry(r) };
  if (r.op !== "drop") return bad(`unknown op ${JSON.stringify(r.op)}`);
  const name = b64Field(r.name, "name", false) ?? "";
  if (typeof r.host !== "string" || r.host === "") bad("host: malformed");
  let current: ClusterVersion | null = null;
  if (r.current !== null) {
    if (typeof r.current !== "object" || Array.isArray(r.current)) bad("current: malformed");
    const c = r.current as Record<string, unknown>;
    current = { ...decodeEntry(c), revision: count(c.rev, "current.rev") };
    if (current.name !== name) bad("current: another name");
  }
  return { op: "drop", name, target: count(r.target, "target"), byHost: r.host, current };
}

/**
 * Fold a key's history (oldest first) into its live versions (oldest first): puts add a version,
 * tombstones remove the one they name.
 *
 * @param history the key's messages with their revisions
 */
export function replay(
  history: readonly { readonly revision: number; readonly record: KeyRecord }[],
): ClusterVersion[] {
  const live: ClusterVersion[] = [];
  for (const { revision, record } of history) {
    if (record.op === "put") live.push({ ...record.entry, revision });
    else {
      const i = live.findIndex((v) => v.revision === record.target);
      if (i >= 0) live.splice(i, 1);
    }
  }
  return live;
}

/** The latest version a key's newest message stands for, or null when none is live. */
export function latestOf(revision: number, record: KeyRecord): ClusterVersion | null {
  return record.op === "put" ? { ...record.entry, revision } : record.current;
}
