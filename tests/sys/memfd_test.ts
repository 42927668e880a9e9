import { assertEquals, ok, throws } from "../support/assert.ts";
import { ErrnoError } from "../../src/errors.ts";
import { cstr, libc, strerror } from "../../src/ffi.ts";
import { describeFdProblem } from "../../src/client/fd_problem.ts";
import { fdRejectionText } from "../../src/protocol/fd_problem.ts";
import { FileDescriptor, fstat } from "../../src/sys/fd.ts";
import { O_CLOEXEC, O_RDONLY, O_RDWR } from "../../src/sys/linux.ts";
import { ReadOnlyMapping } from "../../src/sys/mapping.ts";
import {
  type FdProblem,
  getSeals,
  inspectSealedFd,
  isFdProblem,
  Memfd,
  MEMFD_NAME_MAX,
  memfdLabel,
  Seal,
} from "../../src/sys/memfd.ts";
import { dec, enc } from "../support/harness.ts";
import {
  fdGuard,
  fdTarget,
  hasCloexec,
  isOpen,
  offsetOf,
  ownLabel,
  ownSealedMemfd as sealedMemfd,
  ownTempDir as tempDir,
  pipe,
  TAG,
  writeFd,
} from "../support/fds.ts";

/** A test body that must leave the process with the descriptors it started with. */
function noLeak(fn: () => void): () => void {
  return (): void => {
    const guard = fdGuard();
    fn();
    guard.assertClean();
  };
}

/** Assert that `fn` throws an ErrnoError with exactly these properties. */
function throwsErrno(
  fn: () => unknown,
  want: { code: string; syscall: string; message: string },
): void {
  throws(fn, (e: unknown) => {
    ok(e instanceof ErrnoError, `expected ErrnoError, got ${String(e)}`);
    assertEquals({ code: e.code, syscall: e.syscall, message: e.message }, want);
    return true;
  });
}

const F_SEAL_EXEC = 0x20;
const UNIT = ownLabel("unit");

// ---- creation -------------------------------------------------------------------------------

Deno.test(
  "Memfd.create by default sets close-on-exec and allows sealing",
  noLeak(() => {
    using m = Memfd.create(ownLabel("default"));
    assertEquals(hasCloexec(m.fd), true);
    assertEquals(m.seals(), 0);
    assertEquals(Deno.readLinkSync(`/proc/self/fd/${m.fd}`), `/memfd:${TAG}-default (deleted)`);
    assertEquals(m.size, 0);
    assertEquals(m.closed, false);
    m.addSeals(Seal.GROW);
    assertEquals(m.seals(), Seal.GROW);
  }),
);

Deno.test(
  "Memfd.create with closeOnExec false leaves FD_CLOEXEC clear",
  noLeak(() => {
    using m = Memfd.create(UNIT, { closeOnExec: false });
    assertEquals(hasCloexec(m.fd), false);
  }),
);

Deno.test(
  "Memfd.create with allowSealing false starts sealed with F_SEAL_SEAL and refuses seals with EPERM",
  noLeak(() => {
    using m = Memfd.create(UNIT, { allowSealing: false });
    assertEquals(m.seals(), Seal.SEAL);
    throwsErrno(() => m.addSeals(Seal.WRITE), {
      code: "EPERM",
      syscall: "fcntl",
      message: "F_ADD_SEALS: Operation not permitted",
    });
    throwsErrno(() => m.seal(), {
      code: "EPERM",
      syscall: "fcntl",
      message: "F_ADD_SEALS: Operation not permitted",
    });
  }),
);

Deno.test(
  "Memfd.create with noexecSeal auto or true gives a non-executable memfd with the exec seal",
  noLeak(() => {
    for (const noexecSeal of ["auto", true] as const) {
      using m = Memfd.create(UNIT, { noexecSeal });
      assertEquals(m.seals() & F_SEAL_EXEC, F_SEAL_EXEC);
      assertEquals(fstat(m.fd).mode & 0o111, 0);
      // Sealing still works on top of the exec seal.
      m.writeAll(enc("x"));
      m.seal();
      assertEquals(m.seals(), Seal.IMMUTABLE | F_SEAL_EXEC);
    }
  }),
);

Deno.test(
  "Memfd.create truncates a long name to 249 bytes for the kernel",
  noLeak(() => {
    const long = TAG + "n".repeat(300 - TAG.length);
    using m = Memfd.create(long);
    assertEquals(
      Deno.readLinkSync(`/proc/self/fd/${m.fd}`),
      `/memfd:${long.slice(0, 249)} (deleted)`,
    );
  }),
);

