/**
 * Linux constants and struct layouts used by the FFI layer.
 *
 * Values are the same on x86_64 and aarch64 unless a field says otherwise. Nothing in this
 * module performs I/O.
 *
 * @module
 */

/** The CPU architecture this process runs on, as far as struct layouts are concerned. */
const ARCH: string = Deno.build.arch;

/** File sealing and memfd flags (see fcntl(2) and memfd_create(2)). */
export const F_ADD_SEALS = 1033;
/** Read the seals of a file (fcntl command). */
export const F_GET_SEALS = 1034;
/** Forbid further changes to the seal set. */
export const F_SEAL_SEAL = 0x1;
/** Forbid shrinking the file. */
export const F_SEAL_SHRINK = 0x2;
/** Forbid growing the file. */
export const F_SEAL_GROW = 0x4;
/** Forbid every write, through write(2) and through shared writable mappings. */
export const F_SEAL_WRITE = 0x8;
/** Forbid new writable mappings and writes, keeping existing writable mappings usable. */
export const F_SEAL_FUTURE_WRITE = 0x10;
/** The four seals that make a memfd immutable in the memfdbus sense. */
export const SEALS_IMMUTABLE = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

/** memfd_create flag: close-on-exec. */
export const MFD_CLOEXEC = 0x1;
/** memfd_create flag: allow sealing. */
export const MFD_ALLOW_SEALING = 0x2;
/** memfd_create flag: back the file with huge pages. */
export const MFD_HUGETLB = 0x4;
/** memfd_create flag: not executable, with F_SEAL_EXEC set (Linux 6.3+). */
export const MFD_NOEXEC_SEAL = 0x8;

/** fcntl commands. */
export const F_DUPFD_CLOEXEC = 1030;
/** Get descriptor flags. */
export const F_GETFD = 1;
/** Set descriptor flags. */
export const F_SETFD = 2;
/** Get file status flags. */
export const F_GETFL = 3;
/** Set file status flags. */
export const F_SETFL = 4;
/** Close-on-exec descriptor flag. */
export const FD_CLOEXEC = 1;

/** open(2) flags. */
export const O_RDONLY = 0;
/** Open for writing. */
export const O_WRONLY = 1;
/** Open for reading and writing. */
export const O_RDWR = 2;
/** Create if missing. */
export const O_CREAT = 0o100;
/** Fail if it exists (with O_CREAT). */
export const O_EXCL = 0o200;
/** Truncate to zero length. */
export const O_TRUNC = 0o1000;
/** Append mode. */
export const O_APPEND = 0o2000;
/** Nonblocking mode. */
export const O_NONBLOCK = 0o4000;
/** Close-on-exec. */
export const O_CLOEXEC = 0o2000000;
/** Do not follow a final symbolic link. */
export const O_NOFOLLOW = ARCH === "aarch64" ? 0o100000 : 0o400000;
/** Open a directory only. */
export const O_DIRECTORY = ARCH === "aarch64" ? 0o40000 : 0o200000;

/** lseek whence values. */
export const SEEK_SET = 0;
/** Seek relative to the end. */
export const SEEK_END = 2;
/** lseek(2): the next hole at or after the offset (the end of file counts as one). */
export const SEEK_HOLE = 4;

/** mmap protection and flags. */
export const PROT_READ = 0x1;
/** Writable pages. */
export const PROT_WRITE = 0x2;
/** Shared mapping. */
export const MAP_SHARED = 0x01;
/** Private mapping. */
export const MAP_PRIVATE = 0x02;
/** Populate page tables up front. */
export const MAP_POPULATE = 0x8000;
/** Sequential access advice. */
export const MADV_SEQUENTIAL = 2;
/** Will-need advice. */
export const MADV_WILLNEED = 3;
/** madvise(2): map the pages in now, read-only (Linux 5.14; EINVAL before). */
export const MADV_POPULATE_READ = 22;
/** fallocate(2): allocate without changing the file size. */
export const FALLOC_FL_KEEP_SIZE = 0x01;

