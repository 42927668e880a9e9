/**
 * The one binding to libc (the only `Deno.dlopen` of the project). The system layer (`src/sys/`)
 * calls the C functions through `libc`.
 *
 * How the system layer reports errno, everywhere:
 * - A wrapper throws {@link ErrnoError} (built with {@link check}, {@link checkBig},
 *   {@link lastError} or {@link errnoErrorOf}) when its call fails.
 * - Except where failure is an expected answer the caller branches on, on a path that must not
 *   allocate an exception: the functions named `try*` and the nonblocking socket calls
 *   (`acceptUnix`, `connectUnix`, `sendMsg`, `sendSome`, `recvMsg`, `readSome`). They return
 *   their result, or the negated errno (`-EAGAIN`, `-ENOENT`) as a number below zero. No wrapper
 *   returns a positive errno, a bare -1 or null for a failure.
 * - Messages for people name the error (`strerror` text, the `E...` name), never its number.
 *
 * errno is read through `__errno_location()` in the statement right after the failing call: Deno
 * ops change errno, so nothing may run in between.
 *
 * @module
 */

import { ErrnoError } from "./errors.ts";

const symbols = {
  /** int *__errno_location(void) */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum) */
  strerror: { parameters: ["i32"], result: "pointer" },

  /** int memfd_create(const char *name, unsigned int flags) — glibc 2.27+ */
  memfd_create: { parameters: ["buffer", "u32"], result: "i32", optional: true },
  /** long syscall(long number, const char *name, unsigned int flags) — the raw memfd_create */
  syscall_memfd_create: { name: "syscall", parameters: ["i64", "buffer", "u32"], result: "i64" },
  /** int fcntl(int fd, int cmd, int arg) */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) */
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  /** int open(const char *path, int flags, mode_t mode) */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int openat(int dirfd, const char *path, int flags, mode_t mode) */
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  /** int close(int fd) */
  close: { parameters: ["i32"], result: "i32" },
  /** int close(int fd), run on Deno's blocking pool (a socket's close can block on SO_LINGER) */
  close_async: { name: "close", parameters: ["i32"], result: "i32", nonblocking: true },
  /** ssize_t read(int fd, void *buf, size_t count) */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count) */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count), from a raw pointer */
  write_ptr: { name: "write", parameters: ["i32", "pointer", "usize"], result: "isize" },
  /** ssize_t pread64(int fd, void *buf, size_t count, off64_t offset) */
  pread: { name: "pread64", parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** off64_t lseek64(int fd, off64_t offset, int whence) */
  lseek: { name: "lseek64", parameters: ["i32", "i64", "i32"], result: "i64" },
  /** int ftruncate64(int fd, off64_t length) */
  ftruncate: { name: "ftruncate64", parameters: ["i32", "i64"], result: "i32" },
  /** int chmod(const char *path, mode_t mode) */
  chmod: { parameters: ["buffer", "u32"], result: "i32" },
  /** int fchmod(int fd, mode_t mode) */
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  /** int unlink(const char *path) */
  unlink: { parameters: ["buffer"], result: "i32" },
  /** int rename(const char *old, const char *new) */
  rename: { parameters: ["buffer", "buffer"], result: "i32" },
  /** mode_t umask(mode_t mask) */
  umask: { parameters: ["u32"], result: "u32" },
  /** int dup(int fd) */
  dup: { parameters: ["i32"], result: "i32" },
  /** int dup3(int old, int new, int flags) */
  dup3: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int pipe2(int fds[2], int flags) */
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  /** void *mmap(void *addr, size_t len, int prot, int flags, int fd, off64_t off) */
  mmap: {
    name: "mmap64",
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
  },
  /** void *memcpy(void *dst, const void *src, size_t n), into a raw pointer (a mapping) */
  memcpy_to: { name: "memcpy", parameters: ["pointer", "buffer", "usize"], result: "pointer" },
  /** void *memcpy(...) into a raw pointer, run on Deno's blocking pool (`src` must stay alive) */
  memcpy_to_async: {
    name: "memcpy",
    parameters: ["pointer", "buffer", "usize"],
    result: "pointer",
    nonblocking: true,
  },
  /** ssize_t pread64(int fd, void *buf, size_t count, off64_t offset), into a raw pointer */
  pread_to: { name: "pread64", parameters: ["i32", "pointer", "usize", "i64"], result: "isize" },
  /** ssize_t pread64(...) into a raw pointer, run on the blocking pool; errno is lost */
  pread_to_async: {
    name: "pread64",
    parameters: ["i32", "pointer", "usize", "i64"],
    result: "isize",
    nonblocking: true,
  },
  /** int madvise(void *addr, size_t len, int advice), run on the blocking pool */
  madvise_async: {
    name: "madvise",
    parameters: ["pointer", "usize", "i32"],
    result: "i32",
    nonblocking: true,
  },
  /** int munmap(void *addr, size_t len) */
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  /** int madvise(void *addr, size_t len, int advice) */
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  /** int fallocate64(int fd, int mode, off64_t offset, off64_t len) */
  fallocate: { name: "fallocate64", parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  /** ssize_t copy_file_range(int in, off64_t *off_in, int out, off64_t *off_out, size_t len, unsigned flags) */
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
    optional: true,
  },
  /** ssize_t sendfile64(int out, int in, off64_t *offset, size_t count) */
  sendfile: { name: "sendfile64", parameters: ["i32", "i32", "buffer", "usize"], result: "isize" },

  /** int socket(int domain, int type, int protocol) */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len) */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int fd, int backlog) */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) */
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len) */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) */
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** ssize_t recvmsg(int fd, struct msghdr *msg, int flags) */
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** ssize_t send(int fd, const void *buf, size_t len, int flags) */
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  /** ssize_t recv(int fd, void *buf, size_t len, int flags) */
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  /** int getsockname(int fd, struct sockaddr *addr, socklen_t *len) */
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** int getpeername(int fd, struct sockaddr *addr, socklen_t *len) */
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** int socketpair(int domain, int type, int protocol, int sv[2]) */
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** int shutdown(int fd, int how) */
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  /** int getsockopt(int fd, int level, int name, void *val, socklen_t *len) */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** int setsockopt(int fd, int level, int name, const void *val, socklen_t len) */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },

  /** int epoll_create1(int flags) */
  epoll_create1: { parameters: ["i32"], result: "i32" },
  /** int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) */
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout), never blocking */
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  /** int epoll_wait(...), run on Deno's blocking pool; errno is lost on this path */
  epoll_wait_async: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  /** int eventfd(unsigned int initval, int flags) */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask) */
  ppoll: { parameters: ["buffer", "u64", "buffer", "pointer"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t n, int timeout) */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },

  /** int execvp(const char *file, char *const argv[]) */
  execvp: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int setenv(const char *name, const char *value, int overwrite) */
  setenv: { parameters: ["buffer", "buffer", "i32"], result: "i32" },
  /** int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) */
  posix_spawnp: {
    parameters: ["buffer", "buffer", "buffer", "pointer", "buffer", "pointer"],
    result: "i32",
  },
  /** int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa) */
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  /** int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *fa) */
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  /** int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int newfd) */
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  /** pid_t waitpid(pid_t pid, int *status, int options), run on the blocking pool */
  waitpid_async: {
    name: "waitpid",
    parameters: ["i32", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  /** pid_t setsid(void) */
  setsid: { parameters: [], result: "i32" },
  /** int waitid(idtype_t idtype, id_t id, siginfo_t *info, int options) */
  waitid: { parameters: ["i32", "i32", "buffer", "i32"], result: "i32" },
  /** pid_t waitpid(pid_t pid, int *status, int options), blocking the calling thread */
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** int posix_spawnattr_init(posix_spawnattr_t *attr) */
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  /** int posix_spawnattr_destroy(posix_spawnattr_t *attr) */
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  /** int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags) */
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  /** int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *sigdefault) */
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *sigmask) */
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int sigemptyset(sigset_t *set) */
  sigemptyset: { parameters: ["buffer"], result: "i32" },
  /** int sigaddset(sigset_t *set, int signum) */
  sigaddset: { parameters: ["buffer", "i32"], result: "i32" },
  /**
   * extern char **environ. A static: the symbol's value is the address of the variable, so
   * reading the pointer stored there gives the current environment block (setenv may move it).
   */
  environ: { type: "pointer" },
  /** pid_t getpid(void) */
  getpid: { parameters: [], result: "i32" },
  /** uid_t geteuid(void) */
  geteuid: { parameters: [], result: "u32" },
  /** gid_t getegid(void) */
  getegid: { parameters: [], result: "u32" },
  /** int getrlimit(int resource, struct rlimit *rlim) */
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  /** int setrlimit(int resource, const struct rlimit *rlim) */
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  /** int clock_gettime(clockid_t clk, struct timespec *ts) */
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libc symbols this project binds. */
export type LibcSymbols = typeof symbols;

/** The opened libc. `libc.symbols.memfd_create` and `copy_file_range` are null on old libcs. */
/** The symbol table of {@link libc}, as Deno.dlopen types it. */
export type LibcBindings = Deno.DynamicLibrary<LibcSymbols>["symbols"];

// Binding a symbol costs about 0.2 ms (Deno builds a trampoline for each), and most commands
// use few of them, so symbols are bound by group on first use. Each group is one dlopen of
// libc; afterwards a symbol is a plain property, with no cost on the hot path.
const GROUPS: readonly (readonly (keyof LibcSymbols)[])[] = [
  ["__errno_location", "strerror", "socket", "connect", "sendmsg", "recvmsg", "send", "close"],
  ["fcntl", "statx", "ppoll"],
  [
    "open",
    "openat",
    "read",
    "write",
    "write_ptr",
    "pread",
    "lseek",
    "ftruncate",
    "chmod",
    "fchmod",
    "unlink",
    "rename",
    "umask",
    "dup",
    "dup3",
    "pipe2",
  ],
  [
    "memfd_create",
    "syscall_memfd_create",
    "mmap",
    "munmap",
    "madvise",
    "copy_file_range",
    "sendfile",
  ],
  ["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_wait_async", "eventfd", "poll"],
];

const bindings = {} as LibcBindings;
const opened: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

function bindGroup(names: readonly (keyof LibcSymbols)[]): void {
  const defs: Record<string, Deno.ForeignFunction | Deno.ForeignStatic> = {};
  for (const n of names) defs[n] = symbols[n];
  const lib = Deno.dlopen("libc.so.6", defs);
  opened.push(lib);
  for (const n of names) {
    Object.defineProperty(bindings, n, { value: lib.symbols[n], enumerable: true });
  }
}

{
  const grouped = new Set<string>(GROUPS.flat());
  const rest = (Object.keys(symbols) as (keyof LibcSymbols)[]).filter((n) => !grouped.has(n));
  for (const group of [...GROUPS, rest]) {
    for (const n of group) {
      Object.defineProperty(bindings, n, {
        configurable: true,
        enumerable: true,
        get(): unknown {
          bindGroup(group);
          return bindings[n];
        },
      });
    }
  }
}

/**
 * The libc binding. `libc.symbols.memfd_create` and `copy_file_range` are null on old libcs.
 * Symbols are bound lazily, a group at a time.
 */
export const libc: { readonly symbols: LibcBindings } = { symbols: bindings };

const errnoPtr = libc.symbols.__errno_location();
if (errnoPtr === null) throw new Error("__errno_location returned NULL");
const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(errnoPtr, 4));

