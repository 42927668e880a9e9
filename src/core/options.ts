/**
 * Broker options: defaults, limits and the `memfdbus broker` flag parser. Pure: no I/O.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { type IdentityPolicy, OPEN_POLICY } from "./policy.ts";
import { NAME_HARD_MAX } from "../protocol/wire.ts";
import { NO_QUOTAS, type PinRule, type Quotas, type RetentionRule } from "./governance.ts";
import { DEFAULT_PEER_LIMITS, type PeerLimits } from "./fair_shares.ts";
import { DEFAULT_AUDIT_UID_RATE } from "./audit_budget.ts";
import { applyClusterFlags, type ClusterFlags, type ClusterOptions } from "../cluster/options.ts";

/**
 * The socket every command uses unless told otherwise.
 *
 * @example
 * ```ts
 * import { Client, DEFAULT_SOCKET } from "@memfdbus/memfdbus";
 * const client = new Client();
 * console.log(client.socket === DEFAULT_SOCKET); // true: "/tmp/memfdbus.sock"
 * client.close();
 * ```
 */
export const DEFAULT_SOCKET = "/tmp/memfdbus.sock";

const U32_MAX = 4294967295n;
const U64_MAX = 18446744073709551615n;
const INT_MAX = 2147483647n;
/** The largest byte count kept as a number (2^53 - 1). */
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Where the broker serves `/metrics`: a TCP address (meant for loopback, e.g. `127.0.0.1:9464`)
 * or a Unix socket path.
 */
export type MetricsAddress =
  | { readonly kind: "tcp"; readonly hostname: string; readonly port: number }
  | { readonly kind: "unix"; readonly path: string };

/**
 * Parse a metrics address: `HOST:PORT` (HOST an IPv4 address, `localhost` or `[IPv6]`; PORT
 * 1..65535) or a Unix socket path starting with `/` or `.`. Null when it is neither.
 * For example `parseMetricsAddress("127.0.0.1:9464")` is
 * `{ kind: "tcp", hostname: "127.0.0.1", port: 9464 }`.
 */
export function parseMetricsAddress(value: string): MetricsAddress | null {
  if (value.startsWith("/") || value.startsWith(".")) {
    return value.length > 1 && !value.includes("\0") ? { kind: "unix", path: value } : null;
  }
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:.]+\]):(\d{1,5})$/.exec(value);
  if (m === null) return null;
  const host = m[1] ?? "";
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  if (host.includes(".") && !host.startsWith("[")) {
    if (host.split(".").some((o) => Number(o) > 255)) return null;
  }
  const hostname = host.startsWith("[") ? host.slice(1, -1) : host;
  return { kind: "tcp", hostname, port };
}

/**
 * Default of `--max-metadata-bytes`: 1 GiB. Deno's default V8 heap limit is about 4 GiB on a
 * 64-bit host with enough memory (`heap_size_limit` 4,395,630,592 bytes here, Deno 2.9.6), and
 * less on small hosts or under `--max-old-space-size`; metadata charges approximate the heap the
 * objects retain (see `OBJECT_OVERHEAD_BYTES`), so 1 GiB leaves three quarters of the default
 * heap for replies, LIST snapshots, hashing and garbage. A hostile uid's share is 768 MiB.
 */
export const DEFAULT_MAX_METADATA_BYTES: bigint = 1n << 30n;

/**
 * Everything that configures a broker.
 *
 * @example Defaults with a few changes
 * ```ts
 * import { type BrokerOptions, defaultBrokerOptions } from "@memfdbus/memfdbus";
 * const options: BrokerOptions = { ...defaultBrokerOptions(), maxObjects: 65_000n, maxClients: 256 };
 * console.log(options.socket, options.socketMode.toString(8)); // /tmp/memfdbus.sock 600
 * ```
 */
