import { performance } from "node:perf_hooks";
import t from "tap";
import { authorizeOrigin, globMatch } from "../../src/server/accept.js";

t.test("globMatch", async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ["", "", true],
    ["", "a", false],
    ["a", "", false],
    ["*", "", true],
    ["*", "anything.at.all", true],
    ["**", "x", true],
    ["?", "", false],
    ["?", "a", true],
    ["?", "ab", false],
    ["example.com", "example.com", true],
    ["example.com", "example.co", false],
    ["example.com", "example.comm", false],
    ["*.example.com", "a.example.com", true],
    ["*.example.com", "a.b.example.com", true],
    ["*.example.com", "example.com", false],
    ["*.example.com", "evil-example.com", false],
    ["*.example.com", "a.example.com.evil.net", false],
    ["localhost:*", "localhost:8080", true],
    ["localhost:*", "localhost", false],
    ["localhost:????", "localhost:8080", true],
    ["localhost:????", "localhost:80", false],
    ["a*b*c", "abc", true],
    ["a*b*c", "aXXbYYc", true],
    ["a*b*c", "aXXbYY", false],
    ["a*b", "ab-b", true],
    ["*ab", "aab", true],
    ["a*a*a", "aa", false],
    ["https://*.example.com", "https://app.example.com", true],
    ["https://*.example.com", "http://app.example.com", false],
  ];
  for (const [pattern, subject, expected] of cases) {
    t.equal(globMatch(pattern, subject), expected, `${JSON.stringify(pattern)} vs ${JSON.stringify(subject)}`);
  }
});

t.test("globMatch on pathological patterns is fast", async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ["*a".repeat(100) + "b", "a".repeat(20000), false],
    ["*a".repeat(100), "a".repeat(20000), true],
    ["a*".repeat(50) + "?b", "a".repeat(10000) + "c", false],
    ["*?*?*?*?*?*?*?*?*?*?x", "y".repeat(20000), false],
  ];
  for (const [pattern, subject, expected] of cases) {
    const start = performance.now();
    const got = globMatch(pattern, subject);
    const ms = performance.now() - start;
    t.equal(got, expected, `${pattern.slice(0, 12)}…: result`);
    // O(pattern × subject) is ~2e6 steps; exponential backtracking would never finish
    t.ok(ms < 2000, `${pattern.slice(0, 12)}…: completed in ${ms.toFixed(1)} ms`);
  }
});

t.test("authorizeOrigin", async (t) => {
  const host = "example.com:8080";
  const allowed: Array<[string, string | undefined, string | undefined, string[]]> = [
    ["no Origin header", undefined, host, []],
    ["no Origin and no Host", undefined, undefined, []],
    ["same host and port", "http://example.com:8080", host, []],
    ["same host, different case", "https://EXAMPLE.com:8080", "Example.COM:8080", []],
    ["same host without port", "https://example.com", "example.com", []],
    ["pattern on host", "https://app.other.org", host, ["*.other.org"]],
    ["pattern on host, case-insensitive", "https://APP.Other.org", host, ["*.OTHER.org"]],
    ["pattern with port glob", "http://localhost:3000", host, ["localhost:*"]],
    ["pattern with scheme", "https://app.other.org", host, ["https://*.other.org"]],
    ["second pattern matches", "https://b.net", host, ["a.net", "b.net"]],
  ];
  for (const [name, origin, h, patterns] of allowed) t.equal(authorizeOrigin(origin, h, patterns), undefined, name);

  const refused: Array<[string, string | undefined, string | undefined, string[], RegExp]> = [
    ["other host", "https://evil.example", host, [], /not authorized for Host "example.com:8080"/],
    ["same host, other port", "http://example.com:9090", host, [], /not authorized/],
    ["no Host header", "https://example.com", undefined, [], /not authorized for Host ""/],
    ["null origin", "null", host, [], /is not a URL/],
    ["null origin even with a catch-all pattern", "null", host, ["*"], /is not a URL/],
    ["not a URL", "example.com", host, [], /not a URL|no host/],
    ["URL without host", "file:///etc/passwd", host, ["*"], /has no host/],
    ["pattern with scheme, other scheme", "http://app.other.org", host, ["https://*.other.org"], /not authorized/],
    ["pattern without port does not match a port", "https://app.other.org:444", host, ["*.other.org"], /not authorized/],
    ["suffix trick", "https://other.org.evil.net", host, ["*.other.org"], /not authorized/],
  ];
  for (const [name, origin, h, patterns, message] of refused) t.match(authorizeOrigin(origin, h, patterns), message, name);
});
