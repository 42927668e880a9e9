/**
 * Options of the cluster tier: the `cluster` key of a broker configuration file and the
 * `--cluster`, `--host-id` and `--cluster-sync` flags. Pure: no I/O (the caller supplies the host
 * name used as the default host id and reads any credential files later, at connect time).
 *
 * Config shape (all keys but `servers` optional):
 * ```jsonc
 * "cluster": {
 *   "servers": ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"], // or one comma-separated string
 *   "bucket": "memfdbus",          // KV bucket <bucket>-names, object store <bucket>-blobs
 *   "hostId": "gpu-7",             // default: the host name
 *   "credentials": "/etc/memfdbus/broker.creds", // or "token": "...", or "nkey": "/path/seed.nk"
 *   "tls": { "ca": "/etc/ca.pem", "cert": "/etc/c.pem", "key": "/etc/k.pem" }, // or true
 *   "replicas": 3, "storage": "file", "sync": false,
 *   "maxQueueBytes": 4294967296, "maxQueueEntries": 4096, "timeoutMs": 2000,
 *   "maxBytes": 1099511627776      // the object store's max_bytes (default: unlimited)
 * }
 * ```
 *
 * @module
 */

import { UsageError } from "../errors.ts";

/** TLS settings for the connection to NATS (file paths, read at connect time). */
export interface ClusterTls {
  /** CA bundle that signs the server certificates. */
  readonly ca?: string;
  /** Client certificate (with `key`) for mutual TLS. */
  readonly cert?: string;
  /** Client private key (with `cert`). */
  readonly key?: string;
}

/** How the broker authenticates to NATS: at most one of these. */
export type ClusterAuth =
  | { readonly kind: "none" }
  | { readonly kind: "credentials"; readonly file: string }
  | { readonly kind: "nkey"; readonly file: string }
  | { readonly kind: "token"; readonly token: string };

/** Everything that configures the cluster tier. */
export interface ClusterOptions {
  /** NATS server URLs (`nats://host:port` or `tls://host:port`), at least one. */
  readonly servers: readonly string[];
  /** Bucket prefix: names live in KV bucket `<bucket>-names`, blobs in `<bucket>-blobs`. */
  readonly bucket: string;
  /** This host's id, recorded as the origin of what it publishes. */
  readonly hostId: string;
  /** Authentication. */
  readonly auth: ClusterAuth;
  /** TLS, or null for plain TCP (unless a `tls://` URL asks for it). */
  readonly tls: ClusterTls | null;
  /** Stream replicas of both buckets when this broker creates them (1..5). */
  readonly replicas: number;
  /** Storage of both buckets when this broker creates them. */
  readonly storage: "file" | "memory";
  /** Acknowledge a PUT only after the engine committed it (`--cluster-sync`). */
  readonly sync: boolean;
  /** Most bytes of sealed objects waiting for upload at once. */
  readonly maxQueueBytes: number;
  /** Most objects waiting for upload at once. */
  readonly maxQueueEntries: number;
  /** Deadline of one engine request (ms); failed steps are retried. */
  readonly timeoutMs: number;
  /**
   * The blob bucket's `max_bytes` (set when the bucket is created, raised or lowered on an
   * existing one), or null for no limit. Blobs are never collected by the tier: this bounds the
   * engine's storage; uploads into a full bucket wait in the queue (see README).
   */
  readonly maxBytes: number | null;
}

/** Default bucket prefix. */
export const DEFAULT_BUCKET = "memfdbus";
/** Default bound of the upload queue in bytes (4 GiB). */
export const DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024 * 1024;
/** Default bound of the upload queue in objects. */
export const DEFAULT_QUEUE_ENTRIES = 4096;
/** Default deadline of one engine request (ms). */
export const DEFAULT_TIMEOUT_MS = 2000;

/** Options with every default applied for `servers` and `hostId`. */
export function defaultClusterOptions(
  servers: readonly string[],
  hostId: string,
): ClusterOptions {
  return {
    servers,
    bucket: DEFAULT_BUCKET,
    hostId,
    auth: { kind: "none" },
    tls: null,
    replicas: 1,
    storage: "file",
    sync: false,
    maxQueueBytes: DEFAULT_QUEUE_BYTES,
    maxQueueEntries: DEFAULT_QUEUE_ENTRIES,
    timeoutMs: DEFAULT_TIMEOUT_MS,
    maxBytes: null,
  };
}

