/**
 * Broker configuration and policy files in JSONC (comments and trailing commas allowed), parsed
 * with a real JSONC parser. Every mistake is reported with the file, the line and the key, as in
 * `/etc/memfdbus.jsonc:7: maxObjects: expected an integer from 1 to 18446744073709551615`. Pure:
 * the caller reads the file.
 *
 * Keys (all optional): socket, socketMode ("0600"), maxNameBytes, maxObjects, maxRequestBytes,
 * maxListBytes, maxTotalBytes, maxMetadataBytes (a byte count: 1073741824 or "1GiB"), listenBacklog, maxClients, requestTimeoutMs, idleTimeoutMs,
 * maxWaitMs, maxWaiters, maxWatchers, readOnlyFds,
 * auditPeer, auditUidRate and auditUidBurst (byte counts such as "1MiB": the per-uid audit
 * budget, see `audit_budget.ts`), requireJob, protectNames, jobs ({ "job": { "uids": [..], "gids": [..] } }),
 * shadow, keepVersions, retention ({ "model/*": 2, "logs/*": 10, "scratch/*": "unlimited" }),
 * pin (["model/*", "config.json"]: eviction never releases their versions),
 * quotas ({ "perUid": { "bytes": "8GiB", "objects": 1000 }, "uids": { "1001": {..} },
 * "jobs": { "trainer": {..} } }), peerLimits ({ "connections": 96, "waits": 768, "watchers": 48,
 * "replyBytes": 16777216, "replyFds": 64, "metadataBytes": "768MiB" }: per uid; 3/4 of
 * maxClients, maxWaiters, maxWatchers and maxMetadataBytes by default), evict ("superseded" or "none"), dedup, metrics
 * ("127.0.0.1:9464" or a socket path), unlistedJobs ("deny" or "allow"), reserve
 * ({ "model/": "trainer", "report.csv": "ci", "tmp-*": "scratch" }: a key ending in / or * is a
 * prefix). A policy file (--policy) may hold only auditPeer, requireJob, protectNames, jobs,
 * unlistedJobs and reserve.
 *
 * @module
 */

import { nearestWord } from "./nearest.ts";
import type { Node, ParseError } from "jsonc-parser";
import { utf8Binary } from "../protocol/bytes.ts";
import { UsageError } from "../errors.ts";
import { type BrokerOptions, parseByteCount, parseMetricsAddress } from "./options.ts";
import type { PinRule, QuotaLimits, Quotas, RetentionRule } from "./governance.ts";
import type { JobBinding, Reservation } from "./policy.ts";
import { nameProblem } from "../protocol/names.ts";
import type { PeerLimits } from "./fair_shares.ts";
import { JOB_MAX, NAME_HARD_MAX } from "../protocol/wire.ts";
import { parseClusterConfig } from "../cluster/options.ts";

const U32_MAX = 4294967295n;
const U64_MAX = 18446744073709551615n;
const INT_MAX = 2147483647n;

/** What a configuration file adds to the flags: the options plus keys only a file can set. */
export interface FileConfig {
  /** The options, with the file's values applied over the base. */
  readonly options: BrokerOptions;
  /** The shadow socket path, when the file names one. */
  readonly shadow?: string;
}

/** Report a mistake; `at` names the line of a nested value (default: the key's value). */
type Fail = (msg: string, at?: Node) => never;

type Apply = (o: BrokerOptions, node: Node, fail: Fail) => void;

function integer(max: bigint, set: (o: BrokerOptions, v: bigint) => void): Apply {
  return (o, node, fail) => {
    let v: bigint | null = null;
    if (node.type === "number" && Number.isSafeInteger(node.value)) v = BigInt(node.value);
    if (node.type === "string" && /^[0-9]+$/.test(String(node.value))) v = BigInt(node.value);
    if (v === null || v < 1n || v > max) return fail(`expected an integer from 1 to ${max}`);
    set(o, v);
  };
}

/** A byte count (see {@link byteCount}) up to 2^53 - 1, kept as a number. */
function bytes(set: (o: BrokerOptions, v: number) => void): Apply {
  return (o, node, fail) => {
    const v = byteCount(node);
    if (v === null || v > BigInt(Number.MAX_SAFE_INTEGER)) {
      return fail(
        `expected a byte count from 1 to ${Number.MAX_SAFE_INTEGER}, such as 1048576 or "1MiB"`,
      );
    }
    set(o, Number(v));
  };
}

