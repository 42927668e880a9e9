/**
 * The usage texts of the CLI. The first block is byte for byte the C memfdbus usage; options
 * this implementation adds follow it.
 *
 * @module
 */

/** Full usage, printed by `--help` and `help` (stdout) and with no subcommand (stderr). */
export const USAGE: string = `usage:
  memfdbus broker [--socket PATH] [--max-name-bytes N] [--max-objects N]
                  [--max-request-bytes N] [--max-list-bytes N]
                  [--max-total-bytes N] [--listen-backlog N]
                  [--max-clients N]
  memfdbus put FILE [--name NAME | --content-addressed]
               [--job-id JOB] [--allow-job JOB] [--socket PATH]
  memfdbus get OBJECT_ID OUT [--job-id JOB] [--socket PATH]
  memfdbus get --name NAME OUT [--job-id JOB] [--socket PATH]
  memfdbus exec OBJECT_ID [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
  memfdbus exec --name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
  memfdbus drop OBJECT_ID [--job-id JOB] [--socket PATH]
  memfdbus drop --name NAME [--job-id JOB] [--socket PATH]
  memfdbus list [--job-id JOB] [--socket PATH]
broker options beyond the C memfdbus:
  --config FILE           read options from a JSONC file (flags override it)
  --policy FILE           identity policy (JSONC): bind jobs to uids/gids, reserve names
  --socket-mode MODE      permissions of the socket file (0600)
  --request-timeout-ms N  close a connection that has not completed its request (10000)
  --idle-timeout-ms N     close a kept-alive connection idle this long (60000)
  --max-wait-ms N         longest a get --wait is parked by the broker (3600000)
  --max-waiters N         most get --wait requests parked at once (1024)
  --max-watchers N        most watch streams open at once (64; 3/4 of them per uid)
  --shadow PATH           mirror objects to a shadow process so they survive a restart
  --takeover              take the socket and objects over from the broker running on it
  --audit-peer            add the peer's pid, uid and gid to every audit record
  --audit-uid-rate BYTES  audit bytes a second per uid, root and the broker's own
                          exempt (1MiB); records past it are dropped and summed up
  --audit-uid-burst BYTES audit bytes per uid at once after a quiet spell (16 x rate)
  --read-only-fds         hand consumers O_RDONLY descriptors (C: O_RDWR, writes fail EPERM)
  --require-job           refuse requests without a job id
  --protect-names         only the job that first published a name may publish it again
  --keep-versions N       keep the N newest versions of each name, release older ones
  --evict superseded      over a limit, release superseded versions (least recently
                          fetched first) instead of refusing (none: refuse)
  --no-dedup              keep a memfd per PUT even for identical contents
  --metrics ADDRESS       serve Prometheus metrics at /metrics (HOST:PORT or a path)
  --cluster URLS          share named objects with other hosts through NATS JetStream
                          (nats://HOST:PORT[,...]; config key "cluster")
  --host-id ID            this host's id in the cluster (the host name)
  --cluster-sync          acknowledge a PUT only once the cluster committed it
commands beyond the C memfdbus:
  memfdbus stat OBJECT_ID [--job-id JOB] [--socket PATH] [--json]
  memfdbus stat --name NAME [--job-id JOB] [--socket PATH] [--json]
                [--wait SECONDS]
    stat: id, name, size, digest, seals, owner, allowed job and creation time
  memfdbus capture --name NAME [--job-id JOB] [--allow-job JOB] [--socket PATH]
                   [--json] [--always] -- COMMAND [ARG...]
    capture: run COMMAND with its stdout in a new memfd, then publish that
      memfd; it publishes only if COMMAND exits 0 (--always: whatever its
      status) and exits with COMMAND's status (128+N if signal N killed it)
  memfdbus watch [--name NAME | --prefix PREFIX] [--job-id JOB] [--socket PATH]
                 [--json] [--once] [--timeout SECONDS]
    watch: one line per publish, drop, release or eviction until interrupted
  memfdbus usage [--job-id JOB] [--socket PATH] [--json]
    usage: objects and bytes (charged after dedup) held by the broker, each
      job and each uid, next to their limits
  memfdbus shadow --socket PATH
    shadow: hold the objects of a broker started with --shadow PATH (it starts
      one itself when none is running); stop it with SIGTERM
client options beyond the C memfdbus:
  --json            put, get, drop, list, stat, capture, usage: print the result as
                    JSON; get cannot combine it with OUT -
  --wait SECONDS    get, exec, stat by --name: wait for the name to be
                    published, up to SECONDS (fractions allowed; max: as long
                    as the broker allows)
  --broker-uid UID  every client command: trust a broker running as UID (or
                    user name) besides root and yourself (MEMFDBUS_BROKER_UID)
  --local           put: keep the object on this host (a broker with --cluster
                    shares named objects by default)
  --cluster         list: the cluster's names, latest version each, with the
                    host that published it
  put and get show a progress line on stderr for 64 MiB or more when stderr
  is a terminal
other commands and options:
  memfdbus help [COMMAND]   help for one command (also: memfdbus COMMAND --help)
  memfdbus --version        print the version
  --timeout SECONDS         any client command: give up on the broker after this
                            long (30)
  every flag that takes a value takes it as --flag VALUE or --flag=VALUE
defaults: --socket is $MEMFDBUS_SOCKET if set, else /tmp/memfdbus.sock;
  --job-id is $MEMFDBUS_JOB_ID if set
`;

