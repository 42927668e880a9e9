/**
 * The C client library's wording of a descriptor problem, with errno values described by
 * strerror(3). The texts themselves are the protocol's (src/protocol/fd_problem.ts).
 *
 * @module
 */

import { strerror } from "../ffi.ts";
import { type FdProblem, libraryFdProblemText } from "../protocol/fd_problem.ts";

/**
 * The C library's wording of a descriptor problem (memfdbus_validate_fd), e.g.
 * `size mismatch: expected=5 fd=4`.
 *
 * @example
 * ```ts
 * import { describeFdProblem } from "@memfdbus/memfdbus";
 * console.log(describeFdProblem({ kind: "size", actual: 4n }, 5n)); // size mismatch: expected=5 fd=4
 * ```
 */
export function describeFdProblem(p: FdProblem, expectedSize: bigint | undefined): string {
  return libraryFdProblemText(p, expectedSize, strerror);
}