/** A byte count (see {@link byteCount}) from 1 to `max`: 1073741824 or "1GiB". */
function byteLimit(max: bigint, set: (o: BrokerOptions, v: bigint) => void): Apply {
  return (o, node, fail) => {
    const v = byteCount(node);
    if (v === null || v > max) {
      return fail(`expected a byte count from 1 to ${max}, such as 1073741824 or "1GiB"`);
    }
    set(o, v);
  };
}

function boolean(set: (o: BrokerOptions, v: boolean) => void): Apply {
  return (o, node, fail) => {
    if (node.type !== "boolean") return fail("expected true or false");
    set(o, node.value as boolean);
  };
}

function ids(node: Node | undefined, what: string, fail: Fail): number[] {
  if (node === undefined) return [];
  if (node.type !== "array") return fail(`${what}: expected an array of ids`);
  return (node.children ?? []).map((c) => {
    if (c.type !== "number" || !Number.isInteger(c.value) || c.value < 0 || c.value > 0xffffffff) {
      return fail(`${what}: expected ids from 0 to 4294967295`);
    }
    return c.value as number;
  });
}

/**
 * A byte count: an integer, or a decimal string with an optional KiB/MiB/GiB/TiB suffix (the
 * flags' {@link parseByteCount}).
 */
function byteCount(node: Node): bigint | null {
  if (node.type === "number") {
    return Number.isSafeInteger(node.value) && node.value >= 1 ? BigInt(node.value) : null;
  }
  return node.type === "string" ? parseByteCount(String(node.value), U64_MAX) : null;
}

/** `unknown key "k"`, with the nearest known key when `k` looks like a typo of it. */
function unknownKey(k: string, known: Iterable<string>): string {
  const near = nearestWord(k, known);
  return `unknown key "${k}"` + (near === undefined ? "" : ` (did you mean "${near}"?)`);
}

/** Object members as [key, value node] pairs. */
function members(node: Node): [string, Node][] {
  return (node.children ?? []).flatMap((p) => {
    const [k, v] = p.children ?? [];
    return k === undefined || v === undefined ? [] : [[String(k.value), v] as [string, Node]];
  });
}

function limits(node: Node, what: string, fail: Fail): QuotaLimits {
  if (node.type !== "object") {
    return fail(`${what}: expected { "bytes": N, "objects": N }`, node);
  }
  let bytes: bigint | null = null;
  let objects: bigint | null = null;
  for (const [k, v] of members(node)) {
    if (k === "bytes") {
      bytes = byteCount(v);
      if (bytes === null) {
        return fail(`${what}.bytes: expected a byte count such as 1073741824 or "8GiB"`, v);
      }
    } else if (k === "objects") {
      if (v.type !== "number" || !Number.isSafeInteger(v.value) || v.value < 1) {
        return fail(`${what}.objects: expected an integer from 1 to ${Number.MAX_SAFE_INTEGER}`, v);
      }
      objects = BigInt(v.value);
    } else {
      return fail(`${what}: ${unknownKey(k, ["bytes", "objects"])}`, v);
    }
  }
  return { bytes, objects };
}

function retention(node: Node, fail: Fail): RetentionRule[] {
  if (node.type !== "object") return fail('expected an object such as { "model/*": 2 }');
  const rules: RetentionRule[] = [];
  for (const [k, v] of members(node)) {
    const star = k.indexOf("*");
    if (k === "" || (star >= 0 && star !== k.length - 1)) {
      return fail(`"${k}": expected a name, or a prefix ending in one *`, v);
    }
    let keep: number | null;
    if (v.type === "string" && v.value === "unlimited") {
      keep = null;
    } else if (
      v.type === "number" && Number.isInteger(v.value) && v.value >= 1 && v.value <= INT_MAX
    ) {
      keep = v.value as number;
    } else {
      return fail(`"${k}": expected a number of versions from 1 to ${INT_MAX} or "unlimited"`, v);
    }
    const prefix = star >= 0;
    rules.push({ pattern: utf8Binary(prefix ? k.slice(0, -1) : k), prefix, keep });
  }
  return rules;
}

function pins(node: Node, fail: Fail): PinRule[] {
  if (node.type !== "array") return fail('expected an array such as ["model/*", "config.json"]');
  const out: PinRule[] = [];
  for (const v of node.children ?? []) {
    const k = v.type === "string" ? String(v.value) : "";
    const star = k.indexOf("*");
    if (k === "" || k === "*" || (star >= 0 && star !== k.length - 1)) {
      return fail("expected names, or prefixes ending in one *", v);
    }
    const prefix = star >= 0;
    out.push({ pattern: utf8Binary(prefix ? k.slice(0, -1) : k), prefix });
  }
  return out;
}

