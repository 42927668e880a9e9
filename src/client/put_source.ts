/**
 * Turning anything `Client.put` accepts (a path, bytes, a stream, a descriptor, a Memfd)
 * into a sealed memfd ready to send, copying once (in the kernel where possible) and hashing
 * during the copy where that is cheapest.
 *
 * @module
 */

import type { DigestBuilder as DigestBuilderType } from "../hash/digest.ts";
import { closeQuietly, cstr, lastError, libc } from "../ffi.ts";
import { fstat, isRegular } from "../sys/fd.ts";
import { F_GET_SEALS, O_CLOEXEC, O_RDONLY, SEALS_IMMUTABLE } from "../sys/linux.ts";
import { Memfd, memfdLabel } from "../sys/memfd.ts";
import { digests } from "./hashing.ts";

/**
 * An open descriptor to publish from. A regular file is read from offset 0 (its file offset
 * is left alone) unless `fromCurrentOffset` is set; a pipe or socket is read to its end. A memfd
 * that already carries the four seals is sent as is, without a copy.
 *
 * @example Publishing from an open descriptor
 * ```ts ignore
 * import { Client, FileDescriptor } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * using file = FileDescriptor.open("./model.bin");
 * await client.put({ fd: file.fd }, { name: "model.bin" });
 * ```
 */
export interface FdSource {
  /** The descriptor; it stays the caller's. */
  readonly fd: number;
  /** Read a regular file from its current offset instead of from 0 (as `put -` does). */
  readonly fromCurrentOffset?: boolean;
}

/**
 * What {@link Client.put} can publish: a file path, bytes, a stream of bytes, an open
 * descriptor, or a {@link Memfd}.
 *
 * @example Each kind of source
 * ```ts ignore
 * import { Client, Memfd } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * await client.put("./model.bin"); // a path: named "model.bin"
 * await client.put(new TextEncoder().encode("hi"), { name: "greeting" });
 * await client.put(Deno.stdin.readable, { name: "stdin" }); // a stream, read to its end
 * using memfd = Memfd.create("scratch");
 * memfd.writeAll(new Uint8Array(1024));
 * memfd.seal();
 * await client.put(memfd, { name: "zeros" }); // already sealed: sent without a copy
 * ```
 */
export type PutSource = string | Uint8Array | ReadableStream<Uint8Array> | FdSource | Memfd;

/** A sealed memfd ready to send; `release` closes what preparing opened. */
export interface Prepared {
  readonly fd: number;
  readonly size: number;
  /** Known when it was cheapest to hash during the copy; else null (hash the memfd later). */
  readonly digest: string | null;
  release(): void;
}

/** Objects at least this large are sent early and hashed while the broker verifies them. */
export const EARLY_SEND_MIN = 4 << 20;

/**
 * Turn a PUT source into a sealed memfd. The bytes are copied once (kernel-side for
 * descriptors). Bytes and streams are hashed during the copy, unless `deferHash` asks to leave
 * a large object's digest for later (digest null), which lets it be sent early.
 */
export async function prepareSealed(
  source: PutSource,
  label: string | Uint8Array,
  deferHash = false,
): Promise<Prepared> {
  if (source instanceof Memfd) return prepareFromFd(source.fd, label, false);
  if (typeof source === "string") {
    const fd = libc.symbols.open(cstr(source), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) throw lastError("open", `open input: ${source}`);
    let prepared: Prepared;
    try {
      prepared = prepareFromFd(fd, label, true);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    // A file that already carries the four seals is published through this very descriptor:
    // it may only be closed once the publication is over.
    if (prepared.fd === fd) return { ...prepared, release: () => closeQuietly(fd) };
    closeQuietly(fd);
    return prepared;
  }
  if (source instanceof Uint8Array) {
    const hashNow = !(deferHash && source.length >= EARLY_SEND_MIN);
    return prepareFromBytes([source], label, hashNow ? (await digests()).DigestBuilder : null);
  }
  if (source instanceof ReadableStream) {
    return await prepareFromStream(source, label, (await digests()).DigestBuilder);
  }
  return prepareFromFd(source.fd, label, source.fromCurrentOffset ?? false);
}

function sealedResult(memfd: Memfd, size: number, digest: string | null): Prepared {
  memfd.seal();
  return { fd: memfd.fd, size, digest, release: () => memfd.close() };
}

function prepareFromBytes(
  chunks: Iterable<Uint8Array>,
  label: string | Uint8Array,
  Builder: typeof DigestBuilderType | null,
): Prepared {
  const memfd = Memfd.create(memfdLabel(label));
  try {
    const hash = Builder === null ? null : new Builder();
    let size = 0;
    for (const chunk of chunks) {
      memfd.writeAll(chunk);
      hash?.update(chunk);
      size += chunk.length;
    }
    return sealedResult(memfd, size, hash === null ? null : hash.digest());
  } catch (e) {
    memfd.close();
    throw e;
  }
}

async function prepareFromStream(
  stream: ReadableStream<Uint8Array>,
  label: string | Uint8Array,
  Builder: typeof DigestBuilderType,
): Promise<Prepared> {
  const memfd = Memfd.create(memfdLabel(label));
  try {
    const hash = new Builder();
    let size = 0;
    for await (const chunk of stream) {
      memfd.writeAll(chunk);
      hash.update(chunk);
      size += chunk.length;
    }
    return sealedResult(memfd, size, hash.digest());
  } catch (e) {
    memfd.close();
    throw e;
  }
}

function prepareFromFd(
  fd: number,
  label: string | Uint8Array,
  fromCurrentOffset: boolean,
): Prepared {
  const st = fstat(fd, "fstat input");
  // A sealed memfd (or any regular file carrying the four seals) is published as is: no copy.
  if (isRegular(st.mode)) {
    const seals = libc.symbols.fcntl(fd, F_GET_SEALS, 0);
    if (seals >= 0 && (seals & SEALS_IMMUTABLE) === SEALS_IMMUTABLE) {
      return { fd, size: Number(st.size), digest: null, release: () => {} };
    }
  }
  const memfd = Memfd.create(memfdLabel(label));
  try {
    const copy = memfd.copyFrom(
      fd,
      undefined,
      { read: "read input", write: "write destination" },
      fromCurrentOffset || !isRegular(st.mode) ? undefined : 0,
    );
    memfd.seal();
    return { fd: memfd.fd, size: copy.bytes, digest: null, release: () => memfd.close() };
  } catch (e) {
    memfd.close();
    throw e;
  }
}
