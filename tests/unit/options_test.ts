import { OPEN_POLICY } from "../../src/core/policy.ts";
import { NO_QUOTAS } from "../../src/core/governance.ts";
import { assertEquals, ok, throws } from "../support/assert.ts";
import { UsageError } from "../../src/errors.ts";
import {
  type BrokerOptions,
  DEFAULT_SOCKET,
  defaultBrokerOptions,
  parseBrokerArgs,
  parseMetricsAddress,
  parsePositive,
} from "../../src/core/options.ts";

const U64_MAX = 18446744073709551615n;

/** Assert that parsing `args` fails with a UsageError whose message is exactly `message`. */
function rejectsWith(args: readonly string[], message: string): void {
  throws(() => parseBrokerArgs(args), (e: unknown) => {
    ok(e instanceof UsageError, `expected UsageError, got ${String(e)}`);
    assertEquals(e.message, message);
    assertEquals(e.name, "UsageError");
    return true;
  });
}

Deno.test("defaultBrokerOptions equals the C broker defaults of PROTOCOL.md 3.1", () => {
  const d = defaultBrokerOptions();
  assertEquals(DEFAULT_SOCKET, "/tmp/memfdbus.sock");
  assertEquals(d.socket, "/tmp/memfdbus.sock");
  assertEquals(d.maxNameBytes, 65536);
  assertEquals(d.maxObjects, 18446744073709551615n);
  assertEquals(d.maxRequestBytes, 4294967295);
  assertEquals(d.maxListBytes, 4294967295);
  assertEquals(d.maxTotalBytes, 18446744073709551615n);
  assertEquals(d.listenBacklog, 128);
  assertEquals(d.maxClients, 128);
});

Deno.test("defaultBrokerOptions adds the request and idle timeouts of this broker", () => {
  const d = defaultBrokerOptions();
  assertEquals([d.requestTimeoutMs, d.idleTimeoutMs], [10_000, 60_000]);
  assertEquals(Object.keys(d).sort(), [
    "auditPeer",
    "auditUidBurst",
    "auditUidRate",
    "cluster",
    "dedup",
    "evict",
    "idleTimeoutMs",
    "keepVersions",
    "listenBacklog",
    "maxClients",
    "maxListBytes",
    "maxMetadataBytes",
    "maxNameBytes",
    "maxObjects",
    "maxRequestBytes",
    "maxTotalBytes",
    "maxWaitMs",
    "maxWaiters",
    "maxWatchers",
    "metrics",
    "peerLimits",
    "pins",
    "policy",
    "quotas",
    "readOnlyFds",
    "requestTimeoutMs",
    "retention",
    "shadow",
    "socket",
    "socketMode",
  ]);
});

Deno.test("defaultBrokerOptions returns a fresh object each time", () => {
  const a = defaultBrokerOptions();
  a.maxClients = 1;
  assertEquals(defaultBrokerOptions().maxClients, 128);
});

Deno.test("parseBrokerArgs with no arguments gives the defaults", () => {
  assertEquals(parseBrokerArgs([]), defaultBrokerOptions());
});

Deno.test("parseBrokerArgs sets every flag to its typed value", () => {
  const o = parseBrokerArgs([
    "--socket",
    "/tmp/x.sock",
    "--max-name-bytes",
    "10",
    "--max-objects",
    "11",
    "--max-request-bytes",
    "12",
    "--max-list-bytes",
    "13",
    "--max-total-bytes",
    "14",
    "--listen-backlog",
    "15",
    "--max-clients",
    "16",
    "--request-timeout-ms",
    "17",
    "--idle-timeout-ms",
    "18",
    "--max-watchers",
    "19",
    "--max-metadata-bytes",
    "20",
  ]);
  const want: BrokerOptions = {
    socket: "/tmp/x.sock",
    maxNameBytes: 10,
    maxObjects: 11n,
    maxRequestBytes: 12,
    maxListBytes: 13,
    maxTotalBytes: 14n,
    maxMetadataBytes: 20n,
    listenBacklog: 15,
    maxClients: 16,
    requestTimeoutMs: 17,
    idleTimeoutMs: 18,
    maxWaitMs: 3_600_000,
    maxWaiters: 1024,
    maxWatchers: 19,
    readOnlyFds: false,
    socketMode: 0o600,
    auditPeer: false,
    auditUidRate: 1048576,
    auditUidBurst: null,
    policy: OPEN_POLICY,
    shadow: null,
    keepVersions: null,
    retention: [],
    pins: [],
    quotas: NO_QUOTAS,
    peerLimits: {
      connections: null,
      waits: null,
      watchers: null,
      replyBytes: null,
      replyFds: null,
      metadataBytes: null,
    },
    evict: "none",
    dedup: true,
    metrics: null,
    cluster: null,
  };
  assertEquals(o, want);
});

