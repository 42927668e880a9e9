/**
 * Read-only memory mappings of a descriptor, exposed as a Uint8Array that can never outlive the
 * mapping: closing detaches the ArrayBuffer before munmap, so a kept reference reads as empty
 * instead of touching unmapped memory.
 *
 * @module
 */

import { lastError, libc } from "../ffi.ts";
import { MADV_POPULATE_READ, MADV_SEQUENTIAL, MAP_FAILED, MAP_SHARED, PROT_READ } from "./linux.ts";

/**
 * A read-only shared mapping of a file.
 *
 * @example Summing the bytes of a sealed memfd without copying them
 * ```ts
 * import { Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("demo");
 * memfd.writeAll(new Uint8Array([1, 2, 3]));
 * memfd.seal();
 * using map = memfd.map();
 * console.log(map.bytes.reduce((a, b) => a + b, 0)); // 6
 * ```
 */
export class ReadOnlyMapping implements Disposable {
  #ptr: Deno.PointerObject | null;
  #length: number;
  #buffer: ArrayBuffer | null;
  #bytes: Uint8Array | null;
  #leaked = false;
  #prefetching: Promise<unknown> | null = null;

  private constructor(ptr: Deno.PointerObject | null, length: number) {
    this.#ptr = ptr;
    this.#length = length;
    this.#buffer = ptr === null ? new ArrayBuffer(0) : Deno.UnsafePointerView.getArrayBuffer(
      ptr,
      length,
    );
    this.#bytes = new Uint8Array(this.#buffer);
  }

  /**
   * Map `length` bytes of `fd` from offset 0, read-only and shared.
   *
   * The caller must make sure the file cannot shrink below `length` while mapped (a memfd with
   * F_SEAL_SHRINK), or reading past the new end raises SIGBUS.
   *
   * @example Mapping a descriptor directly
   * ```ts
   * import { Memfd, ReadOnlyMapping } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("raw");
   * memfd.writeAll(new Uint8Array([7, 8, 9]));
   * memfd.seal();
   * using map = ReadOnlyMapping.of(memfd.fd, memfd.size);
   * console.log(map.length, map.bytes[2]); // 3 9
   * ```
   *
   * @param fd the descriptor to map (it may be closed afterwards; the mapping stays valid)
   * @param length bytes to map; 0 gives an empty mapping without a system call
   * @param context error context, `mmap` by default
   */
  static of(fd: number, length: number, context = "mmap"): ReadOnlyMapping {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`Invalid mapping length "${length}"`);
    }
    if (length === 0) return new ReadOnlyMapping(null, 0);
    const ptr = libc.symbols.mmap(null, BigInt(length), PROT_READ, MAP_SHARED, fd, 0n);
    if (ptr === null || Deno.UnsafePointer.equals(ptr, MAP_FAILED)) {
      throw lastError("mmap", context);
    }
    libc.symbols.madvise(ptr, BigInt(length), MADV_SEQUENTIAL);
    return new ReadOnlyMapping(ptr, length);
  }

  /**
   * The mapped bytes. Throws once the mapping is closed.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("x");
   * memfd.writeAll(new TextEncoder().encode("abc"));
   * memfd.seal();
   * using map = memfd.map();
   * console.log(new TextDecoder().decode(map.bytes.subarray(1))); // "bc"
   * ```
   */
  get bytes(): Uint8Array {
    if (this.#bytes === null) throw new TypeError("Mapping is closed");
    return this.#bytes;
  }

  /**
   * Ask the kernel to map in the pages from `offset` to the end on another thread (Deno's
   * blocking pool; `madvise(MADV_POPULATE_READ)`), so a reader walking the mapping from the
   * start finds them mapped instead of faulting on each. Reading a hole of the file this way
   * allocates a page for it, as a read fault would. Resolves when done; failures (an old kernel)
   * are ignored, the reader then faults as usual. A {@link ReadOnlyMapping.close} meanwhile
   * unmaps once it is done.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("x");
   * memfd.writeAll(new Uint8Array(1 << 20));
   * memfd.seal();
   * using map = memfd.map();
   * await map.prefetch(4096);
   * console.log(map.bytes[4096]); // 0
   * ```
   *
   * @param offset where to start, rounded down to a page
   */
  prefetch(offset: number): Promise<void> {
    const ptr = this.#ptr;
    const start = Math.max(0, Math.floor(offset / 4096) * 4096);
    if (ptr === null || start >= this.#length) return Promise.resolve();
    const at = Deno.UnsafePointer.offset(ptr, start);
    if (at === null) return Promise.resolve();
    const done = libc.symbols.madvise_async(at, BigInt(this.#length - start), MADV_POPULATE_READ)
      .then(() => {}, () => {});
    const all = this.#prefetching === null ? done : Promise.all([this.#prefetching, done]);
    this.#prefetching = all;
    return done;
  }

  /** The mapped length in bytes. */
  get length(): number {
    return this.#length;
  }

  /** True once {@link ReadOnlyMapping.close} ran. */
  get closed(): boolean {
    return this.#bytes === null;
  }

  /**
   * True when close() found the buffer already detached or transferred elsewhere (for example by
   * `ArrayBuffer.prototype.transfer` or `postMessage`), so it left the pages mapped rather than
   * risk a dangling view. The pages are released when the process exits.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("x");
   * memfd.writeAll(new Uint8Array(16));
   * memfd.seal();
   * const map = memfd.map();
   * (map.bytes.buffer as ArrayBuffer).transfer(); // its memory moved out of the mapping's hands
   * map.close();
   * console.log(map.leaked); // true: left mapped rather than unmapped under a live buffer
   * ```
   */
  get leaked(): boolean {
    return this.#leaked;
  }

  /**
   * Detach every view of the buffer, then unmap. Safe to call more than once.
   *
   * @example A kept view reads as empty after close
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("x");
   * memfd.writeAll(new Uint8Array(8));
   * memfd.seal();
   * const map = memfd.map();
   * const view = map.bytes;
   * map.close();
   * console.log(view.length, map.closed); // 0 true
   * ```
   */
  close(): void {
    const buffer = this.#buffer;
    if (buffer === null) return;
    this.#buffer = null;
    this.#bytes = null;
    const ptr = this.#ptr;
    this.#ptr = null;
    if (ptr === null) return;
    if (buffer.detached) {
      // Someone moved the backing store out of our hands: unmapping could leave it dangling.
      this.#leaked = true;
      return;
    }
    buffer.transfer(0);
    const length = BigInt(this.#length);
    const prefetching = this.#prefetching;
    this.#prefetching = null;
    // Unmapping under a running madvise is safe for the kernel, but it would make the populate
    // fail part-way for nothing: wait for it.
    if (prefetching === null) libc.symbols.munmap(ptr, length);
    else void prefetching.then(() => libc.symbols.munmap(ptr, length));
  }

  /** Same as {@link ReadOnlyMapping.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
