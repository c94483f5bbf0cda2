import * as net from "node:net";
import type { AddressInfo } from "node:net";
import t from "tap";
import { type DialTarget, noProxyMatches, proxyFor } from "../../src/client/proxy.js";
import { type Conn, dial, HandshakeError, serve } from "../../src/index.js";
import { makeCert } from "../helpers/cert.js";
import { startProxy } from "../helpers/connect-proxy.js";
import { echo, freePort, roundTrip, startServer } from "../helpers/peers.js";

const cert = makeCert();

async function startTlsEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const conns: Conn[] = [];
  const server = await serve({ host: "127.0.0.1", tls: { key: cert.key, cert: cert.cert } }, (conn) => {
    conns.push(conn);
    return echo(conn);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const c of conns) c.closeNow();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

t.test("ws through a proxy without credentials", async (t) => {
  const srv = await startServer({}, (c) => void echo(c));
  const proxy = await startProxy();
  t.teardown(() => Promise.all([srv.close(), proxy.close()]));
  const received = srv.nextConn();
  // ws.test does not resolve: only the proxy can reach it.
  const conn = await dial(`ws://ws.test:${srv.port}/chat`, { proxy: proxy.url });
  await received;
  t.equal(await roundTrip(conn, "hello via proxy"), "hello via proxy");
  t.same(proxy.seen, [{ target: `ws.test:${srv.port}`, proxyAuthorization: undefined }]);
  t.match(proxy.upstreamBytes().toString("latin1"), `Host: ws.test:${srv.port}`);
});

t.test("ws through a proxy with basic credentials from the URL", async (t) => {
  const srv = await startServer({}, (c) => void echo(c));
  const proxy = await startProxy({ auth: "alice:p@ss word" });
  t.teardown(() => Promise.all([srv.close(), proxy.close()]));
  const conn = await dial(`ws://ws.test:${srv.port}/`, { proxy: `http://alice:p%40ss%20word@127.0.0.1:${proxy.port}` });
  t.equal(await roundTrip(conn, "authorized"), "authorized");
  t.equal(proxy.seen[0]?.proxyAuthorization, `Basic ${Buffer.from("alice:p@ss word").toString("base64")}`);
});

t.test("407 from the proxy names the cause", async (t) => {
  const proxy = await startProxy({ auth: "alice:secret" });
  t.teardown(() => proxy.close());
  const cases = [
    { name: "no credentials", url: proxy.url, hint: /put user:password in the proxy URL/ },
    { name: "wrong credentials", url: `http://alice:wrong@127.0.0.1:${proxy.port}`, hint: /credentials in the proxy URL were rejected/ },
  ];
  for (const c of cases) {
    const err = await dial("ws://ws.test:1/", { proxy: c.url }).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof HandshakeError, c.name);
    t.equal((err as HandshakeError).status, 407, c.name);
    t.match((err as Error).message, /proxy 127\.0\.0\.1:\d+ refused CONNECT to ws\.test:1 with 407 Proxy Authentication Required/, c.name);
    t.match((err as Error).message, c.hint, c.name);
    t.notMatch((err as Error).message, /wrong|secret/, `${c.name}: no credentials in the message`);
  }
});

t.test("wss through a proxy: TLS runs end to end", async (t) => {
  const srv = await startTlsEcho();
  const proxy = await startProxy({ auth: "u:p" });
  t.teardown(() => Promise.all([srv.close(), proxy.close()]));
  const conn = await dial(`wss://ws.test:${srv.port}/secure`, { proxy: `http://u:p@127.0.0.1:${proxy.port}`, tls: { ca: cert.cert } });
  t.equal(await roundTrip(conn, "secret payload"), "secret payload");
  t.equal(proxy.seen[0]?.target, `ws.test:${srv.port}`);
  const carried = proxy.upstreamBytes().toString("latin1");
  t.ok(carried.length > 0, "the proxy carried the bytes");
  t.notMatch(carried, /GET \/secure|Upgrade: websocket/, "the proxy never saw the handshake in clear");
  t.equal(carried.charCodeAt(0), 0x16, "the first byte through the tunnel is a TLS handshake record");
});

t.test("wss through a proxy still verifies the server certificate", async (t) => {
  const srv = await startTlsEcho();
  const proxy = await startProxy();
  t.teardown(() => Promise.all([srv.close(), proxy.close()]));
  const err = await dial(`wss://ws.test:${srv.port}/`, { proxy: proxy.url }).then(() => undefined, (e: unknown) => e);
  t.match(err, { message: /^failed to dial: .*self[- ]signed/i, code: "DEPTH_ZERO_SELF_SIGNED_CERT" });
});

