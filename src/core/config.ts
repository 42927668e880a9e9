/**
 * Broker configuration and policy files in JSONC (comments and trailing commas allowed), parsed
 * with a real JSONC parser. Every mistake is reported with the file, the line and the key, as in
 * `/etc/memfdbus.jsonc:7: maxObjects: expected an integer from 1 to 18446744073709551615`. Pure:
 * the caller reads the file.
 *
 * Keys (all optional): socket, socketMode ("0600"), maxNameBytes, maxObjects, maxRequestBytes,
 * maxListBytes, maxTotalBytes, listenBacklog, maxClients, requestTimeoutMs, idleTimeoutMs,
 * maxWaitMs, maxWaiters, readOnlyFds,
 * auditPeer, requireJob, protectNames, jobs ({ "job": { "uids": [..], "gids": [..] } }),
 * shadow. A policy file (--policy) may hold only auditPeer, requireJob, protectNames and jobs.
 *
 * @module
 */

import type { Node, ParseError } from "jsonc-parser";
import { utf8Binary } from "../protocol/bytes.ts";
import { UsageError } from "../errors.ts";
import type { BrokerOptions } from "./options.ts";
import type { JobBinding } from "./policy.ts";
import { JOB_MAX, NAME_HARD_MAX } from "../protocol/wire.ts";

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

type Apply = (o: BrokerOptions, node: Node, fail: (msg: string) => never) => void;

function integer(max: bigint, set: (o: BrokerOptions, v: bigint) => void): Apply {
  return (o, node, fail) => {
    let v: bigint | null = null;
    if (node.type === "number" && Number.isSafeInteger(node.value)) v = BigInt(node.value);
    if (node.type === "string" && /^[0-9]+$/.test(String(node.value))) v = BigInt(node.value);
    if (v === null || v < 1n || v > max) return fail(`expected an integer from 1 to ${max}`);
    set(o, v);
  };
}

function boolean(set: (o: BrokerOptions, v: boolean) => void): Apply {
  return (o, node, fail) => {
    if (node.type !== "boolean") return fail("expected true or false");
    set(o, node.value as boolean);
  };
}

function ids(node: Node | undefined, what: string, fail: (msg: string) => never): number[] {
  if (node === undefined) return [];
  if (node.type !== "array") return fail(`${what}: expected an array of ids`);
  return (node.children ?? []).map((c) => {
    if (c.type !== "number" || !Number.isInteger(c.value) || c.value < 0 || c.value > 0xffffffff) {
      return fail(`${what}: expected ids from 0 to 4294967295`);
    }
    return c.value as number;
  });
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
  maxRequestBytes: integer(U32_MAX, (o, v) => (o.maxRequestBytes = Number(v))),
  maxListBytes: integer(U32_MAX, (o, v) => (o.maxListBytes = Number(v))),
  maxTotalBytes: integer(U64_MAX, (o, v) => (o.maxTotalBytes = v)),
  listenBacklog: integer(INT_MAX, (o, v) => (o.listenBacklog = Number(v))),
  maxClients: integer(U64_MAX, (o, v) => (o.maxClients = Number(v))),
  requestTimeoutMs: integer(INT_MAX, (o, v) => (o.requestTimeoutMs = Number(v))),
  idleTimeoutMs: integer(INT_MAX, (o, v) => (o.idleTimeoutMs = Number(v))),
  maxWaitMs: integer(INT_MAX, (o, v) => (o.maxWaitMs = Number(v))),
  maxWaiters: integer(INT_MAX, (o, v) => (o.maxWaiters = Number(v))),
  auditPeer: boolean((o, v) => (o.auditPeer = v)),
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
        if (key !== "uids" && key !== "gids") return fail(`${job}: unknown key "${key}"`);
      }
      jobs.set(utf8Binary(job), {
        uids: ids(fields.get("uids"), `${job}.uids`, fail),
        gids: ids(fields.get("gids"), `${job}.gids`, fail),
      });
    }
    o.policy = { ...o.policy, jobs };
  },
  shadow: (o, node, fail) => {
    if (node.type !== "string" || node.value === "") return fail("expected a non-empty path");
    o.shadow = node.value as string;
  },
};

const POLICY_KEYS = new Set(["auditPeer", "requireJob", "protectNames", "jobs"]);

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
 */
export async function parseConfig(
  text: string,
  path: string,
  base: BrokerOptions,
  policyOnly = false,
): Promise<FileConfig> {
  // Loaded only when a file is given: the npm loader costs every other command start-up time.
  const { parseTree, printParseErrorCode } = await import("jsonc-parser");
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
    const fail = (msg: string): never => {
      throw new UsageError(`${path}:${line}: ${key}: ${msg}`);
    };
    const apply = Object.hasOwn(KEYS, key) ? KEYS[key] : undefined;
    if (apply === undefined || (policyOnly && !POLICY_KEYS.has(key))) {
      fail(policyOnly ? "not a policy key" : "unknown key");
    }
    if (valueNode === undefined) return fail("missing value");
    apply?.(o, valueNode as Node, fail);
    if (key === "shadow") shadow = String(valueNode?.value);
  }
  return shadow === undefined ? { options: o } : { options: o, shadow };
}
