/**
 * The assertions of the suite, from one place: `node:assert/strict` (JSR is unreachable, so no
 * `@std/assert`). `assertEquals` is `deepStrictEqual`.
 *
 * @module
 */

export { deepStrictEqual as assertEquals, ok, rejects, throws } from "node:assert/strict";