Deno.test("memfdLabel keeps up to 249 bytes and cuts longer names", () => {
  assertEquals(MEMFD_NAME_MAX, 249);
  assertEquals(memfdLabel("a".repeat(249)).length, 249);
  assertEquals(memfdLabel("a".repeat(250)).length, 249);
  assertEquals(memfdLabel("a".repeat(65536)).length, 249);
  assertEquals(dec(memfdLabel("short")), "short");
  assertEquals(memfdLabel("").length, 0);
});

Deno.test("memfdLabel cuts on a UTF-8 character boundary", () => {
  // Two-byte characters: byte 249 is a continuation byte, so the cut moves back to 248.
  const two = memfdLabel("é".repeat(200));
  assertEquals(two.length, 248);
  assertEquals(dec(two), "é".repeat(124));
  // Three-byte characters after a two-byte ASCII prefix: also cut to 248.
  const three = memfdLabel("ab" + "€".repeat(100));
  assertEquals(three.length, 248);
  assertEquals(dec(three), "ab" + "€".repeat(82));
  // A four-byte character straddling the limit is dropped whole.
  const four = memfdLabel("a".repeat(247) + "😀");
  assertEquals(four.length, 247);
  // A character that ends exactly at 249 is kept.
  const exact = memfdLabel("a".repeat(245) + "😀" + "b");
  assertEquals(exact.length, 249);
  assertEquals(dec(exact), "a".repeat(245) + "😀");
});

Deno.test("memfdLabel stops at the first NUL byte", () => {
  assertEquals(dec(memfdLabel("ab\0cd")), "ab");
  assertEquals(memfdLabel("\0abc").length, 0);
  assertEquals(dec(memfdLabel(new Uint8Array([0x61, 0x62, 0, 0x63]))), "ab");
  // A NUL past the limit does not matter.
  assertEquals(memfdLabel("a".repeat(260) + "\0").length, 249);
});

Deno.test("memfdLabel returns a view of a Uint8Array input without copying", () => {
  const bytes = enc("name");
  const label = memfdLabel(bytes);
  ok(label.buffer === bytes.buffer);
  assertEquals(label.length, 4);
});

// ---- writing and sealing --------------------------------------------------------------------

Deno.test(
  "writeAll then seal rewinds, adds the four seals and makes the memfd immutable",
  noLeak(() => {
    using m = Memfd.create(UNIT);
    m.writeAll(enc("hello"));
    m.writeAll(enc(" world"));
    assertEquals(m.size, 11);
    assertEquals(offsetOf(m.fd), 11);
    m.seal();
    assertEquals(offsetOf(m.fd), 0);
    assertEquals(m.seals(), 0xf);
    assertEquals(getSeals(m.fd), 0xf);
    throwsErrno(() => m.writeAll(enc("x")), {
      code: "EPERM",
      syscall: "write",
      message: "write memfd: Operation not permitted",
    });
    throwsErrno(() => m.truncate(1), {
      code: "EPERM",
      syscall: "ftruncate",
      message: "ftruncate: Operation not permitted",
    });
    throwsErrno(() => m.addSeals(Seal.FUTURE_WRITE), {
      code: "EPERM",
      syscall: "fcntl",
      message: "F_ADD_SEALS: Operation not permitted",
    });
    assertEquals(m.size, 11);
  }),
);

Deno.test(
  "truncate and seek change size and offset on an unsealed memfd",
  noLeak(() => {
    using m = Memfd.create(UNIT);
    m.truncate(4096);
    assertEquals(m.size, 4096);
    assertEquals(m.seek(100), 100);
    assertEquals(offsetOf(m.fd), 100);
  }),
);

Deno.test(
  "Seal.FUTURE_WRITE makes later writes fail with EPERM",
  noLeak(() => {
    using m = Memfd.create(UNIT);
    m.writeAll(enc("abc"));
    m.addSeals(Seal.FUTURE_WRITE);
    assertEquals(m.seals(), Seal.FUTURE_WRITE);
    throwsErrno(() => m.writeAll(enc("d")), {
      code: "EPERM",
      syscall: "write",
      message: "write memfd: Operation not permitted",
    });
    // A new writable open of the same file succeeds, but writing through it fails as well.
    const fd = libc.symbols.open(cstr(`/proc/self/fd/${m.fd}`), O_RDWR | O_CLOEXEC, 0);
    ok(fd >= 0);
    const n = libc.symbols.write(fd, enc("z"), 1n);
    libc.symbols.close(fd);
    assertEquals(n, -1n);
    assertEquals(m.size, 3);
  }),
);

