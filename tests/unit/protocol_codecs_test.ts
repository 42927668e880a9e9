import { assertEquals, ok, throws } from "../support/assert.ts";
import { fromBinary, fromUtf8, toBinary, utf8, utf8Binary } from "../../src/protocol/bytes.ts";
import { ProtocolError } from "../../src/errors.ts";
import { formatListLine, type ListLineFields, parseList } from "../../src/protocol/list.ts";
import { formatStat, parseStat, type StatFields } from "../../src/protocol/stat.ts";
import { jsonString } from "../../src/protocol/json.ts";
import { type FdProblem, fdRejectionText } from "../../src/protocol/fd_problem.ts";
import {
  addExtFlags,
  decodeHeader,
  encodeHeader,
  EXT_MARK,
  Flag,
  HEADER_SIZE,
  Off,
  Text,
} from "../../src/protocol/wire.ts";

// The formats as the broker built them inline before they moved to src/protocol/ (kept here,
// verbatim, as the reference the codecs must match byte for byte).
function oldListLine(obj: ListLineFields): string {
  return `${obj.id}\towner=${obj.owner ?? "-"}\tallowed=${
    obj.allowed ?? "-"
  }\t${obj.size}\t${obj.digest}\t${obj.name}\n`;
}
function oldStat(obj: StatFields): string {
  const seals = obj.seals;
  return `{"id":${obj.id},"name":${jsonString(obj.name)},"size":${obj.size},` +
    `"digest":${jsonString(obj.digest)},"owner":${jsonString(obj.owner)},` +
    `"allowed":${jsonString(obj.allowed)},"created_ns":${obj.createdNs},` +
    `"seals":${seals < 0 ? "null" : seals}}`;
}

const DIGEST = "sha256:" + "0123456789abcdef".repeat(4);
const EVERY_BYTE = toBinary(Uint8Array.from({ length: 255 }, (_, i) => i + 1));

/** Binary-string names a hostile publisher could choose (no NUL: the broker refuses those). */
const HOSTILE_NAMES = [
  "a",
  "with\ttabs\tinside",
  'quote"and\\backslash',
  "\x01\x1f\x7f control",
  "line\nbreak\r",
  utf8Binary("ünïcødé ☃ 😀"),
  EVERY_BYTE,
  "owner=x\tallowed=y",
  '"created_ns":5,"seals":1',
];

function sample(name: string, i: number): ListLineFields & StatFields {
  return {
    id: i + 1,
    name,
    size: i * 4096,
    digest: DIGEST,
    owner: i % 2 === 0 ? null : utf8Binary(`job-${i}`),
    allowed: i % 3 === 0 ? null : name.slice(0, 5),
    createdNs: 1_760_000_000_123_456_789n + BigInt(i),
    seals: i % 4 === 0 ? -22 : 15,
  };
}

Deno.test("formatListLine writes the same bytes as the broker's former inline LIST line", () => {
  HOSTILE_NAMES.forEach((name, i) => {
    const o = sample(name, i);
    assertEquals(fromBinary(formatListLine(o)), fromBinary(oldListLine(o)));
  });
  assertEquals(
    formatListLine({ id: 7, owner: "t", allowed: null, size: 1024, digest: DIGEST, name: "m" }),
    `7\towner=t\tallowed=-\t1024\t${DIGEST}\tm\n`,
  );
  assertEquals(
    formatListLine({
      id: 0xffffffffffffffffn,
      owner: null,
      allowed: null,
      size: 0n,
      digest: DIGEST,
      name: "x",
    }),
    `18446744073709551615\towner=-\tallowed=-\t0\t${DIGEST}\tx\n`,
  );
});

