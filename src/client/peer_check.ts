/**
 * The client's check that it reached the intended broker: the uid of the process listening on
 * the socket (SO_PEERCRED, recorded by the kernel when the broker called listen; it cannot be
 * forged) must be root, the client's own uid, or the uid named by `MEMFDBUS_BROKER_UID` (a
 * number or a user name from /etc/passwd), by the CLI's `--broker-uid` flag, or by the client's
 * `brokerUid` option (which wins over both). In a shared
 * directory such as /tmp another user can create the socket path first; without this check the
 * client would hand that user its objects and take theirs as the broker's.
 *
 * @module
 */

import { libc } from "../ffi.ts";
import { peerUid } from "../sys/peer_uid.ts";

/**
 * Thrown when the process listening on the socket runs as a user the client does not trust.
 *
 * @example
 * ```ts
 * import { BrokerIdentityError } from "@memfdbus/memfdbus";
 * const e = new BrokerIdentityError("/tmp/memfdbus.sock", 65534, [0, 1000]);
 * console.log(e.message);
 * // refusing the broker on /tmp/memfdbus.sock: it runs as uid 65534, expected uid 0 or 1000 (set --broker-uid or MEMFDBUS_BROKER_UID to trust another)
 * ```
 */
export class BrokerIdentityError extends Error {
  /** The socket path. */
  readonly path: string;
  /** The uid the listener runs as (-1 when unknown). */
  readonly uid: number;

  /**
   * Describe a refused broker.
   *
   * @param path the socket path
   * @param uid the listener's uid
   * @param expected the uids that were acceptable
   */
  constructor(path: string, uid: number, expected: readonly number[]) {
    super(
      `refusing the broker on ${path}: it runs as ${uid < 0 ? "an unknown uid" : `uid ${uid}`}, ` +
        `expected uid ${expected.join(" or ")} ` +
        `(set --broker-uid or MEMFDBUS_BROKER_UID to trust another)`,
    );
    this.name = "BrokerIdentityError";
    this.path = path;
    this.uid = uid;
  }
}

/** A uid from a number or a user name in /etc/passwd; undefined when neither. */
export function resolveUid(spec: string): number | undefined {
  const t = spec.trim();
  if (/^[0-9]{1,10}$/.test(t)) return Number(t);
  try {
    for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
      const f = line.split(":");
      if (f[0] === t && f[2] !== undefined && /^[0-9]+$/.test(f[2])) return Number(f[2]);
    }
  } catch {
    // No passwd file or no permission: the name cannot be resolved.
  }
  return undefined;
}

let fromEnv: { value: string | undefined } | null = null;
let fromFlag: string | undefined;

/**
 * Set the uid (or user name) a client trusts as the broker when its options name none, in place
 * of `MEMFDBUS_BROKER_UID`: the CLI's `--broker-uid` flag. Undefined goes back to the variable.
 */
export function setDefaultBrokerUid(spec: string | undefined): void {
  fromFlag = spec;
}

function envBrokerUid(): string | undefined {
  if (fromFlag !== undefined) return fromFlag;
  if (fromEnv === null) {
    let value: string | undefined;
    try {
      value = Deno.env.get("MEMFDBUS_BROKER_UID");
    } catch {
      value = undefined; // no --allow-env: only the defaults
    }
    fromEnv = { value };
  }
  return fromEnv.value;
}

/**
 * The uids a client accepts as its broker: root, itself, and `brokerUid` (or
 * `MEMFDBUS_BROKER_UID` when that is not given).
 *
 * @throws {TypeError} when the named user does not exist
 */
export function expectedBrokerUids(brokerUid?: number | string): number[] {
  const out = [0];
  const me = libc.symbols.geteuid();
  if (me !== 0) out.push(me);
  const spec = brokerUid ?? envBrokerUid();
  if (spec !== undefined && spec !== "") {
    const uid = typeof spec === "number" ? spec : resolveUid(spec);
    if (uid === undefined) throw new TypeError(`unknown broker user: "${spec}"`);
    if (!out.includes(uid)) out.push(uid);
  }
  return out;
}

/**
 * Check the broker on a freshly connected socket.
 *
 * @param fd the connected socket
 * @param path its path, for the message
 * @param brokerUid an extra uid (or user name) to trust, instead of MEMFDBUS_BROKER_UID
 * @throws {BrokerIdentityError} for any other listener
 */
export function checkBrokerPeer(fd: number, path: string, brokerUid?: number | string): void {
  const uid = peerUid(fd);
  const expected = expectedBrokerUids(brokerUid);
  if (!expected.includes(uid)) throw new BrokerIdentityError(path, uid, expected);
}
