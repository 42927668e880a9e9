/**
 * What a {@link Client} is configured with and what its calls take and return: options, per-call
 * job overrides, results, the default timeout, and the job id from the environment.
 *
 * @module
 */

import { DEFAULT_SOCKET } from "../core/options.ts";

/**
 * Options of a {@link Client}.
 *
 * @example A client of the system broker, acting for one job, with a shorter timeout
 * ```ts
 * import { Client } from "@memfdbus/memfdbus";
 * const client = new Client({ socket: "/run/memfdbus.sock", jobId: "trainer", timeoutMs: 5000 });
 * console.log(client.socket, client.jobId); // nothing is connected until the first request
 * client.close();
 * ```
 */
export interface ClientOptions {
  /** Broker socket path; MEMFDBUS_SOCKET, else `/tmp/memfdbus.sock`, by default. */
  readonly socket?: string;
  /**
   * The job id requests carry. Undefined: `MEMFDBUS_JOB_ID` when it is set and non-empty.
   * Null: no job (unscoped), whatever the environment says.
   */
  readonly jobId?: string | null;
  /** Milliseconds a request may take before it fails with TimeoutError (default 30000). */
  readonly timeoutMs?: number;
  /** Reuse a connection for several requests where the broker allows it (default true). */
  readonly keepAlive?: boolean;
  /**
   * Microseconds a reply may be awaited on the calling thread before waiting off-thread
   * (default 250). A broker usually answers within that, and waiting here saves a thread hop;
   * the caller's event loop is never held longer than this per receive. 0 disables it.
   */
  readonly syncWaitUs?: number;
}

/**
 * Per-call job override: a job id, or null for an unscoped request.
 *
 * @example Listing as another job than the client's
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client({ jobId: "trainer" });
 * const mine = await client.list(); // as "trainer"
 * const all = await client.list({ jobId: null }); // unscoped
 * console.log(mine.length, all.length);
 * ```
 */
export interface JobOption {
  /** The job id for this call; overrides the client's. */
  readonly jobId?: string | null;
}

/**
 * Options of {@link Client.put}.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client({ jobId: "trainer" });
 * await client.put("./weights.bin", { name: "weights", allowJob: "inference" });
 * const { name } = await client.put(new Uint8Array([1, 2, 3]), { contentAddressed: true });
 * console.log(name); // sha256:039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81
 * ```
 */
export interface PutOptions extends JobOption {
  /**
   * The object name. Defaults to the file's base name for a path source, else required
   * (unless `contentAddressed`).
   */
  readonly name?: string | Uint8Array;
  /** Publish under the digest string as name. Cannot be combined with `name`. */
  readonly contentAddressed?: boolean;
  /** The one other job that may read the object; requires a job id. */
  readonly allowJob?: string;
}

/**
 * Options of {@link Client.get}.
 *
 * @example Waiting up to ten seconds for a name, and checking what arrived
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * using obj = await client.get({ name: "model.bin" }, { wait: 10_000, verify: true });
 * console.log(obj.size);
 * ```
 */
export interface GetOptions extends JobOption {
  /** Recompute the digest of what arrived and fail on a mismatch (costs one pass over it). */
  readonly verify?: boolean;
  /**
   * By name only: if nothing has that name yet, wait up to this many milliseconds (true: as long
   * as the broker allows) for it to be published. The broker answers as soon as it is; a broker
   * without the extension (the C one) is asked again with a growing pause instead.
   */
  readonly wait?: number | boolean;
}

/**
 * What {@link Client.stat} reports about an object.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const st = await client.stat({ name: "model.bin" });
 * console.log(st.id, st.size, st.digest, st.owner ?? "-", st.createdNs);
 * ```
 */
export interface ObjectStat {
  /** Object id. */
  readonly id: bigint;
  /** Name. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /** Digest string. */
  readonly digest: string;
  /** Owner job, or null. */
  readonly owner: string | null;
  /** Allowed job, or null. */
  readonly allowed: string | null;
  /** When it was published (CLOCK_REALTIME ns), or null when the broker cannot say. */
  readonly createdNs: bigint | null;
  /** Its seals (F_GET_SEALS bits), or null when unknown. */
  readonly seals: number | null;
}

/**
 * The result of a successful PUT.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const { id, size, digest, name } = await client.put("./model.bin");
 * console.log(`${id} ${size} ${digest} ${name}`);
 * ```
 */
export interface PutResult {
  /** The new object id. */
  readonly id: bigint;
  /** Size in bytes. */
  readonly size: number;
  /** `sha256:<hex>` of the contents. */
  readonly digest: string;
  /** The name it was published under. */
  readonly name: string;
}

/**
 * The result of a successful DROP.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const { id, size } = await client.drop({ name: "model.bin" }); // the newest version
 * console.log(`dropped ${id} (${size} bytes)`);
 * ```
 */
export interface DropResult {
  /** The dropped id. */
  readonly id: bigint;
  /** Its size. */
  readonly size: number;
}

/** How long `wait: true` may take on the client's side (the broker's own limit usually ends it first). */
export const WAIT_FOREVER_MS = 7 * 24 * 3_600_000;

/**
 * The default per-request timeout.
 *
 * @example
 * ```ts
 * import { Client, DEFAULT_TIMEOUT_MS } from "@memfdbus/memfdbus";
 * const patient = new Client({ timeoutMs: 4 * DEFAULT_TIMEOUT_MS }); // two minutes
 * patient.close();
 * ```
 */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Extra time a PUT allows per byte, for the broker's digest check (100 MB/s). */
export const PUT_MS_PER_BYTE = 1 / 100_000;

/**
 * The socket a client uses when none is given: MEMFDBUS_SOCKET when set and non-empty, else
 * `/tmp/memfdbus.sock`.
 *
 * @example
 * ```ts
 * import { defaultSocket } from "@memfdbus/memfdbus";
 * console.log(defaultSocket()); // "/tmp/memfdbus.sock" unless MEMFDBUS_SOCKET is set
 * ```
 */
export function defaultSocket(): string {
  try {
    const v = Deno.env.get("MEMFDBUS_SOCKET");
    return v === undefined || v === "" ? DEFAULT_SOCKET : v;
  } catch {
    return DEFAULT_SOCKET;
  }
}

/**
 * Read MEMFDBUS_JOB_ID, treating an empty value or a denied permission as unset.
 *
 * @example
 * ```ts
 * import { jobIdFromEnv } from "@memfdbus/memfdbus";
 * Deno.env.set("MEMFDBUS_JOB_ID", "trainer");
 * console.log(jobIdFromEnv()); // "trainer"
 * Deno.env.set("MEMFDBUS_JOB_ID", "");
 * console.log(jobIdFromEnv()); // null
 * Deno.env.delete("MEMFDBUS_JOB_ID");
 * ```
 */
export function jobIdFromEnv(): string | null {
  try {
    const v = Deno.env.get("MEMFDBUS_JOB_ID");
    return v === undefined || v === "" ? null : v;
  } catch {
    return null;
  }
}