function quotas(node: Node, fail: Fail): Quotas {
  if (node.type !== "object") {
    return fail('expected an object with "perUid", "uids" and/or "jobs"');
  }
  let perUid: QuotaLimits | null = null;
  const uids = new Map<number, QuotaLimits>();
  const jobs = new Map<string, QuotaLimits>();
  for (const [k, v] of members(node)) {
    if (k === "perUid") {
      perUid = limits(v, "perUid", fail);
    } else if (k === "uids" || k === "jobs") {
      if (v.type !== "object") return fail(`${k}: expected an object`, v);
      for (const [name, q] of members(v)) {
        if (k === "uids") {
          if (!/^[0-9]{1,10}$/.test(name) || Number(name) > 0xffffffff) {
            return fail(`uids: "${name}" is not a uid from 0 to 4294967295`, q);
          }
          uids.set(Number(name), limits(q, `uids.${name}`, fail));
        } else {
          const bytes = new TextEncoder().encode(name);
          if (bytes.length === 0 || bytes.length > JOB_MAX || bytes.includes(0)) {
            return fail(`jobs: job id "${name}" must be 1 to ${JOB_MAX} bytes without NUL`, q);
          }
          jobs.set(utf8Binary(name), limits(q, `jobs.${name}`, fail));
        }
      }
    } else {
      return fail(unknownKey(k, ["perUid", "uids", "jobs"]), v);
    }
  }
  return { perUid, uids, jobs };
}

function peerLimits(node: Node, fail: Fail): PeerLimits {
  if (node.type !== "object") {
    return fail(
      'expected an object with "connections", "waits", "watchers", "replyBytes", "replyFds" ' +
        'and/or "metadataBytes"',
    );
  }
  let metadataBytes: bigint | null = null;
  const out: Record<string, number | null> = {
    connections: null,
    waits: null,
    watchers: null,
    replyBytes: null,
    replyFds: null,
  };
  const known = [...Object.keys(out), "metadataBytes"];
  for (const [k, v] of members(node)) {
    if (!known.includes(k)) return fail(unknownKey(k, known), v);
    if (k === "metadataBytes") {
      metadataBytes = byteCount(v);
      if (metadataBytes === null) {
        return fail(`${k}: expected a byte count such as 805306368 or "768MiB"`, v);
      }
      continue;
    }
    if (k === "replyBytes") {
      // A byte count, as everywhere else in the config: 16777216 or "16MiB".
      const n = byteCount(v);
      if (n === null || n > INT_MAX) {
        return fail(`${k}: expected a byte count from 1 to ${INT_MAX}, such as "16MiB"`, v);
      }
      out[k] = Number(n);
      continue;
    }
    if (v.type !== "number" || !Number.isInteger(v.value) || v.value < 1 || v.value > INT_MAX) {
      return fail(`${k}: expected an integer from 1 to ${INT_MAX}`, v);
    }
    out[k] = v.value as number;
  }
  return {
    connections: out.connections ?? null,
    waits: out.waits ?? null,
    watchers: out.watchers ?? null,
    replyBytes: out.replyBytes ?? null,
    replyFds: out.replyFds ?? null,
    metadataBytes,
  };
}

/** The longest reservation key, in bytes (it is quoted in refusal texts). */
const RESERVE_KEY_MAX = 256;

function reservations(node: Node, fail: Fail): Reservation[] {
  if (node.type !== "object") {
    return fail('expected an object such as { "model/": "trainer", "report.csv": "ci" }');
  }
  const out: Reservation[] = [];
  for (const [k, v] of members(node)) {
    const star = k.indexOf("*");
    const bytes = new TextEncoder().encode(k);
    if (k === "" || k === "*" || (star >= 0 && star !== k.length - 1)) {
      return fail(`"${k}": expected a name, or a prefix ending in / or in one *`, v);
    }
    const keyProblem = bytes.includes(0) ? "object name must not contain NUL" : bytes.length >
        RESERVE_KEY_MAX
      ? `longer than ${RESERVE_KEY_MAX} bytes`
      : nameProblem(bytes, "object name");
    if (keyProblem !== null) return fail(`"${k}": ${keyProblem}`, v);
    const job = v.type === "string" ? String(v.value) : "";
    const jobBytes = new TextEncoder().encode(job);
    const jobProblem = jobBytes.length === 0 || jobBytes.length > JOB_MAX || jobBytes.includes(0)
      ? `expected a job id of 1 to ${JOB_MAX} bytes without NUL`
      : nameProblem(jobBytes, "job id");
    if (jobProblem !== null) return fail(`"${k}": ${jobProblem}`, v);
    const prefix = star >= 0 || k.endsWith("/");
    out.push({
      pattern: utf8Binary(star >= 0 ? k.slice(0, -1) : k),
      prefix,
      job: utf8Binary(job),
      source: utf8Binary(k),
    });
  }
  return out;
}