Deno.test("parseBrokerArgs lets the last of a repeated flag win", () => {
  const o = parseBrokerArgs([
    "--max-objects",
    "5",
    "--socket",
    "/a",
    "--max-objects",
    "7",
    "--socket",
    "/b",
  ]);
  assertEquals([o.maxObjects, o.socket], [7n, "/b"]);
});

Deno.test("parseBrokerArgs takes the next argument as the value even when it looks like a flag", () => {
  assertEquals(parseBrokerArgs(["--socket", "--max-objects"]).socket, "--max-objects");
  assertEquals(parseBrokerArgs(["--socket", ""]).socket, "");
});

Deno.test("parseBrokerArgs starts from the given base and does not modify it", () => {
  const base = { ...defaultBrokerOptions(), maxClients: 3, socket: "/base" };
  const o = parseBrokerArgs(["--max-objects", "9"], base);
  assertEquals([o.maxClients, o.socket, o.maxObjects], [3, "/base", 9n]);
  assertEquals(base.maxObjects, U64_MAX);
  ok(o !== base);
});

Deno.test("parseBrokerArgs reports a flag without its value as missing value for --x", () => {
  rejectsWith(["--max-objects"], "missing value for --max-objects");
  rejectsWith(["--socket"], "missing value for --socket");
  rejectsWith(["--max-clients", "4", "--listen-backlog"], "missing value for --listen-backlog");
});

Deno.test("parseBrokerArgs reports unknown flags and positionals as unexpected argument: X", () => {
  rejectsWith(["--bogus", "1"], "unexpected argument: --bogus");
  rejectsWith(["foo"], "unexpected argument: foo");
  rejectsWith(["--help"], "unexpected argument: --help");
  rejectsWith(["-h"], "unexpected argument: -h");
  rejectsWith([""], "unexpected argument: ");
  rejectsWith(["--max-objects=5"], "unexpected argument: --max-objects=5");
  rejectsWith(["--max-objects", "5", "extra"], "unexpected argument: extra");
});

Deno.test("parseBrokerArgs does not treat Object.prototype names as flags", () => {
  rejectsWith(["toString", "1"], "unexpected argument: toString");
  rejectsWith(["__proto__", "1"], "unexpected argument: __proto__");
  rejectsWith(["constructor", "1"], "unexpected argument: constructor");
});

Deno.test("parseBrokerArgs stops at the first bad argument", () => {
  rejectsWith(["--max-objects", "0", "--bogus"], "invalid --max-objects: 0");
  rejectsWith(["--bogus", "--max-objects", "0"], "unexpected argument: --bogus");
  // A bad value is fatal even if a later repetition would be fine.
  rejectsWith(["--max-objects", "0", "--max-objects", "5"], "invalid --max-objects: 0");
});

const NUMERIC_FLAGS = [
  "--max-name-bytes",
  "--max-objects",
  "--max-request-bytes",
  "--max-list-bytes",
  "--max-total-bytes",
  "--max-metadata-bytes",
  "--listen-backlog",
  "--max-clients",
];

Deno.test("every numeric flag rejects 0, -1, nope, a leading + and surrounding spaces", () => {
  for (const flag of NUMERIC_FLAGS) {
    for (const v of ["0", "-1", "nope", "+5", " 5", "5 ", "", "1e3", "0x10", "5.0", "00", "１"]) {
      rejectsWith([flag, v], `invalid ${flag}: ${v}`);
    }
  }
});

Deno.test("every numeric flag rejects a value past 2^64", () => {
  for (const flag of NUMERIC_FLAGS) {
    rejectsWith([flag, "18446744073709551616"], `invalid ${flag}: 18446744073709551616`);
    rejectsWith([flag, "99999999999999999999999"], `invalid ${flag}: 99999999999999999999999`);
  }
});

Deno.test("numeric flags accept leading zeros as plain digits", () => {
  assertEquals(parseBrokerArgs(["--max-name-bytes", "0065536"]).maxNameBytes, 65536);
  assertEquals(parseBrokerArgs(["--max-objects", "007"]).maxObjects, 7n);
});

Deno.test("--max-name-bytes accepts 1 and 65536 and rejects 65537", () => {
  assertEquals(parseBrokerArgs(["--max-name-bytes", "1"]).maxNameBytes, 1);
  assertEquals(parseBrokerArgs(["--max-name-bytes", "65536"]).maxNameBytes, 65536);
  rejectsWith(["--max-name-bytes", "65537"], "invalid --max-name-bytes: 65537");
});

Deno.test("--max-request-bytes and --max-list-bytes accept 4294967295 and reject 4294967296", () => {
  assertEquals(parseBrokerArgs(["--max-request-bytes", "4294967295"]).maxRequestBytes, 4294967295);
  rejectsWith(["--max-request-bytes", "4294967296"], "invalid --max-request-bytes: 4294967296");
  assertEquals(parseBrokerArgs(["--max-list-bytes", "4294967295"]).maxListBytes, 4294967295);
  rejectsWith(["--max-list-bytes", "4294967296"], "invalid --max-list-bytes: 4294967296");
});

