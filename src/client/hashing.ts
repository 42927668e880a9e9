/**
 * Digests on the client side: node:crypto is loaded lazily (it costs a CLI command about 20 ms),
 * and large objects are hashed in slices with the event loop running between them.
 *
 * @module
 */

import { ReadOnlyMapping } from "../sys/mapping.ts";

let digestModule: typeof import("../hash/digest.ts") | null = null;
/** The digest module, loaded on first use (only PUT and verification need it). */
export async function digests(): Promise<typeof import("../hash/digest.ts")> {
  digestModule ??= await import("../hash/digest.ts");
  return digestModule;
}

const HASH_SLICE_BYTES = 8 << 20;

/**
 * The digest of a descriptor's first `size` bytes, hashed through a read-only mapping in
 * slices, yielding to the event loop between slices so a large object never freezes it.
 */
export async function digestFdSliced(fd: number, size: number): Promise<string> {
  using map = ReadOnlyMapping.of(fd, size, "mmap object");
  return await digestBytesSliced(map.bytes);
}

/** The digest of some bytes, hashed in slices with the event loop running between them. */
export async function digestBytesSliced(bytes: Uint8Array): Promise<string> {
  const { DigestBuilder } = await digests();
  const { setImmediate } = await import("node:timers");
  const hash = new DigestBuilder();
  for (let off = 0; off < bytes.length; off += HASH_SLICE_BYTES) {
    hash.update(bytes.subarray(off, off + HASH_SLICE_BYTES));
    if (off + HASH_SLICE_BYTES < bytes.length) await new Promise((r) => setImmediate(r));
  }
  return hash.digest();
}
