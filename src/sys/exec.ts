/**
 * Thin wrappers for replacing the process image: setenv(3) through libc (so the new program
 * sees the variable) and execvp(3).
 *
 * @module
 */

import { ErrnoError } from "../errors.ts";
import { cstr, errno, lastError, libc, strerror } from "../ffi.ts";

/** setenv(3) with overwrite; throws `setenv: <strerror>`. */
export function setenv(name: string, value: string | Uint8Array): void {
  if (libc.symbols.setenv(cstr(name), cstr(value), 1) < 0) throw lastError("setenv");
}

/**
 * execvp(3): replace the process image with `argv[0]` (looked up in PATH) and `argv`. Returns
 * only on failure, by throwing an {@link ErrnoError} `execvp: <strerror>` (its `code` tells
 * ENOENT, a missing command, from EACCES, one that may not be executed).
 */
export function execvp(argv: readonly string[]): never {
  const strings = argv.map((a) => cstr(a));
  const table = new BigUint64Array(strings.length + 1);
  strings.forEach((
    s,
    i,
  ) => (table[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))));
  const file = strings[0] ?? cstr("");
  libc.symbols.execvp(file, new Uint8Array(table.buffer));
  const code = errno();
  // Keep the strings reachable until after the call.
  strings.length = 0;
  throw new ErrnoError("execvp", code, strerror(code));
}