Deno.test("parseList reads back what formatListLine wrote, names with tabs included", () => {
  const names = ["plain", "with\ttabs\tinside", "ünïcødé ☃", 'q"b\\', "owner=x\tallowed=y"];
  // Job ids holding a tab or newline would make a line ambiguous (as in the C format); these
  // have none.
  const objects = names.map((n, i) => ({
    ...sample(utf8Binary(n), i),
    id: BigInt(i + 1),
    allowed: i % 3 === 0 ? null : utf8Binary(`reader-ü-${i}`),
  }));
  const text = fromUtf8(fromBinary(objects.map(formatListLine).join("")));
  assertEquals(
    parseList(text),
    objects.map((o, i) => ({
      id: o.id,
      owner: o.owner === null ? null : fromUtf8(fromBinary(o.owner)),
      allowed: o.allowed === null ? null : fromUtf8(fromBinary(o.allowed)),
      size: Number(o.size),
      digest: DIGEST,
      name: names[i],
    })),
  );
  assertEquals(parseList(""), []);
  assertEquals(parseList("\n\n"), []);
});

Deno.test("parseList rejects malformed lines with ProtocolError naming the line", () => {
  const bad = [
    "1\towner=-\tallowed=-\t5\tsha256:x", // five columns
    "\t\t\t\t\t", // six empty columns
    "abc\towner=-\tallowed=-\t5\td\tn",
    "-1\towner=-\tallowed=-\t5\td\tn",
    "0x10\towner=-\tallowed=-\t5\td\tn",
    "18446744073709551616\towner=-\tallowed=-\t5\td\tn", // 2^64
    "1\towner=-\tallowed=-\t1e3\td\tn",
    "1\towner=-\tallowed=-\t9007199254740993\td\tn", // beyond 2^53
    "1\towner=-\tallowed=-\t\td\tn",
    " 1\towner=-\tallowed=-\t5\td\tn",
  ];
  for (const line of bad) {
    throws(
      () => parseList(`1\towner=-\tallowed=-\t5\t${DIGEST}\tok\n${line}\n`),
      (e: unknown) => e instanceof ProtocolError && e.message === `Malformed list line "${line}"`,
      line,
    );
  }
  // The largest id and size that fit are accepted.
  const [e] = parseList(`18446744073709551615\towner=-\tallowed=-\t9007199254740991\td\tn\n`);
  assertEquals([e?.id, e?.size], [0xffffffffffffffffn, Number.MAX_SAFE_INTEGER]);
});

Deno.test("formatStat writes the same bytes as the broker's former inline STAT body", () => {
  HOSTILE_NAMES.forEach((name, i) => {
    const o = sample(name, i);
    assertEquals(fromBinary(formatStat(o)), fromBinary(oldStat(o)));
  });
  assertEquals(
    formatStat({
      id: 3,
      name: 'a"\n',
      size: 5,
      digest: DIGEST,
      owner: null,
      allowed: "b",
      createdNs: 42n,
      seals: -1,
    }),
    `{"id":3,"name":"a\\"\\n","size":5,"digest":"${DIGEST}","owner":null,"allowed":"b",` +
      `"created_ns":42,"seals":null}`,
  );
});

Deno.test("parseStat reads back what formatStat wrote, created_ns with every digit", () => {
  const names = ["plain", 'q"b\\', "tab\there", "ünïcødé ☃", '"created_ns":5,"seals":1'];
  names.forEach((n, i) => {
    const o = sample(utf8Binary(n), i);
    const parsed = parseStat(fromUtf8(fromBinary(formatStat(o))));
    assertEquals(parsed, {
      name: n,
      digest: DIGEST,
      owner: o.owner === null ? null : fromUtf8(fromBinary(o.owner)),
      allowed: o.allowed === null ? null : fromUtf8(fromBinary(o.allowed)),
      createdNs: o.createdNs,
      seals: o.seals < 0 ? null : o.seals,
      shared: null,
      ownerUsage: null,
      origin: null,
    });
  });
  // The extension keys after the C-compatible ones: sharing and the owner's usage.
  const ext = formatStat({
    ...sample("x", 0),
    seals: 15,
    shared: true,
    ownerUsage: { objects: 2, bytes: 7 },
  });
  ok(ext.endsWith(`"seals":15,"shared":true,"owner_objects":2,"owner_bytes":7}`), ext);
  const back = parseStat(ext);
  assertEquals([back.shared, back.ownerUsage], [true, { objects: 2, bytes: 7 }]);
  // A pulled object's body carries its origin after the seals.
  const pulled = formatStat({ ...sample("m", 0), origin: { host: "gpu-7", id: 12, revision: 40 } });
  ok(pulled.endsWith(`,"origin_host":"gpu-7","origin_id":12,"origin_revision":40}`), pulled);
  assertEquals(parseStat(pulled).origin, { host: "gpu-7", id: 12, revision: 40 });
  const big = parseStat(`{"name":"n","digest":"d","created_ns":18446744073709551615}`);
  assertEquals(big.createdNs, 18446744073709551615n);
  assertEquals([big.owner, big.allowed, big.seals], [null, null, null]);
});