const URL_RE = /^(nats|tls):\/\/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

/** True for a `nats://host:port` or `tls://host:port` URL with a port from 1 to 65535. */
export function isServerUrl(url: string): boolean {
  const m = URL_RE.exec(url);
  if (m === null) return false;
  const port = Number(m[3]);
  return port >= 1 && port <= 65535;
}

/** Split and check a `--cluster` value; null when an entry is not a server URL. */
export function parseServerList(value: string): string[] | null {
  const urls = value.split(",").map((s) => s.trim());
  if (urls.length === 0 || urls.some((u) => !isServerUrl(u))) return null;
  return urls;
}

/** A host id: 1 to 255 bytes of printable ASCII without spaces. */
export function isHostId(id: string): boolean {
  return /^[\x21-\x7e]{1,255}$/.test(id);
}

/** The flags the broker's command line adds for the cluster tier. */
export interface ClusterFlags {
  /** `--cluster nats://h:p[,nats://...]`. */
  readonly cluster?: string;
  /** `--host-id ID`. */
  readonly hostId?: string;
  /** `--cluster-sync`. */
  readonly clusterSync?: boolean;
}

/**
 * Apply command-line flags over options from a file (or none). Returns null when neither asks
 * for a cluster. Errors read `invalid --cluster: VALUE`, as for the other broker flags.
 *
 * @param flags the parsed flags
 * @param fromFile options from the configuration file, if it had a `cluster` key
 * @param hostname the default host id
 */
export function applyClusterFlags(
  flags: ClusterFlags,
  fromFile: ClusterOptions | null,
  hostname: string,
): ClusterOptions | null {
  let o = fromFile;
  if (flags.cluster !== undefined) {
    const servers = parseServerList(flags.cluster);
    if (servers === null) throw new UsageError(`invalid --cluster: ${flags.cluster}`);
    o = { ...(o ?? defaultClusterOptions(servers, hostname)), servers };
  }
  if (o === null) {
    if (flags.hostId !== undefined) throw new UsageError("--host-id needs --cluster");
    if (flags.clusterSync === true) throw new UsageError("--cluster-sync needs --cluster");
    return null;
  }
  if (flags.hostId !== undefined) {
    if (!isHostId(flags.hostId)) throw new UsageError(`invalid --host-id: ${flags.hostId}`);
    o = { ...o, hostId: flags.hostId };
  }
  if (flags.clusterSync === true) o = { ...o, sync: true };
  if (!isHostId(o.hostId)) {
    throw new UsageError(`invalid host id (from the host name): ${o.hostId}; give --host-id`);
  }
  return o;
}

type Fail = (msg: string) => never;

const defaultFail: Fail = (msg) => {
  throw new UsageError(`cluster.${msg}`);
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function path(v: unknown, key: string, fail: Fail): string {
  if (typeof v !== "string" || v === "" || v.includes("\0")) {
    return fail(`${key}: expected a non-empty path`);
  }
  return v;
}

function int(v: unknown, key: string, min: number, max: number, fail: Fail): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    return fail(`${key}: expected an integer from ${min} to ${max}`);
  }
  return v;
}

const CLUSTER_KEYS = new Set([
  "servers",
  "bucket",
  "hostId",
  "credentials",
  "token",
  "nkey",
  "tls",
  "replicas",
  "storage",
  "sync",
  "maxQueueBytes",
  "maxQueueEntries",
  "timeoutMs",
  "maxBytes",
]);

/**
 * Parse the value of the `cluster` key of a configuration file (already decoded from JSONC).
 * Mistakes are reported through `fail` with the key path, for example
 * `replicas: expected an integer from 1 to 5`; by default as a UsageError
 * `cluster.replicas: expected an integer from 1 to 5`.
 *
 * @param value the decoded value
 * @param hostname the default host id
 * @param fail reports a mistake (config.ts adds the file and line)
 */