t.test("proxy refusals and failures reject with a clear error", async (t) => {
  const refusing = await startProxy({ refuse: 403 });
  const tunnelling = await startProxy();
  const closedPort = await freePort();
  t.teardown(() => Promise.all([refusing.close(), tunnelling.close()]));

  const refused = await dial("ws://ws.test:80/", { proxy: refusing.url }).catch((e: unknown) => e);
  t.match(refused, { status: 403, message: /proxy 127\.0\.0\.1:\d+ refused CONNECT to ws\.test:80 with 403 Forbidden/ });

  const badGateway = await dial(`ws://ws.test:${closedPort}/`, { proxy: tunnelling.url }).catch((e: unknown) => e);
  t.match(badGateway, { status: 502, message: /with 502 Bad Gateway/ }, "the proxy cannot reach the target");

  const down = await dial("ws://ws.test:80/", { proxy: `http://127.0.0.1:${closedPort}` }).catch((e: unknown) => e);
  t.match(down, { code: "ECONNREFUSED", message: new RegExp(`^failed to dial: proxy 127\\.0\\.0\\.1:${closedPort}: connect ECONNREFUSED`) });

  const scheme = await dial("ws://ws.test:80/", { proxy: "socks5://127.0.0.1:1080" }).catch((e: unknown) => e);
  t.match(scheme, { code: "WS_ERR_INVALID_URL", message: /unsupported proxy scheme socks5:/ });

  const unix = await dial("ws+unix:///tmp/x.sock:/", { proxy: tunnelling.url }).catch((e: unknown) => e);
  t.match(unix, { code: "WS_ERR_INVALID_URL", message: /a proxy cannot reach a unix socket/ });
});

t.test("a proxy that never answers times out within handshakeTimeout", async (t) => {
  const proxy = await startProxy({ silent: true });
  t.teardown(() => proxy.close());
  const started = performance.now();
  const err = await dial("ws://ws.test:80/", { proxy: proxy.url, handshakeTimeout: 200 }).catch((e: unknown) => e);
  const elapsed = performance.now() - started;
  t.match(err, { code: "WS_ERR_HANDSHAKE_TIMEOUT", message: /proxy 127\.0\.0\.1:\d+ did not answer CONNECT within 200 ms/ });
  t.ok(elapsed >= 190 && elapsed < 2000, `timed out after ${elapsed.toFixed(0)} ms`);
});

t.test("an abort while the proxy is silent rejects with the signal's reason", async (t) => {
  const proxy = await startProxy({ silent: true });
  t.teardown(() => proxy.close());
  const controller = new AbortController();
  const reason = new Error("user gave up");
  const connected = proxy.nextConnect();
  const pending = dial("ws://ws.test:80/", { proxy: proxy.url, signal: controller.signal });
  await connected;
  controller.abort(reason);
  t.equal(await pending.catch((e: unknown) => e), reason);
});

t.test("handshakeTimeout bounds the CONNECT and the handshake together", async (t) => {
  // The target accepts the tunnel but never answers the upgrade.
  const mute = net.createServer((s) => s.on("error", () => undefined));
  const held: net.Socket[] = [];
  mute.on("connection", (s) => held.push(s));
  await new Promise<void>((resolve) => mute.listen(0, "127.0.0.1", resolve));
  const proxy = await startProxy();
  t.teardown(async () => {
    for (const s of held) s.destroy();
    await proxy.close();
    await new Promise<void>((resolve) => mute.close(() => resolve()));
  });
  const started = performance.now();
  const err = await dial(`ws://ws.test:${(mute.address() as AddressInfo).port}/`, { proxy: proxy.url, handshakeTimeout: 300 }).catch((e: unknown) => e);
  const elapsed = performance.now() - started;
  t.match(err, { code: "WS_ERR_HANDSHAKE_TIMEOUT", message: /^failed to dial: handshake not done within \d+ ms/ });
  t.ok(elapsed < 600, `one deadline for both steps: ${elapsed.toFixed(0)} ms`);
});

t.test('proxy: "env" reads the environment', async (t) => {
  const srv = await startServer({}, (c) => void echo(c));
  const proxy = await startProxy();
  const saved = { ...process.env };
  t.teardown(async () => {
    process.env = saved;
    await Promise.all([srv.close(), proxy.close()]);
  });
  delete process.env["http_proxy"];
  delete process.env["no_proxy"];
  delete process.env["NO_PROXY"];
  process.env["HTTP_PROXY"] = `127.0.0.1:${proxy.port}`; // no scheme: http:// is assumed
  const viaProxy = await dial(`ws://ws.test:${srv.port}/`, { proxy: "env" });
  t.equal(await roundTrip(viaProxy, "env"), "env");
  t.equal(proxy.seen.length, 1, "the proxy from HTTP_PROXY carried the connection");

  process.env["NO_PROXY"] = "localhost, 127.0.0.0/8";
  const direct = await dial(`ws://127.0.0.1:${srv.port}/`, { proxy: "env" });
  t.equal(await roundTrip(direct, "direct"), "direct");
  t.equal(proxy.seen.length, 1, "NO_PROXY bypassed the proxy");

  delete process.env["NO_PROXY"];
  const ignored = await dial(`ws://127.0.0.1:${srv.port}/`);
  t.equal(await roundTrip(ignored, "no opt-in"), "no opt-in");
  t.equal(proxy.seen.length, 1, "without proxy: \"env\" the environment is ignored");
});