export interface BrokerOptions {
  /** Socket path (--socket). */
  socket: string;
  /** Longest name accepted in PUT/GET/DROP (--max-name-bytes, 1..65536). */
  maxNameBytes: number;
  /** Most objects stored at once (--max-objects). */
  maxObjects: bigint;
  /** Largest sum of the four body lengths of a request (--max-request-bytes). */
  maxRequestBytes: number;
  /** Largest LIST text (--max-list-bytes). */
  maxListBytes: number;
  /** Most bytes stored at once (--max-total-bytes). */
  maxTotalBytes: bigint;
  /**
   * Most bytes of object metadata held at once (--max-metadata-bytes, 1 GiB): each object is
   * charged its name, owner and allowed job bytes plus a fixed overhead (`metadataCost` in
   * src/core/store.ts). Bounds the broker's heap, which names live on whatever dedup shares.
   * Each uid other than root and the broker's own may hold 3/4 (`peerLimits.metadataBytes`).
   */
  maxMetadataBytes: bigint;
  /** listen(2) backlog (--listen-backlog). */
  listenBacklog: number;
  /** Most connections open at once (--max-clients). */
  maxClients: number;
  /** Time a client has to complete a request once its connection is accepted (ms). */
  requestTimeoutMs: number;
  /** Time a kept-alive connection may sit idle between requests (ms). */
  idleTimeoutMs: number;
  /** Longest a GET --wait may be parked (ms). */
  maxWaitMs: number;
  /** Most GET --wait requests parked at once. */
  maxWaiters: number;
  /**
   * Most watch streams open at once (--max-watchers, 64). Each uid may hold 3/4 of them
   * (`peerLimits.watchers`); each costs a connection and a bounded queue.
   */
  maxWatchers: number;
  /**
   * Hand consumers O_RDONLY descriptors (--read-only-fds). Off by default: the C broker hands
   * out O_RDWR ones, and C programs check that a write fails with EPERM (the seals), where an
   * O_RDONLY descriptor fails with EBADF (defect D21, kept unless asked).
   */
  readOnlyFds: boolean;
  /** Permission bits of the socket file (--socket-mode, octal; 0600 by default). */
  socketMode: number;
  /** Add the peer's pid, uid and gid to every audit record (--audit-peer). */
  auditPeer: boolean;
  /**
   * Bytes of audit records a second each uid other than root and the broker's own may have
   * written (--audit-uid-rate, config `auditUidRate`; 1 MiB/s by default). Records past the
   * budget are dropped, counted, and summed up in one summary record (see
   * `src/core/audit_budget.ts`).
   */
  auditUidRate: number;
  /**
   * The most audit bytes such a uid may have written at once (--audit-uid-burst, config
   * `auditUidBurst`), or null for 16 times `auditUidRate`.
   */
  auditUidBurst: number | null;
  /** Identity policy (--policy FILE, --require-job, --protect-names). */
  policy: IdentityPolicy;
  /** The shadow's socket path (--shadow), or null for no shadow. */
  shadow: string | null;
  /** Versions of each name kept (--keep-versions), or null for all of them, as in C. */
  keepVersions: number | null;
  /** Retention per name or name prefix (config `retention`); the longest pattern wins. */
  retention: readonly RetentionRule[];
  /**
   * Per-job and per-uid quotas (config `quotas`). Uids other than root and the broker's own
   * without an entry are held to `perUid`, or when that is not set to 3/4 of `maxObjects` and
   * `maxTotalBytes` (see `src/core/fair_shares.ts`).
   */
  quotas: Quotas;
  /** Per-uid limits on connections and parked waits (config `peerLimits`; 3/4 by default). */
  peerLimits: PeerLimits;
  /** Over a broker limit, release superseded versions instead of refusing (--evict). */
  evict: "none" | "superseded";
  /** Store identical contents (equal verified digests) on one memfd (on; --no-dedup). */
  dedup: boolean;
  /** Names and prefixes whose versions eviction never releases (config `pin`). */
  pins: readonly PinRule[];
  /** Where to serve Prometheus metrics (--metrics), or null for nowhere. */
  metrics: MetricsAddress | null;
  /**
   * The cluster tier (--cluster URLS, --host-id, --cluster-sync, config `cluster`), or null for
   * none: then nothing of NATS is loaded.
   */
  cluster: ClusterOptions | null;
}

/**
 * The defaults of the C broker, plus this broker's timeouts.
 *
 * @example
 * ```ts
 * import { defaultBrokerOptions } from "@memfdbus/memfdbus";
 * const d = defaultBrokerOptions();
 * console.log(d.maxClients, d.listenBacklog, d.requestTimeoutMs); // 128 128 10000
 * ```
 */