export function parseClusterConfig(
  value: unknown,
  hostname: string,
  fail: Fail = defaultFail,
): ClusterOptions {
  if (!isObject(value)) return fail('expected an object such as { "servers": ["nats://h:4222"] }');
  for (const key of Object.keys(value)) {
    if (!CLUSTER_KEYS.has(key)) fail(`${key}: unknown key`);
  }
  const rawServers = value.servers;
  let servers: string[] | null = null;
  if (typeof rawServers === "string") servers = parseServerList(rawServers);
  if (Array.isArray(rawServers) && rawServers.length > 0) {
    servers = rawServers.every((s) => typeof s === "string" && isServerUrl(s))
      ? rawServers as string[]
      : null;
  }
  if (servers === null) return fail('servers: expected URLs such as ["nats://127.0.0.1:4222"]');
  let o = defaultClusterOptions(servers, hostname);
  const v = value;
  if (v.bucket !== undefined) {
    if (typeof v.bucket !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(v.bucket)) {
      return fail("bucket: expected 1 to 64 of A-Z a-z 0-9 _ -");
    }
    o = { ...o, bucket: v.bucket };
  }
  if (v.hostId !== undefined) {
    if (typeof v.hostId !== "string" || !isHostId(v.hostId)) {
      return fail("hostId: expected 1 to 255 printable ASCII characters without spaces");
    }
    o = { ...o, hostId: v.hostId };
  }
  const auths = ["credentials", "token", "nkey"].filter((k) => v[k] !== undefined);
  if (auths.length > 1) return fail(`${auths[1]}: only one of credentials, token, nkey`);
  if (v.credentials !== undefined) {
    o = { ...o, auth: { kind: "credentials", file: path(v.credentials, "credentials", fail) } };
  }
  if (v.nkey !== undefined) o = { ...o, auth: { kind: "nkey", file: path(v.nkey, "nkey", fail) } };
  if (v.token !== undefined) {
    if (typeof v.token !== "string" || v.token === "") return fail("token: expected a string");
    o = { ...o, auth: { kind: "token", token: v.token } };
  }
  if (v.tls !== undefined) {
    if (v.tls === true) o = { ...o, tls: {} };
    else if (v.tls === false) o = { ...o, tls: null };
    else if (isObject(v.tls)) {
      const tls: { ca?: string; cert?: string; key?: string } = {};
      for (const [k, p] of Object.entries(v.tls)) {
        if (k !== "ca" && k !== "cert" && k !== "key") return fail(`tls.${k}: unknown key`);
        tls[k] = path(p, `tls.${k}`, fail);
      }
      if ((tls.cert === undefined) !== (tls.key === undefined)) {
        return fail("tls: cert and key go together");
      }
      o = { ...o, tls };
    } else return fail('tls: expected true or { "ca", "cert", "key" }');
  }
  if (v.replicas !== undefined) o = { ...o, replicas: int(v.replicas, "replicas", 1, 5, fail) };
  if (v.storage !== undefined) {
    if (v.storage !== "file" && v.storage !== "memory") {
      return fail('storage: expected "file" or "memory"');
    }
    o = { ...o, storage: v.storage };
  }
  if (v.sync !== undefined) {
    if (typeof v.sync !== "boolean") return fail("sync: expected true or false");
    o = { ...o, sync: v.sync };
  }
  if (v.maxQueueBytes !== undefined) {
    o = {
      ...o,
      maxQueueBytes: int(v.maxQueueBytes, "maxQueueBytes", 1, Number.MAX_SAFE_INTEGER, fail),
    };
  }
  if (v.maxQueueEntries !== undefined) {
    o = { ...o, maxQueueEntries: int(v.maxQueueEntries, "maxQueueEntries", 1, 1 << 20, fail) };
  }
  if (v.maxBytes !== undefined) {
    o = { ...o, maxBytes: int(v.maxBytes, "maxBytes", 1, Number.MAX_SAFE_INTEGER, fail) };
  }
  if (v.timeoutMs !== undefined) {
    o = { ...o, timeoutMs: int(v.timeoutMs, "timeoutMs", 100, 600_000, fail) };
  }
  return o;
}