t.test("proxyFor picks the variable by scheme", async (t) => {
  const ws = target("example.com", 80, false);
  const wss = target("example.com", 443, true);
  const cases: Array<{ name: string; env: NodeJS.ProcessEnv; target: DialTarget; want: string | undefined }> = [
    { name: "ws uses http_proxy", env: { http_proxy: "http://a:1" }, target: ws, want: "http://a:1" },
    { name: "ws uses HTTP_PROXY", env: { HTTP_PROXY: "http://b:2" }, target: ws, want: "http://b:2" },
    { name: "lowercase wins", env: { http_proxy: "http://a:1", HTTP_PROXY: "http://b:2" }, target: ws, want: "http://a:1" },
    { name: "wss uses https_proxy", env: { https_proxy: "http://c:3", http_proxy: "http://a:1" }, target: wss, want: "http://c:3" },
    { name: "wss uses HTTPS_PROXY", env: { HTTPS_PROXY: "d:4" }, target: wss, want: "http://d:4" },
    { name: "wss does not fall back to http_proxy", env: { http_proxy: "http://a:1" }, target: wss, want: undefined },
    { name: "empty value means none", env: { http_proxy: "  " }, target: ws, want: undefined },
    { name: "CGI: HTTP_PROXY is a request header", env: { HTTP_PROXY: "http://evil:1", REQUEST_METHOD: "GET" }, target: ws, want: undefined },
    { name: "no_proxy exempts", env: { http_proxy: "http://a:1", no_proxy: "example.com" }, target: ws, want: undefined },
    { name: "NO_PROXY exempts", env: { https_proxy: "http://a:1", NO_PROXY: "*" }, target: wss, want: undefined },
  ];
  for (const c of cases) t.equal(proxyFor(c.target, "env", c.env), c.want, c.name);
  t.equal(proxyFor(ws, "http://explicit:8", { http_proxy: "http://a:1" }), "http://explicit:8", "an explicit URL wins");
  t.equal(proxyFor(ws, undefined, { http_proxy: "http://a:1" }), undefined, "no option, no proxy");
  t.equal(proxyFor({ ...ws, socketPath: "/tmp/s" }, "env", { http_proxy: "http://a:1" }), undefined, "unix sockets are not proxied");
});

t.test("noProxyMatches", async (t) => {
  const cases: Array<[string, string, number, string, boolean]> = [
    // [name, host, port, NO_PROXY, exempt]
    ["exact host", "example.com", 80, "example.com", true],
    ["subdomain", "api.example.com", 80, "example.com", true],
    ["leading dot", "api.example.com", 80, ".example.com", true],
    ["leading dot, the domain itself", "example.com", 80, ".example.com", true],
    ["wildcard prefix", "api.example.com", 80, "*.example.com", true],
    ["not a suffix match", "badexample.com", 80, "example.com", false],
    ["case and trailing dot", "API.Example.COM.", 80, "example.com", true],
    ["list with spaces", "b.test", 80, "a.test, b.test", true],
    ["space separated", "b.test", 80, "a.test b.test", true],
    ["port given, same", "example.com", 8080, "example.com:8080", true],
    ["port given, other", "example.com", 80, "example.com:8080", false],
    ["star", "anything", 1, "*", true],
    ["IPv4", "10.1.2.3", 80, "10.1.2.3", true],
    ["IPv4 other", "10.1.2.4", 80, "10.1.2.3", false],
    ["CIDR v4", "10.1.2.3", 80, "10.0.0.0/8", true],
    ["CIDR v4 outside", "11.1.2.3", 80, "10.0.0.0/8", false],
    ["IPv6 forms", "::1", 80, "0:0:0:0:0:0:0:1", true],
    ["IPv6 bracketed with port", "::1", 8080, "[::1]:8080", true],
    ["CIDR v6", "fd00::5", 80, "fd00::/8", true],
    ["host is not an IP for a CIDR", "example.com", 80, "10.0.0.0/8", false],
    ["bad CIDR matches nothing", "10.1.2.3", 80, "10.0.0.0/99", false],
    ["empty list", "example.com", 80, "", false],
  ];
  for (const [name, host, port, list, want] of cases) t.equal(noProxyMatches(target(host, port, false), list), want, name);
});

function target(host: string, port: number, secure: boolean): DialTarget {
  return { host, port, secure, path: "/", socketPath: undefined };
}