/** Socket constants. */
export const AF_UNIX = 1;
/** Stream socket. */
export const SOCK_STREAM = 1;
/** Nonblocking socket flag for socket(2) and accept4(2). */
export const SOCK_NONBLOCK = 0o4000;
/** Close-on-exec socket flag for socket(2) and accept4(2). */
export const SOCK_CLOEXEC = 0o2000000;
/** Socket-level options. */
export const SOL_SOCKET = 1;
/** Ancillary message type: file descriptors. */
export const SCM_RIGHTS = 1;
/** Peer credentials option. */
export const SO_PEERCRED = 17;
/** Socket error option. */
export const SO_ERROR = 4;
/** The socket's type option (SOCK_STREAM, ...). */
export const SO_TYPE = 3;
/** Whether the socket is listening. */
export const SO_ACCEPTCONN = 30;
/** The socket's address family option. */
export const SO_DOMAIN = 39;
/** Send buffer size option. */
export const SO_SNDBUF = 7;
/** Receive buffer size option. */
export const SO_RCVBUF = 8;
/** Do not raise SIGPIPE. */
export const MSG_NOSIGNAL = 0x4000;
/** Set close-on-exec on received descriptors. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** Control data was truncated. */
export const MSG_CTRUNC = 0x8;
/** Data was truncated. */
export const MSG_TRUNC = 0x20;
/** Nonblocking for this call only. */
export const MSG_DONTWAIT = 0x40;
/** shutdown(2) how: no more receptions. */
export const SHUT_RD = 0;
/** shutdown(2) how: no more transmissions. */
export const SHUT_WR = 1;
/** The largest number of descriptors one SCM_RIGHTS message may carry (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;

/** epoll constants. */
export const EPOLL_CLOEXEC = 0o2000000;
/** Add an fd to the interest list. */
export const EPOLL_CTL_ADD = 1;
/** Remove an fd from the interest list. */
export const EPOLL_CTL_DEL = 2;
/** Change the events of an fd. */
export const EPOLL_CTL_MOD = 3;
/** Readable. */
export const EPOLLIN = 0x001;
/** Writable. */
export const EPOLLOUT = 0x004;
/** Error condition. */
export const EPOLLERR = 0x008;
/** Hang-up. */
export const EPOLLHUP = 0x010;
/** Peer closed its writing half. */
export const EPOLLRDHUP = 0x2000;
/** Edge-triggered notification. */
export const EPOLLET = 0x80000000;
/** One-shot notification. */
export const EPOLLONESHOT = 1 << 30;
/** Size of struct epoll_event: packed (12 bytes) on x86_64, 16 bytes on aarch64. */
export const EPOLL_EVENT_SIZE: number = ARCH === "x86_64" ? 12 : 16;
/** Offset of the data member in struct epoll_event. */
export const EPOLL_EVENT_DATA: number = ARCH === "x86_64" ? 4 : 8;

/** eventfd flags. */
export const EFD_CLOEXEC = 0o2000000;
/** Nonblocking eventfd. */
export const EFD_NONBLOCK = 0o4000;

/** statx(2) constants and offsets (the struct layout is the same on every architecture). */
export const AT_FDCWD = -100;
/** Operate on the descriptor itself when the path is empty. */
export const AT_EMPTY_PATH = 0x1000;
/** statx: return cached attributes, never ask a remote or FUSE file system. */
export const AT_STATX_DONT_SYNC = 0x4000;
/** Do not follow a final symbolic link. */
export const AT_SYMLINK_NOFOLLOW = 0x100;
/** Ask for the basic stat fields. */
export const STATX_BASIC_STATS = 0x7ff;
/** Size of struct statx. */
export const STATX_SIZE = 256;
/** Offset of stx_nlink (u32). */
export const STATX_NLINK = 16;
/** Offset of stx_uid (u32). */
export const STATX_UID = 20;
/** Offset of stx_gid (u32). */
export const STATX_GID = 24;
/** Offset of stx_mode (u16). */
export const STATX_MODE = 28;
/** Offset of stx_ino (u64). */
export const STATX_INO = 32;
/** Offset of stx_size (u64). */
export const STATX_FILESIZE = 40;
/** Offset of stx_blocks (u64, 512-byte blocks allocated). */
export const STATX_BLOCKS = 48;
/** Offset of stx_dev_major (u32). */
export const STATX_DEV_MAJOR = 136;
/** Offset of stx_dev_minor (u32). */
export const STATX_DEV_MINOR = 140;
/** File type mask in a mode. */
export const S_IFMT = 0o170000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Directory. */
export const S_IFDIR = 0o40000;
/** Socket. */
export const S_IFSOCK = 0o140000;
/** FIFO. */
export const S_IFIFO = 0o10000;
/** Character device. */
export const S_IFCHR = 0o20000;

/** Resource limit: open descriptors. */
export const RLIMIT_NOFILE = 7;
/** Realtime clock id. */
export const CLOCK_REALTIME = 0;
/** Monotonic clock id. */
export const CLOCK_MONOTONIC = 1;

/** poll(2) events. */
export const POLLIN = 0x001;
/** Writable. */
export const POLLOUT = 0x004;

/** waitid(2) id type: one process. */
export const P_PID = 1;
/** waitid(2)/waitpid(2) option: do not block. */
export const WNOHANG = 1;
/** waitid(2) option: wait for exited children. */
export const WEXITED = 4;
/** waitid(2) option: leave the child waitable (do not reap it). */
export const WNOWAIT = 0x01000000;

/** The memfd_create system call number, for libcs without a wrapper. */
export const SYS_memfd_create: bigint = ARCH === "aarch64" ? 279n : 319n;