Deno.test(
  "Seal constants have the kernel values",
  () => {
    assertEquals(Seal, {
      SEAL: 1,
      SHRINK: 2,
      GROW: 4,
      WRITE: 8,
      FUTURE_WRITE: 0x10,
      IMMUTABLE: 0xf,
    });
  },
);

// ---- ownership ------------------------------------------------------------------------------

Deno.test(
  "Memfd.close is safe twice and the fd getter throws once closed",
  noLeak(() => {
    const m = Memfd.create(UNIT);
    const fd = m.fd;
    const target = fdTarget(fd);
    m.close();
    m.close();
    assertEquals(m.closed, true);
    // The number may already serve another module's descriptor; it no longer refers to the memfd.
    ok(fdTarget(fd) !== target);
    throws(() => m.fd, { name: "TypeError", message: "Memfd is closed" });
  }),
);

Deno.test(
  "Memfd.release hands the descriptor over without closing it, and adopt takes it back",
  noLeak(() => {
    const m = Memfd.create(UNIT);
    const fd = m.release();
    assertEquals(m.closed, true);
    m.close();
    assertEquals(isOpen(fd), true);
    using again = Memfd.adopt(fd);
    assertEquals(again.fd, fd);
    throws(() => Memfd.adopt(-1), { name: "RangeError", message: 'Invalid descriptor "-1"' });
    throws(() => Memfd.adopt(1.5), { name: "RangeError", message: 'Invalid descriptor "1.5"' });
  }),
);

Deno.test(
  "FileDescriptor opens with close-on-exec, closes once and can be released",
  noLeak(() => {
    using dir = tempDir();
    Deno.writeFileSync(`${dir.path}/f`, enc("12345"));
    const f = FileDescriptor.open(`${dir.path}/f`);
    assertEquals(hasCloexec(f.fd), true);
    assertEquals(f.stat().size, 5n);
    const fd = f.fd;
    const target = fdTarget(fd);
    f.close();
    f.close();
    assertEquals([f.fd, f.closed], [-1, true]);
    ok(fdTarget(fd) !== target);
    throws(() => f.stat(), { name: "TypeError", message: "Descriptor is closed" });
    throws(() => f.release(), { name: "TypeError", message: "Descriptor is closed" });

    const g = FileDescriptor.open(`${dir.path}/f`, O_RDONLY);
    const raw = g.release();
    g.close();
    assertEquals(isOpen(raw), true);
    using h = new FileDescriptor(raw);
    assertEquals(h.fd, raw);
    throws(() => new FileDescriptor(-3), {
      name: "RangeError",
      message: 'Invalid descriptor "-3"',
    });
  }),
);

Deno.test(
  "FileDescriptor.open of a missing path throws ENOENT with the path in the message",
  noLeak(() => {
    throwsErrno(() => FileDescriptor.open("/nonexistent/memfdbus/x"), {
      code: "ENOENT",
      syscall: "open",
      message: "open /nonexistent/memfdbus/x: No such file or directory",
    });
  }),
);

// ---- inspectSealedFd ------------------------------------------------------------------------

Deno.test(
  "inspectSealedFd accepts a sealed memfd and reports its size and seals",
  noLeak(() => {
    using m = sealedMemfd(enc("hello"));
    assertEquals(inspectSealedFd(m.fd), { size: 5n, seals: 0xf });
    assertEquals(inspectSealedFd(m.fd, 5n), { size: 5n, seals: 0xf });
    assertEquals(isFdProblem(inspectSealedFd(m.fd)), false);
    using extra = sealedMemfd(enc("hello"), Seal.IMMUTABLE | Seal.FUTURE_WRITE);
    assertEquals(inspectSealedFd(extra.fd, 5n), { size: 5n, seals: 0x1f });
  }),
);

Deno.test(
  "inspectSealedFd reports an unsealed memfd and each missing seal",
  noLeak(() => {
    using none = sealedMemfd(enc("hello"), 0);
    assertEquals(inspectSealedFd(none.fd, 5n), { kind: "seals", seals: 0 });
    for (const missing of [Seal.SEAL, Seal.SHRINK, Seal.GROW, Seal.WRITE]) {
      const seals = Seal.IMMUTABLE & ~missing;
      using m = sealedMemfd(enc("hello"), seals);
      const r = inspectSealedFd(m.fd, 5n);
      assertEquals(r, { kind: "seals", seals });
      assertEquals(isFdProblem(r), true);
    }
  }),
);

