/**
 * Error types callers can catch: a failed system call, a broker that refused a request, a broker
 * that broke the protocol, and an operation that ran out of time.
 *
 * @module
 */

import { ERRNO_NAMES } from "./sys/linux.ts";

/**
 * A system call failed. The message has the C memfdbus form `"<what>: <strerror>"`, for example
 * `connect: No such file or directory`.
 *
 * @example Telling a missing broker apart from other failures
 * ```ts
 * import { Client, ErrnoError } from "@memfdbus/memfdbus";
 * try {
 *   await using client = new Client({ socket: "/tmp/nowhere.sock" });
 *   await client.list();
 * } catch (e) {
 *   if (e instanceof ErrnoError && e.code === "ENOENT") console.error("no broker is running");
 * }
 * ```
 */
export class ErrnoError extends Error {
  /** The errno value, for example 2. */
  readonly errno: number;
  /** The symbolic errno name, for example `"ENOENT"` (or `"E<number>"` when unknown). */
  readonly code: string;
  /** The system call that failed, for example `"connect"`. */
  readonly syscall: string;
  /** The libc description of the errno, for example `"No such file or directory"`. */
  readonly description: string;

  /**
   * Wrap an errno value with the failing call and what the caller was doing.
   *
   * @param syscall the failing system call
   * @param errno the errno value it left
   * @param description strerror(errno)
   * @param context what the caller was doing; defaults to the syscall name
   */
  constructor(syscall: string, errno: number, description: string, context?: string) {
    super(`${context ?? syscall}: ${description}`);
    this.name = "ErrnoError";
    this.errno = errno;
    this.code = ERRNO_NAMES[errno] ?? `E${errno}`;
    this.syscall = syscall;
    this.description = description;
  }
}

/**
 * Reply status codes of protocol v1.
 *
 * @example
 * ```ts
 * import { BrokerError, Status } from "@memfdbus/memfdbus";
 * const e = new BrokerError(Status.NOT_FOUND, "object not found");
 * console.log(e.status === Status.NOT_FOUND, e.message); // true "broker error: object not found"
 * ```
 */
export const Status = {
  /** The request succeeded. */
  OK: 0,
  /** Internal error or quota. */
  ERR: 1,
  /** No such object. */
  NOT_FOUND: 2,
  /** The request was malformed or out of limits. */
  BAD_REQUEST: 3,
  /** The job policy refuses the request. */
  FORBIDDEN: 4,
} as const;

/**
 * One of the protocol v1 status codes (other values can arrive from a misbehaving broker).
 *
 * @example
 * ```ts
 * import { Status, type StatusCode } from "@memfdbus/memfdbus";
 * const retryable = (s: StatusCode): boolean => s === Status.NOT_FOUND || s === Status.ERR;
 * console.log(retryable(Status.FORBIDDEN)); // false
 * ```
 */
export type StatusCode = (typeof Status)[keyof typeof Status];

/**
 * The broker answered with a non-zero status. The message has the C CLI form
 * `broker error: <text>` (or `broker error: request failed` when the broker sent no text).
 *
 * @example Retrying only when the object does not exist yet
 * ```ts ignore
 * import { BrokerError, Client, Status } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * try {
 *   using obj = await client.get({ name: "model.bin" });
 * } catch (e) {
 *   if (e instanceof BrokerError && e.status === Status.NOT_FOUND) console.log("not yet");
 *   else throw e;
 * }
 * ```
 */
export class BrokerError extends Error {
  /** The status code of the reply (1 ERR, 2 NOT_FOUND, 3 BAD_REQUEST, 4 FORBIDDEN). */
  readonly status: number;
  /** The error text the broker sent, possibly empty. */
  readonly text: string;
  /** Extension bits of the reply header's reserved field (see `Flag`). */
  flags = 0;

  /**
   * Wrap a non-zero reply status and its text.
   *
   * @param status the reply status
   * @param text the reply's error text
   */
  constructor(status: number, text: string) {
    super(`broker error: ${text === "" ? "request failed" : text}`);
    this.name = "BrokerError";
    this.status = status;
    this.text = text;
  }
}