const KEYS: Readonly<Record<string, Apply>> = {
  socket: (o, node, fail) => {
    if (node.type !== "string" || node.value === "") return fail("expected a non-empty path");
    o.socket = node.value as string;
  },
  socketMode: (o, node, fail) => {
    if (node.type !== "string" || !/^0?[0-7]{3}$/.test(node.value as string)) {
      return fail('expected an octal mode such as "0600"');
    }
    o.socketMode = parseInt(node.value as string, 8);
  },
  maxNameBytes: integer(BigInt(NAME_HARD_MAX), (o, v) => (o.maxNameBytes = Number(v))),
  maxObjects: integer(U64_MAX, (o, v) => (o.maxObjects = v)),
  maxRequestBytes: byteLimit(U32_MAX, (o, v) => (o.maxRequestBytes = Number(v))),
  maxListBytes: byteLimit(U32_MAX, (o, v) => (o.maxListBytes = Number(v))),
  maxTotalBytes: byteLimit(U64_MAX, (o, v) => (o.maxTotalBytes = v)),
  maxMetadataBytes: (o, node, fail) => {
    const v = byteCount(node);
    if (v === null) return fail('expected a byte count such as 1073741824 or "1GiB"');
    o.maxMetadataBytes = v;
  },
  listenBacklog: integer(INT_MAX, (o, v) => (o.listenBacklog = Number(v))),
  maxClients: integer(U64_MAX, (o, v) => (o.maxClients = Number(v))),
  requestTimeoutMs: integer(INT_MAX, (o, v) => (o.requestTimeoutMs = Number(v))),
  idleTimeoutMs: integer(INT_MAX, (o, v) => (o.idleTimeoutMs = Number(v))),
  maxWaitMs: integer(INT_MAX, (o, v) => (o.maxWaitMs = Number(v))),
  maxWaiters: integer(INT_MAX, (o, v) => (o.maxWaiters = Number(v))),
  maxWatchers: integer(INT_MAX, (o, v) => (o.maxWatchers = Number(v))),
  auditPeer: boolean((o, v) => (o.auditPeer = v)),
  auditUidRate: bytes((o, v) => (o.auditUidRate = v)),
  auditUidBurst: bytes((o, v) => (o.auditUidBurst = v)),
  readOnlyFds: boolean((o, v) => (o.readOnlyFds = v)),
  requireJob: boolean((o, v) => (o.policy = { ...o.policy, requireJob: v })),
  protectNames: boolean((o, v) => (o.policy = { ...o.policy, protectNames: v })),
  jobs: (o, node, fail) => {
    if (node.type !== "object") {
      return fail('expected an object such as { "job": { "uids": [1000] } }');
    }
    const jobs = new Map<string, JobBinding>();
    for (const prop of node.children ?? []) {
      const [k, v] = prop.children ?? [];
      const job = String(k?.value ?? "");
      const bytes = new TextEncoder().encode(job);
      if (bytes.length === 0 || bytes.length > JOB_MAX || bytes.includes(0)) {
        return fail(`job id "${job}" must be 1 to ${JOB_MAX} bytes without NUL`);
      }
      if (v === undefined || v.type !== "object") {
        return fail(`${job}: expected { "uids": [...], "gids": [...] }`);
      }
      const fields = new Map(
        (v.children ?? []).map((p) => [p.children?.[0]?.value, p.children?.[1]]),
      );
      for (const key of fields.keys()) {
        if (key !== "uids" && key !== "gids") {
          return fail(`${job}: ${unknownKey(key, ["uids", "gids"])}`);
        }
      }
      jobs.set(utf8Binary(job), {
        uids: ids(fields.get("uids"), `${job}.uids`, fail),
        gids: ids(fields.get("gids"), `${job}.gids`, fail),
      });
    }
    o.policy = { ...o.policy, jobs };
  },
  unlistedJobs: (o, node, fail) => {
    if (node.type !== "string" || (node.value !== "deny" && node.value !== "allow")) {
      return fail('expected "deny" or "allow"');
    }
    o.policy = { ...o.policy, unlistedJobs: node.value };
  },
  reserve: (o, node, fail) => (o.policy = { ...o.policy, reserve: reservations(node, fail) }),
  shadow: (o, node, fail) => {
    if (node.type !== "string" || node.value === "") return fail("expected a non-empty path");
    o.shadow = node.value as string;
  },
  keepVersions: integer(INT_MAX, (o, v) => (o.keepVersions = Number(v))),
  retention: (o, node, fail) => (o.retention = retention(node, fail)),
  pin: (o, node, fail) => (o.pins = pins(node, fail)),
  quotas: (o, node, fail) => (o.quotas = quotas(node, fail)),
  peerLimits: (o, node, fail) => (o.peerLimits = peerLimits(node, fail)),
  evict: (o, node, fail) => {
    if (node.type !== "string" || (node.value !== "superseded" && node.value !== "none")) {
      return fail('expected "superseded" or "none"');
    }
    o.evict = node.value;
  },
  dedup: boolean((o, v) => (o.dedup = v)),
  metrics: (o, node, fail) => {
    const address = node.type === "string" ? parseMetricsAddress(String(node.value)) : null;
    if (address === null) {
      return fail('expected "HOST:PORT" such as "127.0.0.1:9464" or a socket path');
    }
    o.metrics = address;
  },
};