Deno.test("parseStat rejects what is not a STAT body with ProtocolError", () => {
  const bad = [
    "",
    "{",
    "null",
    "[]",
    '"name"',
    "42",
    '{"digest":"d"}',
    '{"name":1,"digest":"d"}',
    '{"name":"n","digest":null}',
    '{"name":"n","digest":"d","owner":5}',
    '{"name":"n","digest":"d","allowed":{}}',
    '{"name":"n","digest":"d"} trailing',
  ];
  for (const text of bad) {
    throws(
      () => parseStat(text),
      (e: unknown) =>
        e instanceof ProtocolError && e.message === "broker sent an invalid stat reply",
      text,
    );
  }
});

Deno.test("parseStat reads odd created_ns and seals values as unknown", () => {
  const cases: [string, bigint | null, number | null][] = [
    ['"created_ns":1.5,"seals":1.5', null, null],
    ['"created_ns":-3,"seals":-1', null, null],
    ['"created_ns":"12","seals":"15"', null, null],
    ['"created_ns":1e3,"seals":true', null, null],
    ['"created_ns":0,"seals":0', 0n, 0],
  ];
  for (const [fields, created, seals] of cases) {
    const st = parseStat(`{"name":"n","digest":"d",${fields}}`);
    assertEquals([st.createdNs, st.seals], [created, seals], fields);
  }
  // A created_ns inside a nested value is not the object's.
  const nested = parseStat('{"name":"n","digest":"d","x":{"created_ns":7}}');
  assertEquals(nested.createdNs, null);
});