/** The current thread's errno. Read it immediately after the failing call. */
export function errno(): number {
  return errnoCell[0] ?? 0;
}

const strerrorCache = new Map<number, string>();

/** The libc description of an errno value, as strerror(3) gives it. */
export function strerror(code: number): string {
  let text = strerrorCache.get(code);
  if (text === undefined) {
    const p = libc.symbols.strerror(code);
    text = p === null ? `Unknown error ${code}` : Deno.UnsafePointerView.getCString(p);
    strerrorCache.set(code, text);
  }
  return text;
}

/** Build an {@link ErrnoError} for an explicit errno value. */
export function errnoErrorOf(syscall: string, code: number, context?: string): ErrnoError {
  return new ErrnoError(syscall, code, strerror(code), context);
}

/**
 * Build an {@link ErrnoError} from the current errno. Call it in the statement right after the
 * failing call.
 */
export function lastError(syscall: string, context?: string): ErrnoError {
  const code = errnoCell[0] ?? 0;
  return new ErrnoError(syscall, code, strerror(code), context);
}

/** Throw the current errno as an {@link ErrnoError} when a call returned a negative number. */
export function check(result: number, syscall: string, context?: string): number {
  if (result < 0) throw lastError(syscall, context);
  return result;
}

/** Like {@link check}, for calls that return a 64-bit count; the result is a number. */
export function checkBig(result: number | bigint, syscall: string, context?: string): number {
  if (result < 0) throw lastError(syscall, context);
  return Number(result);
}

const encoder = new TextEncoder();

/** Encode a string as a NUL-terminated C string. */
export function cstr(value: string | Uint8Array): Uint8Array<ArrayBuffer> {
  const bytes = typeof value === "string" ? encoder.encode(value) : value;
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Close a descriptor, ignoring errors (for cleanup paths). */
export function closeQuietly(fd: number): void {
  if (fd >= 0) libc.symbols.close(fd);
}
