/**
 * Why a published descriptor is refused, and how the broker words it. The system layer finds the
 * problem (`inspectSealedFd` in src/sys/memfd.ts); the texts are the protocol's, byte for byte
 * those of the C broker. Pure: the errno description is passed in.
 *
 * @module
 */

import { Text } from "./wire.ts";

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