Deno.test(
  "inspectSealedFd reports a pipe as not-regular",
  noLeak(() => {
    using p = pipe();
    assertEquals(inspectSealedFd(p.readFd), { kind: "not-regular" });
    assertEquals(inspectSealedFd(p.writeFd, 0n), { kind: "not-regular" });
  }),
);

Deno.test(
  "inspectSealedFd reports a disk file as get-seals EINVAL",
  noLeak(() => {
    using dir = tempDir();
    Deno.writeFileSync(`${dir.path}/plain`, enc("hello"));
    using f = FileDescriptor.open(`${dir.path}/plain`);
    assertEquals(inspectSealedFd(f.fd, 5n), { kind: "get-seals", errno: 22 });
  }),
);

Deno.test(
  "inspectSealedFd checks the size before the seals",
  noLeak(() => {
    using m = sealedMemfd(enc("hello"), 0);
    assertEquals(inspectSealedFd(m.fd, 4n), { kind: "size", actual: 5n });
    using s = sealedMemfd(enc("hello"));
    assertEquals(inspectSealedFd(s.fd, 6n), { kind: "size", actual: 5n });
    // Without an expected size, any size passes.
    assertEquals(inspectSealedFd(s.fd), { size: 5n, seals: 0xf });
  }),
);

Deno.test(
  "inspectSealedFd reports a descriptor that is not open, or negative, as bad-fd",
  noLeak(() => {
    // A number no process can hold open (far above any RLIMIT_NOFILE): a just-closed
    // number could be reused at once by the runtime's own threads.
    assertEquals(inspectSealedFd(1 << 30, 1n), { kind: "bad-fd" });
    assertEquals(inspectSealedFd(-7, 1n), { kind: "bad-fd" });
    assertEquals(inspectSealedFd(-1), { kind: "bad-fd" });
  }),
);

Deno.test("describeFdProblem words each problem like memfdbus_validate_fd", () => {
  const cases: [FdProblem, string][] = [
    [{ kind: "bad-fd" }, "invalid object fd"],
    [{ kind: "fstat", errno: 5 }, "fstat: Input/output error"],
    [{ kind: "not-regular" }, "descriptor is not a regular memfd-like file"],
    [{ kind: "size", actual: 4n }, "size mismatch: expected=5 fd=4"],
    [{ kind: "get-seals", errno: 22 }, "descriptor is not a sealed memfd"],
    [{ kind: "get-seals", errno: 1 }, "F_GET_SEALS: Operation not permitted"],
    [{ kind: "seals", seals: 7 }, "fd is not fully immutable-sealed"],
  ];
  assertEquals(cases.map(([p]) => describeFdProblem(p, 5n)), cases.map(([, t]) => t));
  assertEquals(
    describeFdProblem({ kind: "size", actual: 3n }, undefined),
    "size mismatch: expected=0 fd=3",
  );
});

Deno.test("fdRejectionText words each problem like the C broker", () => {
  const cases: [FdProblem, string][] = [
    [{ kind: "bad-fd" }, "missing memfd descriptor"],
    [{ kind: "fstat", errno: 5 }, "fstat failed: Input/output error"],
    [{ kind: "not-regular" }, "descriptor is not a regular memfd-like file"],
    [{ kind: "size", actual: 4n }, "size mismatch: header=5 fd=4"],
    [{ kind: "get-seals", errno: 22 }, "F_GET_SEALS failed: Invalid argument"],
    [{ kind: "get-seals", errno: 9 }, "F_GET_SEALS failed: Bad file descriptor"],
    [{ kind: "seals", seals: 0 }, "fd is not fully immutable-sealed"],
  ];
  assertEquals(cases.map(([p]) => fdRejectionText(p, 5n, strerror)), cases.map(([, t]) => t));
  assertEquals(
    fdRejectionText({ kind: "size", actual: 0n }, 18446744073709551615n, strerror),
    "size mismatch: header=18446744073709551615 fd=0",
  );
});

Deno.test(
  "getSeals of a pipe throws EINVAL from fcntl",
  noLeak(() => {
    using p = pipe();
    throwsErrno(() => getSeals(p.readFd), {
      code: "EINVAL",
      syscall: "fcntl",
      message: "F_GET_SEALS: Invalid argument",
    });
  }),
);

// ---- mappings -------------------------------------------------------------------------------

