import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import t from "tap";
import { accept, type Conn, dial, HandshakeError, MessageType } from "../../src/index.js";
import { makeCert } from "../helpers/cert.js";
import { echo } from "../helpers/peers.js";

const cert = makeCert();

/** What one request path answers: a redirect, or (undefined) the WebSocket echo. */
type Routes = Record<string, { status: number; location?: string } | undefined>;

interface RedirectServer {
  port: number;
  /** Each upgrade request received: path and headers. */
  requests: Array<{ path: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

/** startRedirectServer answers upgrade requests by `routes`; paths not listed get the echo. */
async function startRedirectServer(routes: Routes, secure = false, socketPath?: string): Promise<RedirectServer> {
  const server = secure ? https.createServer({ key: cert.key, cert: cert.cert }) : http.createServer();
  const requests: RedirectServer["requests"] = [];
  const sockets = new Set<Duplex>();
  const conns: Conn[] = [];
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    requests.push({ path: req.url ?? "", headers: req.headers });
    const route = routes[req.url ?? ""];
    if (route === undefined) {
      void accept(req, socket, head).then((c) => (conns.push(c), echo(c)), () => undefined);
      return;
    }
    const location = route.location === undefined ? "" : `Location: ${route.location}\r\n`;
    socket.end(`HTTP/1.1 ${route.status} Moved\r\n${location}Content-Length: 5\r\nConnection: close\r\n\r\nmoved`);
  });
  await new Promise<void>((resolve) => (socketPath ? server.listen(socketPath, resolve) : server.listen(0, "127.0.0.1", resolve)));
  return {
    port: socketPath ? 0 : (server.address() as AddressInfo).port,
    requests,
    close: async () => {
      for (const c of conns) c.closeNow();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function roundTrip(conn: Conn, text: string): Promise<string> {
  await conn.write(MessageType.Text, text);
  const answer = (await conn.read()).text();
  await conn.close();
  return answer;
}

t.test("redirects are not followed by default", async (t) => {
  const srv = await startRedirectServer({ "/old": { status: 302, location: "/new" } });
  t.teardown(() => srv.close());
  const err = await dial(`ws://127.0.0.1:${srv.port}/old`).catch((e: unknown) => e);
  t.ok(err instanceof HandshakeError);
  t.match(err, { status: 302, headers: { location: "/new" }, message: /server answered 302 redirecting to "\/new"; redirects are not followed unless followRedirects is set/ });
  t.equal((err as HandshakeError).body.toString(), "moved");
  t.same(srv.requests.map((r) => r.path), ["/old"]);
});

t.test("every 3xx status is followed, relative and absolute locations", async (t) => {
  for (const status of [301, 302, 303, 307, 308]) {
    const srv = await startRedirectServer({ "/dir/a": { status, location: "b?q=1#frag" } });
    const conn = await dial(`ws://127.0.0.1:${srv.port}/dir/a`, { followRedirects: 1 });
    t.equal(await roundTrip(conn, `after ${status}`), `after ${status}`);
    t.same(srv.requests.map((r) => r.path), ["/dir/a", "/dir/b?q=1"], `${status}: relative location resolved, fragment dropped`);
    await srv.close();
  }
  const target = await startRedirectServer({});
  const origin = await startRedirectServer({ "/": { status: 301, location: `http://127.0.0.1:${target.port}/landed` } });
  t.teardown(() => Promise.all([target.close(), origin.close()]));
  const conn = await dial(`ws://127.0.0.1:${origin.port}/`, { followRedirects: 1 });
  t.equal(await roundTrip(conn, "absolute"), "absolute");
  t.same(target.requests.map((r) => r.path), ["/landed"], "an http:// location is dialled as ws://");
});

t.test("followRedirects bounds the chain", async (t) => {
  const srv = await startRedirectServer({
    "/1": { status: 307, location: "/2" },
    "/2": { status: 307, location: "/3" },
    "/3": { status: 307, location: "/end" },
    "/loop": { status: 302, location: "/loop" },
  });
  t.teardown(() => srv.close());
  const tooFew = await dial(`ws://127.0.0.1:${srv.port}/1`, { followRedirects: 2 }).catch((e: unknown) => e);
  t.match(tooFew, { status: 307, message: /redirecting to "\/end"; followed 2 redirects already/ });
  const enough = await dial(`ws://127.0.0.1:${srv.port}/1`, { followRedirects: 3 });
  t.equal(await roundTrip(enough, "chain"), "chain");
  srv.requests.length = 0;
  const loop = await dial(`ws://127.0.0.1:${srv.port}/loop`, { followRedirects: 5 }).catch((e: unknown) => e);
  t.match(loop, { status: 302, message: /followed 5 redirects already/ });
  t.equal(srv.requests.length, 6, "a redirect loop stops after the limit");
});

t.test("credentials do not follow a redirect to another host", async (t) => {
  const elsewhere = await startRedirectServer({});
  const samePort = await startRedirectServer({
    "/same": { status: 302, location: "/ok" },
    "/away": { status: 302, location: `ws://localhost:${elsewhere.port}/ok` },
  });
  t.teardown(() => Promise.all([elsewhere.close(), samePort.close()]));
  const headers = { Authorization: "Bearer secret", cookie: "session=1", "X-Other": "kept" };

  const same = await dial(`ws://127.0.0.1:${samePort.port}/same`, { followRedirects: 1, headers });
  await same.close();
  t.match(samePort.requests[1]?.headers, { authorization: "Bearer secret", cookie: "session=1", "x-other": "kept" });

  const away = await dial(`ws://127.0.0.1:${samePort.port}/away`, { followRedirects: 1, headers });
  await away.close();
  const landed = elsewhere.requests[0]?.headers ?? {};
  t.equal(landed.authorization, undefined, "Authorization dropped");
  t.equal(landed.cookie, undefined, "Cookie dropped");
  t.equal(landed["x-other"], "kept", "other headers kept");
  t.equal(landed.host, `localhost:${elsewhere.port}`);
});

t.test("redirects that would lower security are refused", async (t) => {
  const plain = await startRedirectServer({});
  const secure = await startRedirectServer(
    {
      "/down": { status: 301, location: `ws://127.0.0.1:${plain.port}/` },
      "/downhttp": { status: 301, location: `http://127.0.0.1:${plain.port}/` },
      "/unix": { status: 301, location: "ws+unix:///var/run/docker.sock:/" },
      "/bad": { status: 301, location: "http://[::1" },
      "/ftp": { status: 301, location: "ftp://127.0.0.1/" },
      "/none": { status: 302 },
    },
    true,
  );
  t.teardown(() => Promise.all([plain.close(), secure.close()]));
  const url = (path: string): string => `wss://localhost:${secure.port}${path}`;
  const opts = { followRedirects: 3, tls: { ca: cert.cert } };
  const cases: Array<[string, RegExp]> = [
    ["/down", /refusing to leave wss for ws/],
    ["/downhttp", /refusing to leave wss for ws/],
    ["/unix", /refusing to redirect to a unix socket/],
    ["/bad", /the location is not a valid URL/],
    ["/ftp", /unsupported URL scheme ftp:/],
    ["/none", /^failed to dial: server answered 302 instead of 101/],
  ];
  for (const [path, message] of cases) {
    const err = await dial(url(path), opts).catch((e: unknown) => e);
    t.ok(err instanceof HandshakeError, path);
    t.match((err as Error).message, message, path);
  }
  t.equal(plain.requests.length, 0, "no request reached the plain server");
});

t.test("a relative redirect on a unix socket keeps the socket", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "wsconn-redirect-"));
  const socketPath = join(dir, "s.sock");
  const srv = await startRedirectServer({ "/old": { status: 308, location: "/new?v=2" } }, false, socketPath);
  t.teardown(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const conn = await dial(`ws+unix://${socketPath}:/old`, { followRedirects: 1 });
  t.equal(await roundTrip(conn, "unix"), "unix");
  t.same(srv.requests.map((r) => r.path), ["/old", "/new?v=2"]);
});
