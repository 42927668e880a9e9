/**
 * SHA-256 digests in the protocol's `sha256:<64 hex>` form, computed with node:crypto over
 * zero-copy views (a mapping of the descriptor, or the caller's bytes).
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { ReadOnlyMapping } from "./mapping.ts";
import { DIGEST_PREFIX } from "./wire.ts";

/** Bytes fed to the hash per update call; large enough to amortise the call, small for cache. */
export const HASH_SLICE = 4 << 20;

/** An incremental SHA-256 that yields a protocol digest string. */
export class DigestBuilder {
  readonly #hash: Hash = createHash("sha256");

  /** Feed bytes (any size; large inputs are fed in slices without copying). */
  update(bytes: Uint8Array): this {
    for (let off = 0; off < bytes.length; off += HASH_SLICE) {
      this.#hash.update(
        off === 0 && bytes.length <= HASH_SLICE ? bytes : bytes.subarray(off, off + HASH_SLICE),
      );
    }
    return this;
  }

  /** The digest string, `sha256:` and 64 lowercase hex digits. */
  digest(): string {
    return DIGEST_PREFIX + this.#hash.digest("hex");
  }
}

/** The digest string of some bytes. */
export function digestBytes(bytes: Uint8Array): string {
  return new DigestBuilder().update(bytes).digest();
}

/**
 * The digest string of the first `size` bytes of a descriptor, read through a read-only mapping.
 * The file must not shrink meanwhile (a sealed memfd cannot).
 */
export function digestFd(fd: number, size: number): string {
  using map = ReadOnlyMapping.of(fd, size, "mmap object");
  return digestBytes(map.bytes);
}
