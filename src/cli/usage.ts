/**
 * The usage texts of the CLI. The first block is byte for byte the C memfdbus usage; options
 * this implementation adds follow it.
 *
 * @module
 */

/** Full usage, printed by `--help` (stdout) and on a missing or unknown subcommand (stderr). */
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
  --policy FILE           identity policy (JSONC): bind job ids to uids/gids
  --socket-mode MODE      permissions of the socket file (0600)
  --request-timeout-ms N  close a connection that has not completed its request (10000)
  --idle-timeout-ms N     close a kept-alive connection idle this long (60000)
  --max-wait-ms N         longest a get --wait is parked by the broker (3600000)
  --max-waiters N         most get --wait requests parked at once (1024)
  --shadow PATH           mirror objects to a shadow process so they survive a restart
  --takeover              take the socket and objects over from the broker running on it
  --audit-peer            add the peer's pid, uid and gid to every audit record
  --read-only-fds         hand consumers O_RDONLY descriptors (C: O_RDWR, writes fail EPERM)
  --require-job           refuse requests without a job id
  --protect-names         only the job that first published a name may publish it again
  --cluster URLS          share named objects with other hosts through NATS JetStream
                          (nats://HOST:PORT[,...]; config key "cluster")
  --host-id ID            this host's id in the cluster (the host name)
  --cluster-sync          acknowledge a PUT only once the cluster committed it
commands beyond the C memfdbus:
  memfdbus stat OBJECT_ID [--job-id JOB] [--socket PATH] [--json]
  memfdbus stat --name NAME [--job-id JOB] [--socket PATH] [--json]
                [--wait[=SECONDS]]
  memfdbus capture --name NAME [--job-id JOB] [--allow-job JOB] [--socket PATH]
                   [--json] [--always] -- COMMAND [ARG...]
    stat: id, name, size, digest, seals, owner, allowed job and creation time
  memfdbus shadow --socket PATH
    shadow: hold the objects of a broker started with --shadow PATH (it starts
      one itself when none is running); stop it with SIGTERM
    capture: run COMMAND with its stdout in a new memfd, then publish that
      memfd; it publishes only if COMMAND exits 0 (--always: whatever its
      status) and exits with COMMAND's status (128+N if signal N killed it)
client options beyond the C memfdbus:
  --json            put, get, drop, list, stat, capture: print the result as
                    JSON; get cannot combine it with OUT -
  --wait[=SECONDS]  get, exec, stat by --name: wait for the name to be
                    published, up to SECONDS (fractions allowed) or, with no
                    value, as long as the broker allows
  --local           put: keep the object on this host (a broker with --cluster
                    shares named objects by default)
  --cluster         list: the cluster's names, latest version each, with the
                    host that published it
  put and get show a progress line on stderr for 64 MiB or more when stderr
  is a terminal
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
   or: memfdbus stat --name NAME [--job-id JOB] [--socket PATH] [--json] [--wait[=SECONDS]]`;

/** Two-line usage of `capture`. */
export const CAPTURE_USAGE =
  `usage: memfdbus capture --name NAME [--job-id JOB] [--allow-job JOB] [--socket PATH]
   [--json] [--always] -- COMMAND [ARG...]`;
