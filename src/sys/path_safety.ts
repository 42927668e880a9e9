/**
 * Refusing socket paths that another user could take over.
 *
 * A broker's socket and its shadow's socket are names in a directory; whoever can write that
 * directory can remove the broker's socket and put their own in its place, or create the name
 * first. So a path is accepted only when every directory above it belongs to root or to this
 * user and cannot be written by anyone else, unless it is sticky (like `/tmp`): there other
 * users cannot remove or rename this user's files, so a sticky directory holding the socket is
 * accepted when nothing exists at the path yet or what exists belongs to this user.
 *
 * Binding stays race-free under that rule: in a sticky directory nobody else can replace a file
 * of this user between the check and the bind, and if another user creates the name after a
 * stale socket was removed, bind(2) fails with EADDRINUSE instead of serving on their file.
 *
 * @module
 */

import { libc } from "../ffi.ts";

const S_ISVTX = 0o1000;

/**
 * Thrown for a socket path in a directory that other users can write.
 *
 * @example
 * ```ts
 * import { UnsafePathError } from "@memfdbus/memfdbus";
 * const e = new UnsafePathError("/srv/x/bus.sock", "directory /srv/x is writable by other users");
 * console.log(e.name, e.path); // UnsafePathError /srv/x/bus.sock
 * ```
 */
export class UnsafePathError extends Error {
  /** The refused path. */
  readonly path: string;

  /**
   * Describe a refused path.
   *
   * @param path the refused path
   * @param reason why, ending the message
   */
  constructor(path: string, reason: string) {
    super(
      `refusing unsafe socket path ${path}: ${reason}; use a directory that only this user (or ` +
        `root) can write, for example $XDG_RUNTIME_DIR or /run/memfdbus`,
    );
    this.name = "UnsafePathError";
    this.path = path;
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : path.slice(0, i);
}

/** In a directory others can write: what exists at `path` must be this user's. */
function checkOwnFile(path: string, dir: string, me: number): void {
  let file: Deno.FileInfo;
  try {
    file = Deno.lstatSync(path);
  } catch {
    return; // Nothing there yet: in a sticky directory, a name this user creates stays its own.
  }
  if (file.uid !== me) {
    throw new UnsafePathError(
      path,
      `it belongs to uid ${file.uid}, in ${dir}, a directory other users can write`,
    );
  }
}

function octal(mode: number): string {
  return "0" + (mode & 0o7777).toString(8);
}

/**
 * Check that `path` (a socket about to be bound or connected to) cannot be taken over by another
 * user. A directory that does not exist is left to bind(2) or connect(2) to report.
 *
 * @example
 * ```ts
 * import { checkSocketPath } from "@memfdbus/memfdbus";
 * const dir = Deno.makeTempDirSync(); // mode 0700, this user's
 * checkSocketPath(`${dir}/bus.sock`); // fine
 * Deno.chmodSync(dir, 0o777);
 * try {
 *   checkSocketPath(`${dir}/bus.sock`);
 * } catch (e) {
 *   console.log((e as Error).name); // UnsafePathError
 * }
 * Deno.removeSync(dir);
 * ```
 *
 * @param path the socket path
 * @throws {UnsafePathError} naming the directory or file and the fix
 */
export function checkSocketPath(path: string): void {
  let dir: string;
  try {
    dir = Deno.realPathSync(dirname(path));
  } catch {
    return;
  }
  const me = libc.symbols.geteuid();
  for (let d = dir, last = true;; last = false) {
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(d);
    } catch {
      return;
    }
    const owner = st.uid ?? 0;
    const mode = st.mode ?? 0;
    if (owner !== 0 && owner !== me) {
      throw new UnsafePathError(path, `directory ${d} belongs to uid ${owner}`);
    }
    if ((mode & 0o022) !== 0) {
      // A sticky directory is fine above: what lies below it is this user's or root's (checked
      // one level down), and nobody else can rename or remove that.
      if ((mode & S_ISVTX) === 0) {
        throw new UnsafePathError(
          path,
          `directory ${d} is writable by other users (mode ${octal(mode)}) and not sticky`,
        );
      }
      if (last) checkOwnFile(path, d, me);
    }
    if (d === "/") return;
    d = dirname(d);
  }
}
