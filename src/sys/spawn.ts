/**
 * Running a command with its stdout on a given descriptor (posix_spawnp(3) with a dup2 file
 * action) and waiting for it (waitpid(2)). stdin and stderr are inherited. No fork() from JS.
 *
 * @module
 */

import { constants } from "node:os";
import { errno, errnoErrorOf, libc } from "../ffi.ts";
import {
  EINTR,
  F_DUPFD_CLOEXEC,
  P_PID,
  SIGINFO_PID,
  SIGINFO_SIZE,
  WEXITED,
  WNOHANG,
  WNOWAIT,
} from "./linux.ts";

/** sizeof(posix_spawn_file_actions_t) on LP64 glibc (x86_64 and aarch64). */
const FILE_ACTIONS_SIZE = 80;
/** sizeof(posix_spawnattr_t) on LP64 glibc. */
const SPAWNATTR_SIZE = 336;
/** sizeof(sigset_t) in glibc. */
const SIGSET_SIZE = 128;
/** POSIX_SPAWN_SETSIGDEF: reset the signals in the sigdefault set to SIG_DFL. */
const POSIX_SPAWN_SETSIGDEF = 0x04;
/** POSIX_SPAWN_SETSIGMASK: give the child the attribute's signal mask. */
const POSIX_SPAWN_SETSIGMASK = 0x08;
/** SIGPIPE, which Deno ignores and a child must not inherit ignored. */
const SIGPIPE = 13;

/** How a child process ended. */
export type ChildExit =
  | { readonly kind: "exited"; readonly code: number }
  | { readonly kind: "signaled"; readonly signal: number };

/** The exit code a shell would report: the code, or 128 + the signal number. */
export function exitCodeOf(e: ChildExit): number {
  return e.kind === "exited" ? e.code : 128 + e.signal;
}

/** `exited with status 3`, `was killed by SIGTERM`. */
export function describeExit(e: ChildExit): string {
  if (e.kind === "exited") return `exited with status ${e.code}`;
  const name = Object.entries(constants.signals).find(([, n]) => n === e.signal)?.[0];
  return `was killed by ${name ?? `signal ${e.signal}`}`;
}

/** Decode a waitpid(2) status word (WIFEXITED / WIFSIGNALED). */
export function decodeWaitStatus(status: number): ChildExit {
  const sig = status & 0x7f;
  return sig === 0
    ? { kind: "exited", code: (status >> 8) & 0xff }
    : { kind: "signaled", signal: sig };
}

function pointerTable(strings: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const table = new BigUint64Array(strings.length + 1);
  strings.forEach((
    s,
    i,
  ) => (table[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))));
  return new Uint8Array(table.buffer);
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

function checkRc(rc: number, what: string): void {
  if (rc !== 0) throw errnoErrorOf(what, rc);
}

/**
 * Start `argv[0]` (looked up in PATH) with `argv`, the current environment, and its stdout
 * (descriptor 1) a duplicate of `stdoutFd`. SIGPIPE is reset to its default action and the
 * signal mask cleared in the child. Returns the child's pid; a command that cannot be started
 * fails with `posix_spawnp: <strerror>`.
 */
export function spawnWithStdout(argv: readonly string[], stdoutFd: number): number {
  if (argv.length === 0) throw new TypeError("spawn needs a command");
  // dup2(fd, 1) with fd already 1 would keep its close-on-exec flag: use a copy above 2.
  const src = stdoutFd <= 2 ? libc.symbols.fcntl(stdoutFd, F_DUPFD_CLOEXEC, 3) : stdoutFd;
  if (src < 0) throw errnoErrorOf("fcntl", errno(), "F_DUPFD_CLOEXEC");
  const strings = argv.map(cString);
  const table = pointerTable(strings);
  const actions = new Uint8Array(FILE_ACTIONS_SIZE);
  const attr = new Uint8Array(SPAWNATTR_SIZE);
  const sigdefault = new Uint8Array(SIGSET_SIZE);
  const sigmask = new Uint8Array(SIGSET_SIZE);
  const pid = new Int32Array(1);
  const s = libc.symbols;
  let actionsReady = false;
  let attrReady = false;
  try {
    checkRc(s.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
    actionsReady = true;
    checkRc(
      s.posix_spawn_file_actions_adddup2(actions, src, 1),
      "posix_spawn_file_actions_adddup2",
    );
    checkRc(s.posix_spawnattr_init(attr), "posix_spawnattr_init");
    attrReady = true;
    s.sigemptyset(sigdefault);
    s.sigaddset(sigdefault, SIGPIPE);
    s.sigemptyset(sigmask);
    checkRc(s.posix_spawnattr_setsigdefault(attr, sigdefault), "posix_spawnattr_setsigdefault");
    checkRc(s.posix_spawnattr_setsigmask(attr, sigmask), "posix_spawnattr_setsigmask");
    checkRc(
      s.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK),
      "posix_spawnattr_setflags",
    );
    const environRef = s.environ;
    if (environRef === null) throw new Error("posix_spawnp: environ is not available");
    const envp = new Deno.UnsafePointerView(environRef).getPointer(0);
    const rc = s.posix_spawnp(
      new Uint8Array(pid.buffer),
      strings[0] ?? cString(""),
      actions,
      Deno.UnsafePointer.of(attr),
      table,
      envp,
    );
    checkRc(rc, "posix_spawnp");
    return pid[0] ?? -1;
  } finally {
    if (attrReady) s.posix_spawnattr_destroy(attr);
    if (actionsReady) s.posix_spawn_file_actions_destroy(actions);
    if (src !== stdoutFd) s.close(src);
    // The argument strings and sets must stay reachable until posix_spawnp has returned.
    strings.length = 0;
  }
}

/**
 * Wait for a child to end (blocking the calling thread; a CLI has nothing else to do) and
 * return how it ended. Fails with `waitpid: <strerror>`, for example when SIGCHLD is ignored
 * and the kernel reaped the child itself.
 */
export function waitChild(pid: number): ChildExit {
  const status = new Int32Array(1);
  const cell = new Uint8Array(status.buffer);
  for (;;) {
    const r = libc.symbols.waitpid(pid, cell, 0);
    const e = errno();
    if (r === pid) return decodeWaitStatus(status[0] ?? 0);
    if (r < 0 && e === EINTR) continue;
    throw errnoErrorOf("waitpid", e);
  }
}

const siginfo = new Uint8Array(SIGINFO_SIZE);
const siginfoView = new DataView(siginfo.buffer);

/**
 * True once child `pid` has exited (or is no child of this process any more). waitid(WNOWAIT)
 * looks without reaping it, so whoever owns the child (Deno) still collects its status.
 */
export function childHasExited(pid: number): boolean {
  siginfo.fill(0);
  const r = libc.symbols.waitid(P_PID, pid, siginfo, WEXITED | WNOHANG | WNOWAIT);
  // ECHILD: already reaped. Otherwise si_pid is set once the child has exited.
  return r !== 0 || siginfoView.getInt32(SIGINFO_PID, true) === pid;
}

/** The effective user id of this process. */
export function effectiveUid(): number {
  return libc.symbols.geteuid();
}
