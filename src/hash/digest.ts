/**
 * SHA-256 digests in the protocol's `sha256:<64 hex>` form, computed with node:crypto over
 * zero-copy views (a mapping of the descriptor, or the caller's bytes).
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { ReadOnlyMapping } from "../sys/mapping.ts";
import { pread, tryFstat } from "../sys/fd.ts";
import { libc } from "../ffi.ts";
import { SEEK_HOLE } from "../sys/linux.ts";
import { digestFromHex } from "../protocol/digest.ts";

/** Bytes fed to the hash per update call; large enough to amortise the call, small for cache. */
export const HASH_SLICE = 4 << 20;

/**
 * An incremental SHA-256 that yields a protocol digest string.
 *
 * @example Hashing a stream piece by piece
 * ```ts
 * import { DigestBuilder, digestBytes } from "@memfdbus/memfdbus";
 * const enc = new TextEncoder();
 * const digest = new DigestBuilder().update(enc.encode("hel")).update(enc.encode("lo")).digest();
 * console.log(digest === digestBytes(enc.encode("hello"))); // true
 * ```
 */
export class DigestBuilder {
  readonly #hash: Hash = createHash("sha256");

  /**
   * Feed bytes (any size; large inputs are fed in slices without copying).
   *
   * @example
   * ```ts
   * import { DigestBuilder } from "@memfdbus/memfdbus";
   * const hash = new DigestBuilder();
   * for (const chunk of [new Uint8Array([1]), new Uint8Array([2, 3])]) hash.update(chunk);
   * console.log(hash.digest()); // sha256:039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81
   * ```
   */
  update(bytes: Uint8Array): this {
    for (let off = 0; off < bytes.length; off += HASH_SLICE) {
      this.#hash.update(
        off === 0 && bytes.length <= HASH_SLICE ? bytes : bytes.subarray(off, off + HASH_SLICE),
      );
    }
    return this;
  }

  /**
   * The digest string, `sha256:` and 64 lowercase hex digits. Call it once.
   *
   * @example
   * ```ts
   * import { DigestBuilder } from "@memfdbus/memfdbus";
   * console.log(new DigestBuilder().digest().length); // 71
   * ```
   */
  digest(): string {
    return digestFromHex(this.#hash.digest("hex"));
  }
}

/**
 * The digest string of some bytes.
 *
 * @example
 * ```ts
 * import { digestBytes } from "@memfdbus/memfdbus";
 * console.log(digestBytes(new TextEncoder().encode("hello")));
 * // sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
 * ```
 */
export function digestBytes(bytes: Uint8Array): string {
  return new DigestBuilder().update(bytes).digest();
}

/**
 * The digest string of the first `size` bytes of a descriptor, read through a read-only mapping.
 * The file must not shrink meanwhile (a sealed memfd cannot).
 *
 * @example The digest a broker will verify
 * ```ts
 * import { digestFd, Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("greeting");
 * memfd.writeAll(new TextEncoder().encode("hello"));
 * memfd.seal();
 * console.log(digestFd(memfd.fd, memfd.size));
 * // sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
 * ```
 */
export function digestFd(fd: number, size: number): string {
  using map = ReadOnlyMapping.of(fd, size, "mmap object");
  return digestBytes(map.bytes);
}

/** Where a large object's mapping starts being mapped in ahead of its hash (see {@link digestObjectFd}). */
export const PREFETCH_FROM = 4 << 20;

/** Bytes {@link digestFdRead} reads per pread call. */
export const READ_SLICE = 1 << 20;

let readBuffer: Uint8Array | null = null;

/**
 * The digest string of the first `size` bytes of a descriptor, read with pread into one bounded
 * buffer (1 MiB) rather than through a mapping. This is how the broker hashes what peers send:
 * reading a hole of a sparse memfd returns zeros without allocating a page, where a read fault
 * through a mapping allocates (and charges to the broker) every page of the hole. Measured on
 * Linux 6.18: a sparse 1 GiB memfd hashed through a mapping grew the system's Shmem by
 * 1,048,484 kB and took 2.4 s; with pread it grew by 40 kB and took 1.1 s. A dense 1 GiB object
 * costs about 1.2 s with pread against 0.8 s through a mapping (the copy).
 * Small objects cost fewer system calls this way than through a mapping (one pread against
 * mmap, madvise and munmap).
 *
 * @example
 * ```ts
 * import { digestFd, digestFdRead, Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("greeting");
 * memfd.writeAll(new TextEncoder().encode("hello"));
 * memfd.seal();
 * console.log(digestFdRead(memfd.fd, memfd.size) === digestFd(memfd.fd, memfd.size)); // true
 * ```
 *
 * @throws {ErrnoError} when a read fails
 * @throws {RangeError} when the descriptor holds fewer than `size` bytes
 */
export function digestFdRead(fd: number, size: number): string {
  const buf = readBuffer ??= new Uint8Array(READ_SLICE);
  const hash = new DigestBuilder();
  for (let off = 0; off < size;) {
    const want = Math.min(READ_SLICE, size - off);
    const n = pread(fd, want === READ_SLICE ? buf : buf.subarray(0, want), off, "pread object");
    if (n === 0) throw new RangeError("digest verification short read");
    hash.update(buf.subarray(0, n));
    off += n;
  }
  return hash.digest();
}