/** Size of struct msghdr. */
export const MSGHDR_SIZE = 56;
/** Field offsets of struct msghdr (LP64). */
export const Msghdr = {
  /** void *msg_name. */
  name: 0,
  /** socklen_t msg_namelen. */
  namelen: 8,
  /** struct iovec *msg_iov. */
  iov: 16,
  /** size_t msg_iovlen (u64). */
  iovlen: 24,
  /** void *msg_control. */
  control: 32,
  /** size_t msg_controllen (u64). */
  controllen: 40,
  /** int msg_flags. */
  flags: 48,
} as const;
/** Size of struct iovec. */
export const IOVEC_SIZE = 16;
/** Field offsets of struct iovec. */
export const Iovec = {
  /** void *iov_base. */
  base: 0,
  /** size_t iov_len (u64). */
  len: 8,
} as const;
/** Size of struct cmsghdr (the header before the data). */
export const CMSGHDR_SIZE = 16;
/** Field offsets of struct cmsghdr (LP64); the data follows at {@link CMSGHDR_SIZE}. */
export const Cmsghdr = {
  /** size_t cmsg_len (u64). */
  len: 0,
  /** int cmsg_level. */
  level: 8,
  /** int cmsg_type. */
  type: 12,
} as const;
/** Size of struct ucred (SO_PEERCRED). */
export const UCRED_SIZE = 12;
/** Field offsets of struct ucred. */
export const Ucred = {
  /** pid_t pid. */
  pid: 0,
  /** uid_t uid. */
  uid: 4,
  /** gid_t gid. */
  gid: 8,
} as const;
/** Size of struct pollfd. */
export const POLLFD_SIZE = 8;
/** Field offsets of struct pollfd. */
export const Pollfd = {
  /** int fd. */
  fd: 0,
  /** short events. */
  events: 4,
  /** short revents. */
  revents: 6,
} as const;
/** Size of struct rlimit. */
export const RLIMIT_SIZE = 16;
/** Size of siginfo_t. */
export const SIGINFO_SIZE = 128;
/** Offset of si_pid in siginfo_t (the SIGCHLD fields of the union). */
export const SIGINFO_PID = 16;
/** sockaddr_un.sun_family (u16) and sun_path offsets. */
export const SockaddrUn = {
  /** sa_family_t sun_family. */
  family: 0,
  /** char sun_path[108]. */
  path: 2,
} as const;
/** The value of MAP_FAILED, `(void *)-1`. */
export const MAP_FAILED: Deno.PointerValue = Deno.UnsafePointer.create(0xffffffffffffffffn);
/** Size of struct sockaddr_un. */
export const SOCKADDR_UN_SIZE = 110;
/** Capacity of sockaddr_un.sun_path, including the terminating NUL. */
export const SUN_PATH_MAX = 108;

/** CMSG_ALIGN: round up to the size of a long. */
export function cmsgAlign(len: number): number {
  return (len + 7) & ~7;
}

/** CMSG_SPACE(n): bytes a control message with n data bytes occupies. */
export function cmsgSpace(dataLen: number): number {
  return CMSGHDR_SIZE + cmsgAlign(dataLen);
}

/** CMSG_LEN(n): the cmsg_len value for n data bytes. */
export function cmsgLen(dataLen: number): number {
  return CMSGHDR_SIZE + dataLen;
}

/** Symbolic names of Linux errno values (asm-generic numbering, shared by x86_64 and aarch64). */
export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  29: "ESPIPE",
  30: "EROFS",
  32: "EPIPE",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  61: "ENODATA",
  71: "EPROTO",
  75: "EOVERFLOW",
  88: "ENOTSOCK",
  90: "EMSGSIZE",
  91: "EPROTOTYPE",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  103: "ECONNABORTED",
  104: "ECONNRESET",
  105: "ENOBUFS",
  106: "EISCONN",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  115: "EINPROGRESS",
};

/** errno values the code tests for by number. */
export const EPERM = 1;
/** No such file or directory. */
export const ENOENT = 2;
/** Interrupted system call. */
export const EINTR = 4;
/** Input/output error. */
export const EIO = 5;
/** Bad file descriptor. */
export const EBADF = 9;
/** No child processes. */
export const ECHILD = 10;
/** Resource temporarily unavailable. */
export const EAGAIN = 11;
/** Out of memory. */
export const ENOMEM = 12;
/** Cross-device link. */
export const EXDEV = 18;
/** Invalid argument. */
export const EINVAL = 22;
/** Too many open files in the system. */
export const ENFILE = 23;
/** Too many open files. */
export const EMFILE = 24;
/** Broken pipe. */
export const EPIPE = 32;
/** Function not implemented. */
export const ENOSYS = 38;
/** Protocol error. */
export const EPROTO = 71;
/** Operation not supported. */
export const EOPNOTSUPP = 95;
/** Connection aborted. */
export const ECONNABORTED = 103;
/** Connection reset by peer. */
export const ECONNRESET = 104;
/** No buffer space available. */
export const ENOBUFS = 105;
/** Connection refused. */
export const ECONNREFUSED = 111;
/** Connection timed out. */
export const ETIMEDOUT = 110;
/** File name too long. */
export const ENAMETOOLONG = 36;
/** Operation now in progress. */
export const EINPROGRESS = 115;