Deno.test(
  "Memfd.map gives a read-only view of exactly the file contents",
  noLeak(() => {
    const data = new Uint8Array(10000).map((_, i) => (i * 7) & 0xff);
    using m = sealedMemfd(data);
    using map = m.map();
    assertEquals(map.length, 10000);
    assertEquals(map.bytes.length, 10000);
    assertEquals(map.bytes, data);
    assertEquals(map.closed, false);
    assertEquals(map.leaked, false);
  }),
);

Deno.test(
  "a mapping stays readable after its memfd is closed",
  noLeak(() => {
    const m = sealedMemfd(enc("persist"));
    const map = m.map();
    m.close();
    assertEquals(dec(map.bytes), "persist");
    map.close();
  }),
);

Deno.test(
  "a zero-length mapping has empty bytes and closes without a system call",
  noLeak(() => {
    using m = sealedMemfd(new Uint8Array(0));
    const map = m.map();
    assertEquals([map.length, map.bytes.length], [0, 0]);
    map.close();
    map.close();
    assertEquals(map.closed, true);
    assertEquals(map.leaked, false);
    throws(() => map.bytes, { name: "TypeError", message: "Mapping is closed" });
  }),
);

Deno.test(
  "closing a mapping detaches every view taken from it and is safe twice",
  noLeak(() => {
    using m = sealedMemfd(enc("detach me"));
    const map = m.map();
    const kept = map.bytes;
    const sub = kept.subarray(2, 5);
    assertEquals(dec(sub), "tac");
    map.close();
    assertEquals(map.closed, true);
    assertEquals(kept.length, 0);
    assertEquals(sub.length, 0);
    assertEquals(kept[0], undefined);
    assertEquals((kept.buffer as ArrayBuffer).detached, true);
    throws(() => map.bytes, { name: "TypeError", message: "Mapping is closed" });
    map.close();
    assertEquals(map.leaked, false);
  }),
);

Deno.test(
  "a mapping whose buffer was transferred away is left mapped and marked leaked",
  noLeak(() => {
    using m = sealedMemfd(enc("transferred"));
    const map = m.map();
    const moved = (map.bytes.buffer as ArrayBuffer).transfer();
    map.close();
    assertEquals(map.leaked, true);
    assertEquals(map.closed, true);
    // The transferred buffer still points at live, mapped pages.
    assertEquals(dec(new Uint8Array(moved)), "transferred");
  }),
);

Deno.test(
  "Memfd.map refuses a memfd without F_SEAL_SHRINK unless allowUnsealed is set",
  noLeak(() => {
    using m = sealedMemfd(enc("abc"), Seal.WRITE | Seal.GROW);
    throws(() => m.map(), {
      name: "TypeError",
      message: "Refusing to map a memfd without F_SEAL_SHRINK",
    });
    using map = m.map(true);
    assertEquals(dec(map.bytes), "abc");
    using shrink = sealedMemfd(enc("abc"), Seal.SHRINK);
    using ok2 = shrink.map();
    assertEquals(dec(ok2.bytes), "abc");
  }),
);

Deno.test(
  "ReadOnlyMapping.of rejects a bad length and reports mmap failures",
  noLeak(() => {
    throws(() => ReadOnlyMapping.of(0, -1), {
      name: "RangeError",
      message: 'Invalid mapping length "-1"',
    });
    throws(() => ReadOnlyMapping.of(0, 1.5), {
      name: "RangeError",
      message: 'Invalid mapping length "1.5"',
    });
    throwsErrno(() => ReadOnlyMapping.of(999999, 10), {
      code: "EBADF",
      syscall: "mmap",
      message: "mmap: Bad file descriptor",
    });
    throwsErrno(() => ReadOnlyMapping.of(999999, 10, "mmap object"), {
      code: "EBADF",
      syscall: "mmap",
      message: "mmap object: Bad file descriptor",
    });
  }),
);

// ---- copying --------------------------------------------------------------------------------

Deno.test(
  "copyFrom a regular file copies everything in the kernel and advances its offset",
  noLeak(() => {
    using dir = tempDir();
    const data = new Uint8Array(300000).map((_, i) => (i * 13) & 0xff);
    Deno.writeFileSync(`${dir.path}/src`, data);
    using src = FileDescriptor.open(`${dir.path}/src`);
    using m = Memfd.create(UNIT);
    const r = m.copyFrom(src.fd);
    assertEquals(r.bytes, 300000);
    // copy_file_range across filesystems may give EXDEV; sendfile is the kernel-side fallback.
    ok(r.method === "copy_file_range" || r.method === "sendfile", r.method);
    assertEquals(offsetOf(src.fd), 300000);
    m.seal();
    using map = m.map();
    assertEquals(map.bytes, data);
  }),
);