/**
 * The digest of a peer's object the cheapest safe way: objects up to {@link READ_SLICE} and
 * sparse ones (fewer blocks allocated than their size, or a hole before their end) are read
 * with {@link digestFdRead}, so a hole never faults a page into the reader; dense large ones
 * are hashed through a read-only
 * mapping, which skips the copy (measured: 1 GiB dense, about 0.8 s mapped against 1.2 s read).
 * A sealed memfd cannot change between the check and the hash.
 *
 * @example
 * ```ts
 * import { digestBytes, digestObjectFd, Memfd } from "@memfdbus/memfdbus";
 * const bytes = new TextEncoder().encode("hello");
 * using memfd = Memfd.create("greeting");
 * memfd.writeAll(bytes);
 * memfd.seal();
 * console.log(digestObjectFd(memfd.fd, memfd.size) === digestBytes(bytes)); // true
 * ```
 *
 * @param later when given (the broker's Worker), a large dense object's pages are mapped in
 *   ahead of the hash on another thread ({@link ReadOnlyMapping.prefetch}), and the mapping is
 *   left mapped with its unmapping pushed here, for the caller to run once it has answered (the
 *   descriptor may be closed before); the promise settles when the pages are unmapped
 * @throws {ErrnoError} when a read or the mapping fails
 * @throws {RangeError} when the descriptor holds fewer than `size` bytes
 */
export function digestObjectFd(
  fd: number,
  size: number,
  later?: (() => Promise<void>)[],
): string {
  if (size <= READ_SLICE) return digestFdRead(fd, size);
  if (!isDense(fd, size)) return digestFdRead(fd, size);
  if (later === undefined) return digestFd(fd, size);
  // Unmapping a large object's pages takes milliseconds (4 ms for 64 MiB here): the caller
  // answers first and runs `later` afterwards.
  const map = ReadOnlyMapping.of(fd, size, "mmap object");
  try {
    // Another thread maps the pages in ahead of the hash (measured for 64 MiB: 51 ms instead
    // of 57, the floor being 46); the first slice is left to the hash's own faults.
    const prefetched = size >= 2 * PREFETCH_FROM ? map.prefetch(PREFETCH_FROM) : Promise.resolve();
    const digest = digestBytes(map.bytes);
    later.push(() => {
      map.close();
      return prefetched;
    });
    return digest;
  } catch (e) {
    map.close();
    throw e;
  }
}

/**
 * An object's digest computed a turn at a time, with the same choice as {@link digestObjectFd}
 * (pread for small or sparse objects, a read-only mapping for dense ones). The broker's Workers
 * hash in turns so that one huge object (a sparse memfd of a terabyte costs no memory but many
 * minutes of hashing) cannot hold a Worker while other uids' digests wait.
 */
export class ObjectHasher {
  readonly #fd: number;
  readonly #size: number;
  readonly #hash = new DigestBuilder();
  #map: ReadOnlyMapping | null = null;
  #prefetched: Promise<void> = Promise.resolve();
  #done = 0;

  /**
   * @param fd the sealed memfd (open until {@link ObjectHasher.close})
   * @param size bytes to hash
   * @throws {ErrnoError} when the mapping fails
   */
  constructor(fd: number, size: number) {
    this.#fd = fd;
    this.#size = size;
    if (size > READ_SLICE && isDense(fd, size)) {
      this.#map = ReadOnlyMapping.of(fd, size, "mmap object");
      if (size >= 2 * PREFETCH_FROM) this.#prefetched = this.#map.prefetch(PREFETCH_FROM);
    }
  }

  /**
   * Hash up to `bytes` more bytes; true once the whole object is hashed.
   *
   * @throws {ErrnoError} when a read fails
   * @throws {RangeError} when the descriptor holds fewer than `size` bytes
   */
  step(bytes: number): boolean {
    const end = Math.min(this.#size, this.#done + bytes);
    if (this.#map !== null) {
      this.#hash.update(this.#map.bytes.subarray(this.#done, end));
      this.#done = end;
    } else {
      const buf = readBuffer ??= new Uint8Array(READ_SLICE);
      while (this.#done < end) {
        const want = Math.min(READ_SLICE, end - this.#done);
        const n = pread(this.#fd, buf.subarray(0, want), this.#done, "pread object");
        if (n === 0) throw new RangeError("digest verification short read");
        this.#hash.update(buf.subarray(0, n));
        this.#done += n;
      }
    }
    return this.#done >= this.#size;
  }

  /** The digest string, once {@link ObjectHasher.step} said the object is hashed. */
  digest(): string {
    return this.#hash.digest();
  }

  /** Unmap the object; resolves once its pages are unmapped. */
  close(): Promise<void> {
    this.#map?.close();
    this.#map = null;
    return this.#prefetched;
  }
}

/**
 * True when every page of the first `size` bytes exists, so reading them through a mapping
 * allocates nothing. The block count alone is not proof: pages allocated past the end of file
 * (fallocate with FALLOC_FL_KEEP_SIZE) count in it while holes inside the object stay holes, so
 * the first hole must also lie at or past `size` (SEEK_HOLE; any failure says sparse).
 */
function isDense(fd: number, size: number): boolean {
  const st = tryFstat(fd);
  if (typeof st === "number" || st.blocks * 512n < BigInt(size) || st.size < BigInt(size)) {
    return false;
  }
  return libc.symbols.lseek(fd, 0n, SEEK_HOLE) >= BigInt(size);
}