Deno.test("addExtFlags sets bits in the reserved field at Off.reserved and keeps the rest", () => {
  const h = encodeHeader({ cmd: 2, objectId: 9n, reserved: (EXT_MARK | Flag.WAIT) >>> 0 });
  const before = h.slice();
  addExtFlags(h, Flag.KEEP_ALIVE);
  const v = new DataView(h.buffer);
  assertEquals(v.getUint32(Off.reserved, true), (EXT_MARK | Flag.WAIT | Flag.KEEP_ALIVE) >>> 0);
  assertEquals(h.subarray(0, Off.reserved), before.subarray(0, Off.reserved));
  assertEquals(Off.reserved + 4, HEADER_SIZE);
  // Arbitrary bytes without the marker carry no flags: they are replaced, not merged.
  const g = encodeHeader({ reserved: 0x12345678 });
  addExtFlags(g, Flag.KEEP_ALIVE);
  assertEquals(decodeHeader(g).reserved, (EXT_MARK | Flag.KEEP_ALIVE) >>> 0);
  // Works on a header inside a larger buffer.
  const wire = new Uint8Array(8 + HEADER_SIZE + 3);
  encodeHeader({ cmd: 3 }, wire.subarray(8));
  addExtFlags(wire.subarray(8), Flag.KEEP_ALIVE);
  assertEquals(decodeHeader(wire.subarray(8)).reserved, (EXT_MARK | Flag.KEEP_ALIVE) >>> 0);
  assertEquals([...wire.subarray(0, 8), ...wire.subarray(8 + HEADER_SIZE)], [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("fdRejectionText words each problem with the C broker's texts", () => {
  const describe = (n: number): string => `E#${n}`;
  const cases: [FdProblem, string][] = [
    [{ kind: "bad-fd" }, "missing memfd descriptor"],
    [{ kind: "fstat", errno: 5 }, "fstat failed: E#5"],
    [{ kind: "not-regular" }, "descriptor is not a regular memfd-like file"],
    [{ kind: "size", actual: 4n }, "size mismatch: header=5 fd=4"],
    [{ kind: "get-seals", errno: 22 }, "F_GET_SEALS failed: E#22"],
    [{ kind: "seals", seals: 0 }, "fd is not fully immutable-sealed"],
  ];
  assertEquals(cases.map(([p]) => fdRejectionText(p, 5n, describe)), cases.map(([, t]) => t));
  assertEquals(
    [Text.missingFd, Text.notRegular, Text.notSealed],
    [cases[0]?.[1], cases[2]?.[1], cases[5]?.[1]],
  );
});

Deno.test("the digest verification texts stay those of the C broker", () => {
  assertEquals(
    [Text.digestAlloc, Text.digestShortRead, Text.shuttingDown],
    [
      "digest verification allocation failed",
      "digest verification short read",
      "broker is shutting down",
    ],
  );
});

Deno.test("mod.ts and the ./protocol entry export exactly the documented names", async () => {
  const main = Object.keys(await import("../../mod.ts")).sort();
  assertEquals(main, [
    "Broker",
    "BrokerError",
    "BrokerIdentityError",
    "BusObject",
    "Client",
    "ConnectError",
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT_MS",
    "DigestBuilder",
    "ErrnoError",
    "FileDescriptor",
    "MEMFD_NAME_MAX",
    "Memfd",
    "OPEN_POLICY",
    "PeerUidError",
    "ProtocolError",
    "ReadOnlyMapping",
    "Seal",
    "ShadowBusyError",
    "SocketPathError",
    "Status",
    "TimeoutError",
    "UnsafePathError",
    "UnsupportedError",
    "UsageError",
    "Watch",
    "checkSocketPath",
    "defaultBrokerOptions",
    "defaultSocket",
    "describeFdProblem",
    "digestBytes",
    "digestFd",
    "digestFdRead",
    "digestObjectFd",
    "getSeals",
    "inspectSealedFd",
    "isFdProblem",
    "jobIdFromEnv",
    "parseBrokerArgs",
    "reservedText",
    "unlistedJobsRule",
  ]);
  const protocol = Object.keys(await import("../../src/protocol/mod.ts")).sort();
  assertEquals(protocol, [
    "Cmd",
    "DIGEST_LEN",
    "DIGEST_PREFIX",
    "EXT_MARK",
    "Flag",
    "HEADER_SIZE",
    "JOB_MAX",
    "MAGIC",
    "NAME_HARD_MAX",
    "Off",
    "Status",
    "Text",
    "VERSION",
    "addExtFlags",
    "decodeHeader",
    "emptyHeader",
    "encodeHeader",
    "extFlags",
    "formatDigest",
    "formatListLine",
    "formatStat",
    "formatUsage",
    "isPrintableName",
    "isValidDigest",
    "isValidHeader",
    "listLineLength",
    "nameProblem",
    "parseList",
    "parseStat",
    "parseUsage",
    "withExt",
  ]);
  ok(!main.some((n) => protocol.includes(n) && n !== "Status"));
});

Deno.test("utf8 and binary strings agree on the codecs' inputs", () => {
  // Guard for the tests above: a UTF-8 name as a binary string survives the round trip.
  const n = "ünïcødé ☃ 😀";
  assertEquals(fromUtf8(fromBinary(utf8Binary(n))), n);
  assertEquals(utf8(n), fromBinary(utf8Binary(n)));
});