/** Two-line usage of `put`. */
export const PUT_USAGE = `usage: memfdbus put FILE [--name NAME | --content-addressed]
   [--job-id JOB] [--allow-job JOB] [--socket PATH]`;

/** Two-line usage of `get`. */
export const GET_USAGE = `usage: memfdbus get OBJECT_ID OUT [--job-id JOB] [--socket PATH]
   or: memfdbus get --name NAME OUT [--job-id JOB] [--socket PATH]`;

/** Two-line usage of `exec`. */
export const EXEC_USAGE =
  `usage: memfdbus exec OBJECT_ID [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
   or: memfdbus exec --name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]`;

/** Two-line usage of `drop`. */
export const DROP_USAGE = `usage: memfdbus drop OBJECT_ID [--job-id JOB] [--socket PATH]
   or: memfdbus drop --name NAME [--job-id JOB] [--socket PATH]`;

/** Two-line usage of `stat`. */
export const STAT_USAGE = `usage: memfdbus stat OBJECT_ID [--job-id JOB] [--socket PATH] [--json]
   or: memfdbus stat --name NAME [--job-id JOB] [--socket PATH] [--json] [--wait SECONDS]`;

/** Two-line usage of `capture`. */
export const CAPTURE_USAGE =
  `usage: memfdbus capture --name NAME [--job-id JOB] [--allow-job JOB] [--socket PATH]
   [--json] [--always] -- COMMAND [ARG...]`;

/** The lines every client command's help ends with. */
const CLIENT_OPTIONS =
  `  --socket PATH          broker socket (default: $MEMFDBUS_SOCKET, else /tmp/memfdbus.sock)
  --job-id JOB           act as job JOB (default: $MEMFDBUS_JOB_ID; none: unscoped)
  --timeout SECONDS      give up when the broker has not answered within SECONDS (30)
  --broker-uid UID       trust a broker running as UID or user besides root and yourself
                         (default: $MEMFDBUS_BROKER_UID)
  -h, --help             show this help`;

