/**
 * The default origin policy: protection against cross-site WebSocket
 * hijacking, where a page on another site opens a WebSocket to this server
 * with the visitor's cookies (https://www.rfc-editor.org/rfc/rfc6455#section-10.2).
 */

/**
 * authorizeOrigin returns undefined when a request with this Origin may
 * connect, else why not. No Origin header means a non-browser client and is
 * allowed; a browser Origin must name the request's Host or match one of
 * `patterns` (globs with `*` and `?`, matched against the origin's host, or
 * against `scheme://host` when the pattern contains `://`).
 */
export function authorizeOrigin(origin: string | undefined, host: string | undefined, patterns: string[]): string | undefined {
  if (origin === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `Origin ${JSON.stringify(origin)} is not a URL`;
  }
  if (url.host === "") return `Origin ${JSON.stringify(origin)} has no host`;
  if (host !== undefined && url.host.toLowerCase() === host.toLowerCase()) return undefined;
  for (const pattern of patterns) {
    const subject = pattern.includes("://") ? `${url.protocol}//${url.host}` : url.host;
    if (globMatch(pattern.toLowerCase(), subject.toLowerCase())) return undefined;
  }
  return `Origin ${JSON.stringify(origin)} is not authorized for Host ${JSON.stringify(host ?? "")}`;
}

/**
 * globMatch matches `*` (any run of characters) and `?` (one character). It
 * backtracks only to the last star, so it runs in O(pattern × subject) time
 * whatever the input.
 */
export function globMatch(pattern: string, subject: string): boolean {
  let p = 0;
  let s = 0;
  let starP = -1;
  let starS = 0;
  while (s < subject.length) {
    const c = pattern[p];
    if (c === "*") {
      starP = p++;
      starS = s;
    } else if (c !== undefined && (c === "?" || c === subject[s])) {
      p++;
      s++;
    } else if (starP >= 0) {
      p = starP + 1;
      s = ++starS;
    } else {
      return false;
    }
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}