/**
 * The broker (or a peer) sent something protocol v1 does not allow, for example a GET reply
 * without a descriptor (`broker did not send an object fd`).
 *
 * @example
 * ```ts ignore
 * import { Client, ProtocolError } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * try {
 *   using obj = await client.get({ name: "model.bin" }, { verify: true });
 * } catch (e) {
 *   if (e instanceof ProtocolError) console.error(`broken broker: ${e.message}`);
 *   else throw e;
 * }
 * ```
 */
export class ProtocolError extends Error {
  /**
   * Describe a protocol violation.
   *
   * @param message what was wrong, in the C library's words where it has them
   */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * A request did not complete before its deadline, for example because the broker is hung.
 *
 * @example
 * ```ts ignore
 * import { Client, TimeoutError } from "@memfdbus/memfdbus";
 * await using client = new Client({ timeoutMs: 2000 });
 * try {
 *   await client.list();
 * } catch (e) {
 *   if (e instanceof TimeoutError) console.error(`no answer within ${e.timeoutMs} ms`);
 *   else throw e;
 * }
 * ```
 */
export class TimeoutError extends Error {
  /** The deadline that passed, in milliseconds. */
  readonly timeoutMs: number;

  /**
   * Describe a deadline that passed.
   *
   * @param what the step that timed out, for example `receive response`
   * @param timeoutMs the deadline in milliseconds
   * @param message the whole message, when `what: timed out after N ms` does not say it well
   */
  constructor(what: string, timeoutMs: number, message?: string) {
    super(message ?? `${what}: timed out after ${timeoutMs} ms`);
    this.name = "TimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/**
 * A command line or configuration mistake. The message is the exact line the CLI prints, for
 * example `invalid --max-objects: 0`.
 *
 * @example
 * ```ts
 * import { parseBrokerArgs, UsageError } from "@memfdbus/memfdbus";
 * try {
 *   parseBrokerArgs(["--max-objects", "0"]);
 * } catch (e) {
 *   if (e instanceof UsageError) console.error(e.message); // invalid --max-objects: 0
 * }
 * ```
 */
export class UsageError extends Error {
  /**
   * Wrap a message meant for the user.
   *
   * @param message the text to show the user
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * The broker does not know an extension the call needs (a C memfdbus broker, or an older
 * memfdbus, answered `unknown command`), as in
 * `the broker does not support usage (a C memfdbus broker or an older memfdbus)`.
 *
 * @example
 * ```ts ignore
 * import { Client, UnsupportedError } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * try {
 *   console.log(await client.usage());
 * } catch (e) {
 *   if (e instanceof UnsupportedError) console.error(e.message);
 *   else throw e;
 * }
 * ```
 */
export class UnsupportedError extends Error {
  /** The extension, for example `usage`. */
  readonly feature: string;

  /**
   * Name the extension the broker lacks.
   *
   * @param feature the extension, for example `usage`
   */
  constructor(feature: string) {
    super(`the broker does not support ${feature} (a C memfdbus broker or an older memfdbus)`);
    this.name = "UnsupportedError";
    this.feature = feature;
  }
}

/**
 * Why a descriptor failed the sealed-memfd check: bad descriptor, fstat failure, not a regular
 * file, size other than claimed, F_GET_SEALS failure, or seals missing.
 *
 * @example
 * ```ts
 * import { inspectSealedFd, isFdProblem, Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("unsealed");
 * const r = inspectSealedFd(memfd.fd);
 * if (isFdProblem(r)) console.log(r.kind); // "seals"
 * ```
 */
export type FdProblem =
  | { readonly kind: "bad-fd" }
  | { readonly kind: "fstat"; readonly errno: number }
  | { readonly kind: "not-regular" }
  | { readonly kind: "size"; readonly actual: bigint }
  | { readonly kind: "get-seals"; readonly errno: number }
  | { readonly kind: "seals"; readonly seals: number };
