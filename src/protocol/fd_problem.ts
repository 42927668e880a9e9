/**
 * Why a published descriptor is refused, and how the broker words it. The system layer finds the
 * problem (`inspectSealedFd` in src/sys/memfd.ts); the texts are the protocol's, byte for byte
 * those of the C broker. Pure: the errno description is passed in.
 *
 * @module
 */

import type { FdProblem } from "../errors.ts";
import { Text } from "./wire.ts";

export type { FdProblem };

/**
 * The broker's reply text for a refused descriptor (also what the C CLI prints after
 * `broker sent an invalid object fd: `), e.g. `size mismatch: header=5 fd=4`.
 *
 * @param p the problem
 * @param claimed the size the header claimed
 * @param describeErrno strerror(3) of an errno value
 */
export function fdRejectionText(
  p: FdProblem,
  claimed: bigint,
  describeErrno: (errno: number) => string,
): string {
  switch (p.kind) {
    case "bad-fd":
      return Text.missingFd;
    case "fstat":
      return `fstat failed: ${describeErrno(p.errno)}`;
    case "not-regular":
      return Text.notRegular;
    case "size":
      return `size mismatch: header=${claimed} fd=${p.actual}`;
    case "get-seals":
      return `F_GET_SEALS failed: ${describeErrno(p.errno)}`;
    case "seals":
      return Text.notSealed;
  }
}

/** EINVAL on Linux: what F_GET_SEALS fails with on a file that is not a memfd. */
const EINVAL = 22;

/**
 * The C client library's wording of a descriptor problem (memfdbus_validate_fd), e.g.
 * `size mismatch: expected=5 fd=4`.
 *
 * @param p the problem
 * @param expectedSize the size the caller expected, if any
 * @param describeErrno strerror(3) of an errno value
 */
export function libraryFdProblemText(
  p: FdProblem,
  expectedSize: bigint | undefined,
  describeErrno: (errno: number) => string,
): string {
  switch (p.kind) {
    case "bad-fd":
      return "invalid object fd";
    case "fstat":
      return `fstat: ${describeErrno(p.errno)}`;
    case "not-regular":
      return Text.notRegular;
    case "size":
      return `size mismatch: expected=${expectedSize ?? 0n} fd=${p.actual}`;
    case "get-seals":
      return p.errno === EINVAL
        ? "descriptor is not a sealed memfd"
        : `F_GET_SEALS: ${describeErrno(p.errno)}`;
    case "seals":
      return Text.notSealed;
  }
}