const POLICY_KEYS = new Set([
  "auditPeer",
  "requireJob",
  "protectNames",
  "jobs",
  "unlistedJobs",
  "reserve",
]);

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/**
 * Apply a JSONC configuration (or, with `policyOnly`, a policy file) over `base`.
 *
 * @param text the file's contents
 * @param path the file's name, for messages
 * @param base the options the file's values override
 * @param policyOnly accept only the policy keys
 * @param hostname the default host id of a `cluster` key (asked only then)
 */
export async function parseConfig(
  text: string,
  path: string,
  base: BrokerOptions,
  policyOnly = false,
  hostname: () => string = () => "localhost",
): Promise<FileConfig> {
  // Loaded only when a file is given: the npm loader costs every other command start-up time.
  const { getNodeValue, parseTree, printParseErrorCode } = await import("jsonc-parser");
  const errors: ParseError[] = [];
  const tree = parseTree(text, errors, { allowTrailingComma: true, disallowComments: false });
  const first = errors[0];
  if (first !== undefined) {
    const line = lineOf(text, first.offset);
    const col = first.offset - text.lastIndexOf("\n", first.offset - 1);
    throw new UsageError(
      `${path}:${line}:${col}: invalid JSONC (${printParseErrorCode(first.error)})`,
    );
  }
  if (tree === undefined || tree.type !== "object") {
    throw new UsageError(`${path}:1: expected a JSON object`);
  }
  const o: BrokerOptions = { ...base };
  let shadow: string | undefined;
  for (const prop of tree.children ?? []) {
    const [keyNode, valueNode] = prop.children ?? [];
    const key = String(keyNode?.value ?? "");
    const line = lineOf(text, (valueNode ?? keyNode ?? prop).offset);
    const fail = (msg: string, at?: Node): never => {
      const where = at === undefined ? line : lineOf(text, at.offset);
      throw new UsageError(`${path}:${where}: ${key}: ${msg}`);
    };
    if (key === "cluster" && !policyOnly && valueNode !== undefined) {
      o.cluster = parseClusterConfig(getNodeValue(valueNode), hostname(), (msg) => fail(msg));
      continue;
    }
    const apply = Object.hasOwn(KEYS, key) ? KEYS[key] : undefined;
    if (apply === undefined || (policyOnly && !POLICY_KEYS.has(key))) {
      const known = policyOnly ? POLICY_KEYS : [...Object.keys(KEYS), "cluster"];
      const near = apply === undefined ? nearestWord(key, known) : undefined;
      fail(
        (policyOnly ? "not a policy key" : "unknown key") +
          (near === undefined ? "" : ` (did you mean "${near}"?)`),
      );
    }
    if (valueNode === undefined) return fail("missing value");
    apply?.(o, valueNode as Node, fail);
    if (key === "shadow") shadow = String(valueNode?.value);
  }
  return shadow === undefined ? { options: o } : { options: o, shadow };
}