Deno.test(
  "copyFrom another memfd uses copy_file_range",
  noLeak(() => {
    const data = new Uint8Array(200000).map((_, i) => (i * 5) & 0xff);
    using src = sealedMemfd(data);
    using m = Memfd.create(UNIT);
    assertEquals(m.copyFrom(src.fd), { bytes: 200000, method: "copy_file_range" });
    assertEquals(offsetOf(src.fd), 200000);
    m.seal();
    using map = m.map();
    assertEquals(map.bytes, data);
  }),
);

Deno.test(
  "copyFrom with srcOffset reads from there and leaves the source offset untouched",
  noLeak(() => {
    using dir = tempDir();
    Deno.writeFileSync(`${dir.path}/src`, enc("0123456789"));
    using src = FileDescriptor.open(`${dir.path}/src`);
    libc.symbols.lseek(src.fd, 7n, 0);
    using m = Memfd.create(UNIT);
    const r = m.copyFrom(src.fd, undefined, undefined, 2);
    assertEquals(r.bytes, 8);
    assertEquals(offsetOf(src.fd), 7);
    m.seal();
    using map = m.map();
    assertEquals(dec(map.bytes), "23456789");
  }),
);

Deno.test(
  "copyFrom with a length copies only that many bytes from the current offset",
  noLeak(() => {
    using dir = tempDir();
    Deno.writeFileSync(`${dir.path}/src`, enc("0123456789"));
    using src = FileDescriptor.open(`${dir.path}/src`);
    libc.symbols.lseek(src.fd, 1n, 0);
    using m = Memfd.create(UNIT);
    assertEquals(m.copyFrom(src.fd, 4).bytes, 4);
    assertEquals(offsetOf(src.fd), 5);
    m.seal();
    using map = m.map();
    assertEquals(dec(map.bytes), "1234");
  }),
);

Deno.test(
  "copyFrom an empty file copies nothing with method none",
  noLeak(() => {
    using dir = tempDir();
    Deno.writeFileSync(`${dir.path}/empty`, new Uint8Array(0));
    using src = FileDescriptor.open(`${dir.path}/empty`);
    using m = Memfd.create(UNIT);
    assertEquals(m.copyFrom(src.fd), { bytes: 0, method: "none" });
  }),
);

Deno.test(
  "copyFrom a pipe falls back to read/write and copies to its end",
  noLeak(() => {
    using p = pipe();
    const data = new Uint8Array(50000).map((_, i) => (i * 31) & 0xff);
    writeFd(p.writeFd, data);
    p.closeWrite();
    using m = Memfd.create(UNIT);
    const r = m.copyFrom(p.readFd);
    assertEquals(r, { bytes: 50000, method: "read/write" });
    m.seal();
    using map = m.map();
    assertEquals(map.bytes, data);
  }),
);

Deno.test(
  "copyFrom into a sealed memfd fails with the write label",
  noLeak(() => {
    using p = pipe();
    writeFd(p.writeFd, enc("abc"));
    p.closeWrite();
    using m = sealedMemfd(enc("x"));
    throwsErrno(() => m.copyFrom(p.readFd), {
      code: "EPERM",
      syscall: "write",
      message: "write memfd: Operation not permitted",
    });
  }),
);

Deno.test(
  "copyFrom a closed descriptor fails with fstat input",
  noLeak(() => {
    using m = Memfd.create(UNIT);
    throwsErrno(() => m.copyFrom(999999), {
      code: "EBADF",
      syscall: "fstat",
      message: "fstat input: Bad file descriptor",
    });
  }),
);

Deno.test("ReadOnlyMapping.prefetch maps pages in ahead; a close meanwhile unmaps once it is done", async () => {
  const guard = fdGuard();
  const size = (2 << 20) + 5;
  const data = new Uint8Array(size).map((_, i) => (i * 13) & 0xff);
  {
    using m = sealedMemfd(data);
    const map = m.map();
    await map.prefetch(4096);
    assertEquals(map.bytes, data);
    // Past the end, or on a closed mapping: nothing to do.
    await map.prefetch(size + 4096);
    const pending = map.prefetch(0);
    map.close();
    assertEquals(map.closed, true);
    await pending;
    await map.prefetch(0);
  }
  guard.assertClean();
});