Deno.test("--listen-backlog accepts 2147483647 and rejects 2147483648", () => {
  assertEquals(parseBrokerArgs(["--listen-backlog", "2147483647"]).listenBacklog, 2147483647);
  rejectsWith(["--listen-backlog", "2147483648"], "invalid --listen-backlog: 2147483648");
});

Deno.test("--max-objects and --max-total-bytes accept 18446744073709551615 exactly", () => {
  const o = parseBrokerArgs([
    "--max-objects",
    "18446744073709551615",
    "--max-total-bytes",
    "18446744073709551615",
  ]);
  assertEquals([o.maxObjects, o.maxTotalBytes], [U64_MAX, U64_MAX]);
  assertEquals(typeof o.maxObjects, "bigint");
  // 2^53 + 1 survives exactly as a bigint.
  assertEquals(
    parseBrokerArgs(["--max-total-bytes", "9007199254740993"]).maxTotalBytes,
    9007199254740993n,
  );
});

Deno.test("--max-metadata-bytes takes a plain byte count up to 2^64 - 1, 1 GiB by default", () => {
  assertEquals(defaultBrokerOptions().maxMetadataBytes, 1073741824n);
  assertEquals(parseBrokerArgs(["--max-metadata-bytes", "1"]).maxMetadataBytes, 1n);
  assertEquals(
    parseBrokerArgs(["--max-metadata-bytes", "18446744073709551615"]).maxMetadataBytes,
    U64_MAX,
  );
  // Flags take digits only, as every numeric flag of the C broker; units are for the config.
  rejectsWith(["--max-metadata-bytes", "1GiB"], "invalid --max-metadata-bytes: 1GiB");
});

Deno.test("--max-clients accepts any positive 64-bit value", () => {
  assertEquals(parseBrokerArgs(["--max-clients", "1"]).maxClients, 1);
  assertEquals(parseBrokerArgs(["--max-clients", "4294967296"]).maxClients, 4294967296);
  ok(parseBrokerArgs(["--max-clients", "18446744073709551615"]).maxClients > 1e19);
});

Deno.test("parsePositive returns the value as a bigint and words failures with the flag", () => {
  assertEquals(parsePositive("--x", "42", 100n), 42n);
  assertEquals(parsePositive("--x", "100", 100n), 100n);
  throws(() => parsePositive("--x", "101", 100n), {
    name: "UsageError",
    message: "invalid --x: 101",
  });
  throws(() => parsePositive("--y", "0", 100n), { name: "UsageError", message: "invalid --y: 0" });
});

Deno.test("governance flags: --keep-versions, --evict, --metrics and --no-dedup", () => {
  const o = parseBrokerArgs([
    "--keep-versions",
    "3",
    "--evict",
    "superseded",
    "--metrics",
    "127.0.0.1:9464",
    "--no-dedup",
  ]);
  assertEquals([o.keepVersions, o.evict, o.dedup], [3, "superseded", false]);
  assertEquals(o.metrics, { kind: "tcp", hostname: "127.0.0.1", port: 9464 });
  assertEquals(parseBrokerArgs(["--evict", "none"]).evict, "none");
  assertEquals(parseBrokerArgs(["--metrics", "/run/memfdbus/metrics.sock"]).metrics, {
    kind: "unix",
    path: "/run/memfdbus/metrics.sock",
  });
  rejectsWith(["--keep-versions", "0"], "invalid --keep-versions: 0");
  rejectsWith(["--keep-versions", "2147483648"], "invalid --keep-versions: 2147483648");
  rejectsWith(["--evict", "oldest"], "invalid --evict: oldest");
  rejectsWith(["--metrics", "9464"], "invalid --metrics: 9464");
  rejectsWith(["--metrics"], "missing value for --metrics");
});

Deno.test("parseMetricsAddress takes HOST:PORT or a socket path and nothing else", () => {
  assertEquals(parseMetricsAddress("localhost:1"), { kind: "tcp", hostname: "localhost", port: 1 });
  assertEquals(parseMetricsAddress("[::1]:9464"), { kind: "tcp", hostname: "::1", port: 9464 });
  assertEquals(parseMetricsAddress("./m.sock"), { kind: "unix", path: "./m.sock" });
  for (
    const bad of [
      "",
      "/",
      "127.0.0.1",
      "127.0.0.1:0",
      "127.0.0.1:65536",
      "256.0.0.1:80",
      "host:80",
      ":80",
      "1.2.3.4:80x",
    ]
  ) {
    assertEquals(parseMetricsAddress(bad), null, bad);
  }
});