export function defaultBrokerOptions(): BrokerOptions {
  return {
    socket: DEFAULT_SOCKET,
    maxNameBytes: NAME_HARD_MAX,
    maxObjects: U64_MAX,
    maxRequestBytes: Number(U32_MAX),
    maxListBytes: Number(U32_MAX),
    maxTotalBytes: U64_MAX,
    maxMetadataBytes: DEFAULT_MAX_METADATA_BYTES,
    listenBacklog: 128,
    maxClients: 128,
    requestTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
    maxWaitMs: 3_600_000,
    maxWaiters: 1024,
    maxWatchers: 64,
    readOnlyFds: false,
    socketMode: 0o600,
    auditPeer: false,
    auditUidRate: DEFAULT_AUDIT_UID_RATE,
    auditUidBurst: null,
    policy: OPEN_POLICY,
    shadow: null,
    keepVersions: null,
    retention: [],
    pins: [],
    quotas: NO_QUOTAS,
    peerLimits: DEFAULT_PEER_LIMITS,
    evict: "none",
    dedup: true,
    metrics: null,
    cluster: null,
  };
}

/** Parse an octal permission value such as `0600` or `660`. */
export function parseMode(flag: string, value: string): number {
  if (!/^0?[0-7]{3}$/.test(value)) throw new UsageError(`invalid ${flag}: ${value}`);
  return parseInt(value, 8);
}

/**
 * Parse a flag value the way the C broker does: ASCII digits only, non-zero, at most `max`.
 * Throws `invalid <flag>: <value>` otherwise.
 */
export function parsePositive(flag: string, value: string, max: bigint): bigint {
  if (!/^[0-9]+$/.test(value)) throw new UsageError(`invalid ${flag}: ${value}`);
  const n = BigInt(value);
  if (n === 0n || n > max) throw new UsageError(`invalid ${flag}: ${value}`);
  return n;
}

const BYTE_UNITS: Readonly<Record<string, bigint>> = {
  "": 1n,
  B: 1n,
  KiB: 1n << 10n,
  MiB: 1n << 20n,
  GiB: 1n << 30n,
  TiB: 1n << 40n,
};

/**
 * Parse a byte count: ASCII digits with an optional `B`, `KiB`, `MiB`, `GiB` or `TiB` suffix
 * (`65536`, `64KiB`, `1 MiB`), non-zero and at most `max`; null otherwise.
 */
export function parseByteCount(value: string, max: bigint): bigint | null {
  const m = /^([0-9]+)\s?(B|KiB|MiB|GiB|TiB)?$/.exec(value);
  if (m === null) return null;
  const v = BigInt(m[1] ?? "0") * (BYTE_UNITS[m[2] ?? ""] ?? 1n);
  return v >= 1n && v <= max ? v : null;
}

type Setter = (o: BrokerOptions, v: string, flag: string) => void;

/** A flag taking a byte count (see {@link parseByteCount}) up to 2^53 - 1. */
const bytesFlag = (set: (o: BrokerOptions, n: number) => void): Setter => (o, v, f) => {
  const n = parseByteCount(v, SAFE_MAX);
  if (n === null) throw new UsageError(`invalid ${f}: ${v}`);
  set(o, Number(n));
};

const num = (max: bigint, set: (o: BrokerOptions, n: number) => void): Setter => (o, v, f) =>
  set(o, Number(parsePositive(f, v, max)));
const big = (max: bigint, set: (o: BrokerOptions, n: bigint) => void): Setter => (o, v, f) =>
  set(o, parsePositive(f, v, max));

/** Flags taking a value, in the order the usage text lists them. */
const FLAGS: Readonly<Record<string, Setter>> = {
  "--socket": (o, v) => (o.socket = v),
  "--max-name-bytes": num(BigInt(NAME_HARD_MAX), (o, n) => (o.maxNameBytes = n)),
  "--max-objects": big(U64_MAX, (o, n) => (o.maxObjects = n)),
  "--max-request-bytes": num(U32_MAX, (o, n) => (o.maxRequestBytes = n)),
  "--max-list-bytes": num(U32_MAX, (o, n) => (o.maxListBytes = n)),
  "--max-total-bytes": big(U64_MAX, (o, n) => (o.maxTotalBytes = n)),
  "--max-metadata-bytes": big(U64_MAX, (o, n) => (o.maxMetadataBytes = n)),
  "--listen-backlog": num(INT_MAX, (o, n) => (o.listenBacklog = n)),
  "--max-clients": num(U64_MAX, (o, n) => (o.maxClients = n)),
  "--request-timeout-ms": num(INT_MAX, (o, n) => (o.requestTimeoutMs = n)),
  "--idle-timeout-ms": num(INT_MAX, (o, n) => (o.idleTimeoutMs = n)),
  "--max-wait-ms": num(INT_MAX, (o, n) => (o.maxWaitMs = n)),
  "--max-waiters": num(INT_MAX, (o, n) => (o.maxWaiters = n)),
  "--max-watchers": num(INT_MAX, (o, n) => (o.maxWatchers = n)),
  "--socket-mode": (o, v, f) => (o.socketMode = parseMode(f, v)),
  "--shadow": (o, v) => (o.shadow = v),
  "--keep-versions": num(INT_MAX, (o, n) => (o.keepVersions = n)),
  "--audit-uid-rate": bytesFlag((o, n) => (o.auditUidRate = n)),
  "--audit-uid-burst": bytesFlag((o, n) => (o.auditUidBurst = n)),
  "--evict": (o, v, f) => {
    if (v !== "superseded" && v !== "none") throw new UsageError(`invalid ${f}: ${v}`);
    o.evict = v;
  },
  "--metrics": (o, v, f) => {
    const address = parseMetricsAddress(v);
    if (address === null) throw new UsageError(`invalid ${f}: ${v}`);
    o.metrics = address;
  },
  // Files are read by the command before parsing; here their values are only skipped.
  "--config": () => {},
  "--policy": () => {},
  // The cluster flags are gathered and applied together at the end (see parseBrokerArgs).
  "--cluster": () => {},
  "--host-id": () => {},
};