/** The help of each subcommand, printed by `memfdbus COMMAND --help` and `memfdbus help COMMAND`. */
export const COMMAND_HELP: Readonly<Record<string, string>> = {
  broker: `usage: memfdbus broker [--socket PATH] [OPTION...]

Run a broker in the foreground until SIGINT (Ctrl-C) or SIGTERM; it prints its audit
records on stdout. Every option can also come from --config FILE.

options (default):
  --socket PATH              socket to create ($MEMFDBUS_SOCKET, else /tmp/memfdbus.sock)
  --config FILE              read options from a JSONC file (flags override it)
  --policy FILE              identity policy (JSONC): bind jobs to uids/gids, reserve names
  --socket-mode MODE         permissions of the socket file (0600)
  --max-name-bytes N         longest object name (65536)
  --max-objects N            most objects stored at once (no limit)
  --max-request-bytes N      largest request (no limit)
  --max-list-bytes N         largest LIST reply (no limit)
  --max-total-bytes N        most bytes stored at once (no limit)
  --max-metadata-bytes N     most bytes of names, job ids and per-object records held
                             (1073741824; 3/4 of it per uid)
  --listen-backlog N         listen(2) backlog (128)
  --max-clients N            connections served at once (128)
  --request-timeout-ms N     close a connection that has not completed its request (10000)
  --idle-timeout-ms N        close a kept-alive connection idle this long (60000)
  --max-wait-ms N            longest a get --wait is parked (3600000)
  --max-waiters N            most get --wait requests parked at once (1024)
  --max-watchers N           most watch streams open at once (64; 3/4 of them per uid)
  --shadow PATH              mirror objects to a shadow process so they survive a restart
  --takeover                 take the socket and objects over from the broker on --socket
  --audit-peer               add the peer's pid, uid and gid to every audit record
  --audit-uid-rate BYTES     audit bytes a second each uid may have written; root and
                             the broker's uid are exempt; records past it are dropped,
                             counted and summed up in one "audit" record (1MiB)
  --audit-uid-burst BYTES    audit bytes a uid may have written at once (16 x the rate)
  --read-only-fds            hand consumers O_RDONLY descriptors
  --require-job              refuse requests without a job id
  --protect-names            only the job that first published a name may publish it again
  --keep-versions N          keep the N newest versions of each name (no limit)
  --evict superseded|none    over a limit, release superseded versions, least recently
                             fetched first, instead of refusing (none)
  --no-dedup                 keep a memfd per PUT even for identical contents (dedup on)
  --metrics ADDRESS          serve Prometheus metrics at /metrics (HOST:PORT or a path; off)
  --cluster URLS             share named objects with other hosts through NATS JetStream
                             (nats://HOST:PORT[,...]; off)
  --host-id ID               this host's id in the cluster (the host name)
  --cluster-sync             acknowledge a PUT only once the cluster committed it (off)
  -h, --help                 show this help

signals: SIGINT, SIGTERM stop; SIGUSR2 hands over to a new broker process (binary
upgrade; refused in a terminal: use --takeover from another one); SIGHUP stops a
broker in a terminal and is ignored otherwise.

example:
  memfdbus broker --socket /tmp/memfdbus.sock --max-total-bytes 8589934592
`,
  put: `usage: memfdbus put FILE [--name NAME | --content-addressed] [--job-id JOB]
                    [--allow-job JOB] [--socket PATH] [--json] [--timeout SECONDS]

Publish FILE (- for stdin) as a new object and print its id. The name defaults to the
part of FILE after the last /; a newer object with the same name replaces it for get.

options:
  --name NAME            publish under NAME (default: FILE's base name, stdin for -)
  --content-addressed    publish under the digest, sha256:<hex>
  --allow-job JOB        let job JOB read it too (needs --job-id or $MEMFDBUS_JOB_ID)
  --json                 print {id, size, digest, name}
  --local                keep the object on this host (a broker with --cluster shares
                         named objects by default)
${CLIENT_OPTIONS}

example:
  memfdbus put ./model.bin --name model.bin
`,
  get: `usage: memfdbus get OBJECT_ID OUT [--job-id JOB] [--socket PATH]
   or: memfdbus get --name NAME OUT [--wait SECONDS] [--json] [--timeout SECONDS]

Write an object's bytes to OUT (- for stdout). OUT appears only when complete: the
bytes go to a temporary file beside it, removed on an error or Ctrl-C.

options:
  --name NAME            the newest object named NAME (instead of OBJECT_ID)
  --wait SECONDS         with --name: wait up to SECONDS for NAME to be published
                         (fractions allowed; max: as long as the broker allows)
  --json                 print {id, size, digest, name, out} (not with OUT -)
${CLIENT_OPTIONS}

example:
  memfdbus get --name model.bin ./model.bin --wait 30
`,
  exec: `usage: memfdbus exec OBJECT_ID [OPTION...] -- COMMAND [ARG...]
   or: memfdbus exec --name NAME [OPTION...] -- COMMAND [ARG...]

Fetch an object and replace this process with COMMAND, which inherits the sealed
descriptor: MEMFDBUS_FD, MEMFDBUS_OBJECT_ID, MEMFDBUS_SIZE, MEMFDBUS_DIGEST and
MEMFDBUS_NAME describe it. Exits with COMMAND's status (127: not found, 126: not
executable).

options:
  --name NAME            the newest object named NAME (instead of OBJECT_ID)
  --wait SECONDS         with --name: wait up to SECONDS for NAME to be published
${CLIENT_OPTIONS}

example:
  memfdbus exec --name model.bin -- sh -c 'wc -c < /proc/self/fd/$MEMFDBUS_FD'
`,
  drop: `usage: memfdbus drop OBJECT_ID [--job-id JOB] [--socket PATH] [--json]
   or: memfdbus drop --name NAME [--job-id JOB] [--socket PATH] [--json]

Remove an object (by name: the newest) and print its id. Descriptors already handed
out stay valid.

options:
  --name NAME            the newest object named NAME (instead of OBJECT_ID)
  --json                 print {id, size}
${CLIENT_OPTIONS}

example:
  memfdbus drop --name model.bin
`,
  list: `usage: memfdbus list [--job-id JOB] [--socket PATH] [--json]

Print the objects this caller may read, one line each, exactly as the broker sends
the listing (id, owner job, allowed job, size, digest and name).

options:
  --json                 print an array of {id, owner, allowed, size, digest, name}
  --cluster              the cluster's names instead, latest version each, with the host
                         that published it (a broker started with --cluster)
${CLIENT_OPTIONS}

example:
  memfdbus list --job-id trainer
`,
  stat: `usage: memfdbus stat OBJECT_ID [--job-id JOB] [--socket PATH] [--json]
   or: memfdbus stat --name NAME [--wait SECONDS] [--json] [OPTION...]

Describe an object without fetching it: id, name, size, digest, seals, owner, allowed
job and creation time.

options:
  --name NAME            the newest object named NAME (instead of OBJECT_ID)
  --wait SECONDS         with --name: wait up to SECONDS for NAME to be published
  --json                 print one JSON object
${CLIENT_OPTIONS}

example:
  memfdbus stat --name model.bin --json
`,
  usage: `usage: memfdbus usage [--job-id JOB] [--socket PATH] [--json]

Show what the broker, each job and each uid hold (objects, and bytes charged: identical
contents count once) next to their limits (- when there is none). With a job id, only
that job; without, every job. Uids: your own, or every uid for root and the broker's uid.

options:
  --json                 print one JSON object {scope, broker, jobs, uids}
${CLIENT_OPTIONS}

example:
  memfdbus usage --job-id trainer
`,
  capture: `usage: memfdbus capture --name NAME [--allow-job JOB] [--always] [--json]
                        [OPTION...] -- COMMAND [ARG...]

Run COMMAND with its stdout in a new memfd and publish that memfd as NAME, only if
COMMAND exits 0 (--always: whatever its status). Exits with COMMAND's status (128+N
if signal N killed it; 127: not found, 126: not executable).

options:
  --name NAME            publish under NAME (required)
  --allow-job JOB        let job JOB read it too (needs --job-id or $MEMFDBUS_JOB_ID)
  --always               publish even when COMMAND fails
  --json                 print {id, size, digest, name}
${CLIENT_OPTIONS}

example:
  memfdbus capture --name report.csv -- ./make-report --csv
`,
  shadow: `usage: memfdbus shadow --socket PATH

Hold the objects of a broker started with --shadow PATH, so they survive its restart
or crash. A broker starts one itself when none runs. SIGTERM or SIGINT stops it and
removes PATH.

options:
  --socket PATH          the shadow's socket (required)
  -h, --help             show this help

example:
  memfdbus shadow --socket /tmp/memfdbus.shadow
`,
  watch: `usage: memfdbus watch [--name NAME | --prefix PREFIX] [--json] [--once]
                      [OPTION...]

Print one line per event the broker announces (publish, drop, release, evict) until
interrupted: time, kind, id, size, digest, missed count and name. Without --name or
--prefix, every name this job may list. A watcher that falls behind gets a "missed"
event with a count instead of the events it lost.

options:
  --name NAME            only events of NAME
  --prefix PREFIX        only events of names starting with PREFIX
  --json                 one JSON object per line
  --once                 exit after the first event
${CLIENT_OPTIONS}

example:
  memfdbus watch --prefix model/ --json
`,
  help: `usage: memfdbus help [COMMAND]

Print the usage of all commands, or the help of COMMAND.

example:
  memfdbus help get
`,
};