/** Flags without a value. */
const SWITCHES: Readonly<Record<string, (o: BrokerOptions) => void>> = {
  "--audit-peer": (o) => (o.auditPeer = true),
  "--read-only-fds": (o) => (o.readOnlyFds = true),
  "--protect-names": (o) => (o.policy = { ...o.policy, protectNames: true }),
  "--require-job": (o) => (o.policy = { ...o.policy, requireJob: true }),
  "--no-dedup": (o) => (o.dedup = false),
  "--cluster-sync": () => {},
};

/**
 * The broker's flags (with their dashes): those taking a value, then the switches. `--takeover`,
 * a switch the command handles itself, is not among them.
 */
export const BROKER_FLAGS: {
  readonly valued: readonly string[];
  readonly switches: readonly string[];
} = { valued: Object.keys(FLAGS), switches: Object.keys(SWITCHES) };

/** The value of the last occurrence of a flag that takes a value, if any. */
export function lastFlagValue(args: readonly string[], flag: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === flag) value = args[i + 1];
    if (a !== undefined && (Object.hasOwn(FLAGS, a))) i++;
  }
  return value;
}

/**
 * Parse the arguments after `broker`. Flags may repeat (the last wins); the first bad one ends
 * parsing with a {@link UsageError}, as in the C broker.
 *
 * @example
 * ```ts
 * import { parseBrokerArgs } from "@memfdbus/memfdbus";
 * const o = parseBrokerArgs(["--socket", "/run/memfdbus.sock", "--max-objects", "1000"]);
 * console.log(o.socket, o.maxObjects); // /run/memfdbus.sock 1000n
 * ```
 *
 * @param args the arguments after `broker`
 * @param base options to start from (defaults, or a configuration file's)
 * @param hostname the default host id of `--cluster` (asked only then)
 */
export function parseBrokerArgs(
  args: readonly string[],
  base: BrokerOptions = defaultBrokerOptions(),
  hostname: () => string = () => "localhost",
): BrokerOptions {
  const o = { ...base };
  const cluster: { cluster?: string; hostId?: string; clusterSync?: boolean } = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    const toggle = Object.hasOwn(SWITCHES, arg) ? SWITCHES[arg] : undefined;
    if (toggle !== undefined) {
      toggle(o);
      if (arg === "--cluster-sync") cluster.clusterSync = true;
      continue;
    }
    const set = Object.hasOwn(FLAGS, arg) ? FLAGS[arg] : undefined;
    if (set === undefined) throw new UsageError(`unexpected argument: ${arg}`);
    const value = args[i + 1];
    if (value === undefined) throw new UsageError(`missing value for ${arg}`);
    i++;
    set(o, value, arg);
    if (arg === "--cluster") cluster.cluster = value;
    if (arg === "--host-id") cluster.hostId = value;
  }
  const flags: ClusterFlags = cluster;
  if (o.cluster !== null || flags.cluster !== undefined) {
    // The host name (a system call, the caller's) is asked only when it is the host id.
    const host = o.cluster === null && flags.hostId === undefined ? hostname() : "";
    o.cluster = applyClusterFlags(flags, o.cluster, host);
  } else applyClusterFlags(flags, null, "");
  return o;
}
