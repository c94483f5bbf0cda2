import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import { type CloseInfo, type Conn, dial, MessageType } from "../../src/index.js";
import { buildCli, type BuiltCli, type CliProcess, runCli, startCli } from "../helpers/cli-process.js";
import { startProxy } from "../helpers/connect-proxy.js";
import { echo, freePort, startServer, type TestServer } from "../helpers/peers.js";

// About thirty child processes and a build: more than the default budget on a busy machine.
t.setTimeout(300_000);
const cli: BuiltCli = await buildCli();
t.teardown(() => cli.remove());

/** No line of stderr looks like a stack frame. */
function noStack(t: Test, stderr: string): void {
  t.notMatch(stderr, /^\s+at /m, "no stack trace");
}

/** listeningUrl waits for a server command's "listening on URL" line. */
async function listeningOn(proc: CliProcess): Promise<string> {
  const match = await proc.waitStderr(/listening on (\S+)/);
  return match[1]!;
}

/** startEchoPeer runs a test-owned echo server that also records what it saw. */
async function startRecordingEcho(): Promise<TestServer & { requests: http.IncomingHttpHeaders[] }> {
  const requests: http.IncomingHttpHeaders[] = [];
  const srv = await startServer({ subprotocols: ["chat"], compression: "context-takeover" }, (c) => void echo(c));
  srv.server.prependListener("upgrade", (req: http.IncomingMessage) => requests.push(req.headers));
  return Object.assign(srv, { requests });
}

t.test("help, usage errors and failures are one line with the right status", async (t) => {
  const top = await runCli(cli, ["--help"]);
  t.equal(top.code, 0);
  t.match(top.stdout, /Usage: wsconn COMMAND/);
  const names = ["echo", "connect", "tunnel", "serve"];
  const helps = await Promise.all(names.map((name) => runCli(cli, [name, "--help"])));
  names.forEach((name, i) => {
    t.equal(helps[i]!.code, 0, `${name} --help exits 0`);
    t.match(helps[i]!.stdout, new RegExp(`^Usage: wsconn ${name}`), `${name} --help`);
  });
  const cases: Array<{ args: string[]; code: number; stderr: RegExp }> = [
    { args: [], code: 2, stderr: /Usage: wsconn COMMAND/ },
    { args: ["nope"], code: 2, stderr: /^wsconn: unknown command "nope" \(commands: echo, connect, tunnel, serve\)\n$/ },
    { args: ["connect"], code: 2, stderr: /^wsconn connect: missing URL \(see wsconn connect --help\)\n$/ },
    { args: ["connect", "ws://x", "--bogus"], code: 2, stderr: /^wsconn connect: unknown option '--bogus'/ },
    { args: ["connect", "ftp://x"], code: 2, stderr: /^wsconn connect: URL must start with ws:\/\/, wss:\/\/ or ws\+unix:\/\// },
    { args: ["connect", "ws://x", "--binary", "octal"], code: 2, stderr: /--binary must be hex or base64/ },
    { args: ["connect", "ws://x", "-H", "no colon"], code: 2, stderr: /--header must be "Name: value"/ },
    { args: ["connect", "wss://x", "--ca", "/nonexistent.pem"], code: 2, stderr: /cannot read --ca file \/nonexistent\.pem: ENOENT/ },
    { args: ["tunnel", "--listen", "1:2:3", "--to", "ws://x"], code: 2, stderr: /write an IPv6 address in brackets/ },
    { args: ["tunnel", "--listen", "0"], code: 2, stderr: /missing --to URL/ },
    { args: ["serve", "--port", "8080"], code: 2, stderr: /missing --forward/ },
    { args: ["serve", "--forward", "1", "--port", "70000"], code: 2, stderr: /--port must be an integer from 0 to 65535/ },
    { args: ["echo", "--cert", "c.pem"], code: 2, stderr: /--cert and --key go together/ },
  ];
  const results = await Promise.all(cases.map((c) => runCli(cli, c.args)));
  for (const [i, c] of cases.entries()) {
    const result = results[i]!;
    t.equal(result.code, c.code, `${c.args.join(" ")}: exit ${c.code}`);
    t.match(result.stderr, c.stderr, c.args.join(" "));
    noStack(t, result.stderr);
  }
});

t.test("connect failures name the cause and exit 1", async (t) => {
  const refusing = http.createServer((_req, res) => res.end());
  refusing.on("upgrade", (_req, socket) => socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"));
  await new Promise<void>((resolve) => refusing.listen(0, "127.0.0.1", resolve));
  const port = (refusing.address() as AddressInfo).port;
  t.teardown(() => new Promise<void>((resolve) => refusing.close(() => resolve())));

  const forbidden = await runCli(cli, ["connect", `ws://127.0.0.1:${port}/`]);
  t.equal(forbidden.code, 1);
  t.equal(forbidden.stderr, "wsconn connect: server answered 403 instead of 101\n");

  const closed = await freePort();
  const refused = await runCli(cli, ["connect", `ws://127.0.0.1:${closed}/`]);
  t.equal(refused.code, 1);
  t.equal(refused.stderr, `wsconn connect: connect ECONNREFUSED 127.0.0.1:${closed}\n`);

  const tls = await runCli(cli, ["connect", `wss://127.0.0.1:${port}/`, "--handshake-timeout", "3000"]);
  t.equal(tls.code, 1);
  t.equal(tls.stderr, "wsconn connect: TLS error: wrong version number\n", "a TLS failure is one line");
  noStack(t, tls.stderr);
});

t.test("echo: round trip, access log, Ctrl-C closes with 1001", async (t) => {
  const proc = startCli(cli, ["echo", "--port", "0"]);
  const url = await listeningOn(proc);
  t.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/$/, "listens on 127.0.0.1 by default");
  const done = await dial(url);
  await done.write(MessageType.Text, "héllo");
  t.equal((await done.read()).text(), "héllo");
  await done.write(MessageType.Binary, Buffer.from([0, 1, 255]));
  const bin = await done.read();
  t.equal(bin.type, MessageType.Binary);
  t.same([...bin.data], [0, 1, 255]);
  await done.close();
  await proc.waitStderr(/echo close=1000 messages=2 bytes=9 /);

  const open = await dial(url);
  const result = await proc.interrupt();
  const info: CloseInfo = await open.closed;
  t.equal(info.code, 1001, "Ctrl-C closes open connections with 1001");
  t.equal(result.code, 0);
  t.match(result.stderr, /echo close=1001 messages=0 bytes=0 /);
  noStack(t, result.stderr);
});

t.test("connect in a pipe: lines out, answers printed, exits after the close", async (t) => {
  const srv = await startRecordingEcho();
  t.teardown(() => srv.close());
  const serverConn = srv.nextConn();
  const result = await runCli(cli, ["connect", srv.url, "--wait", "1500", "-H", "X-Test: 1", "-s", "chat", "--compress"], { input: "hi\nthere\n\nlast line without newline" });
  t.equal(result.code, 0, result.stderr);
  t.equal(result.stdout, "hi\nthere\n\nlast line without newline\n");
  t.equal(result.stderr, "", "nothing on stderr in a pipe");
  const closed = await (await serverConn).closed;
  t.same(closed, { code: 1000, reason: "", wasClean: true }, "closed with 1000 after the handshake");
  const headers = srv.requests[0]!;
  t.equal(headers["x-test"], "1");
  t.equal(headers["sec-websocket-protocol"], "chat");
  t.match(headers["sec-websocket-extensions"], /permessage-deflate/, "--compress offers permessage-deflate");
});

t.test("connect prints binary messages as hex or base64", async (t) => {
  // The server's close ends the client long before --wait would.
  const srv = await startServer({}, (conn) => void conn.write(MessageType.Binary, Buffer.from([0xde, 0xad, 0xbe, 0xef])).then(() => conn.close()));
  t.teardown(() => srv.close());
  const hex = await runCli(cli, ["connect", srv.url, "--wait", "60000"]);
  t.equal(hex.stdout, "deadbeef\n");
  t.equal(hex.code, 0);
  const b64 = await runCli(cli, ["connect", srv.url, "--wait", "60000", "--binary", "base64"]);
  t.equal(b64.stdout, "3q2+7w==\n");
});

t.test("--wait keeps reading after stdin ends until the server is quiet", async (t) => {
  // The server answers each message twice, the second time 150 ms later.
  const srv = await startServer({}, async (conn) => {
    try {
      for await (const msg of conn) {
        await conn.write(MessageType.Text, `now ${msg.text()}`);
        await new Promise((resolve) => setTimeout(resolve, 150));
        await conn.write(MessageType.Text, `later ${msg.text()}`);
      }
    } catch {
      // closed
    }
  });
  t.teardown(() => srv.close());
  const serverConn = srv.nextConn();
  const result = await runCli(cli, ["connect", srv.url, "--wait", "1000"], { input: "q\n" });
  t.equal(result.stdout, "now q\nlater q\n");
  t.equal(result.code, 0);
  t.same(await (await serverConn).closed, { code: 1000, reason: "", wasClean: true }, "then the client closed with 1000");
});

t.test("connect --commands: /ping, //escape, /binary, /close CODE REASON", async (t) => {
  const received: Array<[MessageType, string]> = [];
  const srv = await startServer({}, async (conn) => {
    try {
      for await (const msg of conn) received.push([msg.type, msg.type === MessageType.Text ? msg.text() : msg.data.toString("hex")]);
    } catch {
      // the test looks at conn.closed
    }
  });
  t.teardown(() => srv.close());
  const serverConn = srv.nextConn();
  const input = "//not a command\n/binary 00 ff\n/ping\n/bogus\n/close 4001 done for now\nnever sent\n";
  const result = await runCli(cli, ["connect", srv.url, "--commands"], { input });
  t.match(result.stderr, /^pong: \d+\.\d{3} ms$/m);
  t.match(result.stderr, /^wsconn: unknown command \/bogus/m);
  const closed = await (await serverConn).closed;
  t.same(received, [[MessageType.Text, "/not a command"], [MessageType.Binary, "00ff"]], "// sends the line with one slash less; /binary sends bytes; nothing after /close");
  t.same(closed, { code: 4001, reason: "done for now", wasClean: true });
  t.equal(result.code, 0, "a close you asked for exits 0");
});

t.test("connect exits 1 on an abnormal close from the server", async (t) => {
  const srv = await startServer({}, (conn) => void conn.close(1011, "boom"));
  t.teardown(() => srv.close());
  const proc = startCli(cli, ["connect", srv.url]); // stdin stays open: the close must end it
  const result = await proc.exited;
  t.equal(result.code, 1);
  t.equal(result.stderr, 'wsconn: connection closed: 1011 internal error "boom"\n');
});

t.test("connect: Ctrl-C closes with 1001 and exits 0", async (t) => {
  const srv = await startServer({}, (c) => void c.write(MessageType.Text, "ready").then(() => echo(c)));
  t.teardown(() => srv.close());
  const serverConn = srv.nextConn();
  const proc = startCli(cli, ["connect", srv.url]);
  const conn: Conn = await serverConn;
  await proc.waitStdout(/ready/); // the client is connected, not still in its handshake
  const result = await proc.interrupt();
  t.equal((await conn.closed).code, 1001);
  t.equal(result.code, 0);
});

t.test("connect through a CONNECT proxy: --proxy URL, the environment, --proxy none", async (t) => {
  // Echo one message, then close: the client exits on the close, not after --wait.
  const srv = await startServer({}, async (conn) => {
    const msg = await conn.read().catch(() => undefined);
    if (msg) await conn.write(msg.type, msg.data).catch(() => undefined);
    await conn.close().catch(() => undefined);
  });
  const proxy = await startProxy({ auth: "u:p" });
  t.teardown(() => Promise.all([srv.close(), proxy.close()]));
  const viaFlag = await runCli(cli, ["connect", `ws://ws.test:${srv.port}/`, "--proxy", `http://u:p@127.0.0.1:${proxy.port}`, "--wait", "60000"], { input: "flag\n" });
  t.equal(viaFlag.stdout, "flag\n", viaFlag.stderr);
  const viaEnv = await runCli(cli, ["connect", `ws://ws.test:${srv.port}/`, "--wait", "60000"], { input: "env\n", env: { http_proxy: `http://u:p@127.0.0.1:${proxy.port}` } });
  t.equal(viaEnv.stdout, "env\n", viaEnv.stderr);
  t.equal(proxy.seen.length, 2);
  const bypass = await runCli(cli, ["connect", `${srv.url}/`, "--proxy", "none", "--wait", "60000"], { input: "direct\n", env: { http_proxy: "http://127.0.0.1:1" } });
  t.equal(bypass.stdout, "direct\n", bypass.stderr);
  const noAuth = await runCli(cli, ["connect", `ws://ws.test:${srv.port}/`, "--proxy", proxy.url]);
  t.equal(noAuth.code, 1);
  t.match(noAuth.stderr, /^wsconn connect: proxy 127\.0\.0\.1:\d+ refused CONNECT to ws\.test:\d+ with 407 Proxy Authentication Required/);
});

// ---- tunnel + serve ----

interface Tunnel {
  local: { host: string; port: number };
  server: CliProcess;
  client: CliProcess;
}

async function startTunnel(t: Test, forward: string): Promise<Tunnel> {
  const server = startCli(cli, ["serve", "--port", "0", "--forward", forward, "--path", "/tcp"]);
  const wsUrl = await listeningOn(server);
  const client = startCli(cli, ["tunnel", "--listen", "127.0.0.1:0", "--to", wsUrl]);
  const address = await listeningOn(client);
  const [host = "", port = ""] = address.split(":");
  t.teardown(async () => {
    if (server.child.exitCode === null) await server.interrupt();
    if (client.child.exitCode === null) await client.interrupt();
  });
  return { local: { host, port: Number(port) }, server, client };
}

t.test("tunnel + serve carry HTTP end to end, many connections at once", async (t) => {
  const target = http.createServer((req, res) => {
    let body = 0;
    req.on("data", (chunk: Buffer) => (body += chunk.length));
    req.on("end", () => res.end(`${req.method} ${req.url} ${body}`));
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => target.close(() => resolve())));
  const tunnel = await startTunnel(t, `127.0.0.1:${(target.address() as AddressInfo).port}`);

  const count = 12;
  const payload = Buffer.alloc(256 * 1024, 7);
  const answers = await Promise.all(
    Array.from({ length: count }, (_, i) => request(tunnel.local.port, `/item/${i}`, i % 3 === 0 ? payload : undefined)),
  );
  t.same(
    answers,
    Array.from({ length: count }, (_, i) => (i % 3 === 0 ? `POST /item/${i} ${payload.length}` : `GET /item/${i} 0`)),
  );
  // One access log line per connection on each side, once each ends.
  await tunnel.client.waitStderr(new RegExp(`(-> ws://\\S+ close=1000 [^\\n]*\\n[^]*){${count}}`));
  await tunnel.server.waitStderr(new RegExp(`(-> 127\\.0\\.0\\.1:\\d+ close=1000 [^\\n]*\\n[^]*){${count}}`));
  t.match(tunnel.server.stderr(), new RegExp(`close=1000 up=${payload.length + 100}|close=1000 up=\\d+ down=\\d+`), "byte counts logged");
  const server = await tunnel.server.interrupt();
  const client = await tunnel.client.interrupt();
  t.equal(server.code, 0);
  t.equal(client.code, 0);
  noStack(t, server.stderr + client.stderr);
});

t.test("tunnel teardown: a reset travels as a reset, an end as an end", async (t) => {
  const sockets: net.Socket[] = [];
  const target = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    s.on("error", () => undefined);
    s.on("data", (chunk: Buffer) => {
      const command = chunk.toString().trim();
      if (command === "reset") s.resetAndDestroy();
      else if (command === "end") s.end("bye\n");
      else s.write(`echo ${command}\n`);
    });
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => target.close(() => resolve()));
  });
  const tunnel = await startTunnel(t, `127.0.0.1:${(target.address() as AddressInfo).port}`);

  const ended = await talk(tunnel.local.port, ["hello", "end"]);
  t.same(ended, { data: "echo hello\nbye\n", error: undefined }, "the target's end arrives as EOF after its data");

  const reset = await talk(tunnel.local.port, ["hello", "reset"]);
  t.equal(reset.data, "echo hello\n");
  t.equal(reset.error, "ECONNRESET", "the target's reset arrives as a reset");
  await tunnel.server.waitStderr(/close=1011 reason="tcp connection failed" error="read ECONNRESET"|error="[^"]*ECONNRESET/);

  // The local client hangs up first: the target sees an end, not a reset.
  const targetEnded = new Promise<boolean>((resolve) => target.once("connection", (s: net.Socket) => s.once("end", () => resolve(true))));
  const client = net.connect(tunnel.local.port, "127.0.0.1");
  await new Promise((resolve) => client.once("connect", resolve));
  client.end();
  t.equal(await targetEnded, true);
  client.destroy();
});

t.test("tunnel: an unreachable far end or target closes the local connection", async (t) => {
  const closed = await freePort();
  const tunnel = await startTunnel(t, `127.0.0.1:${closed}`);
  const noTarget = await talk(tunnel.local.port, ["hello"]);
  t.equal(noTarget.data, "");
  t.ok(noTarget.error === "ECONNRESET" || noTarget.error === undefined, `local connection closed (${noTarget.error ?? "EOF"})`);
  await tunnel.server.waitStderr(new RegExp(`close=1014 reason="upstream unreachable" error="connect ECONNREFUSED 127\\.0\\.0\\.1:${closed}"`));
  await tunnel.client.waitStderr(/close=1014 reason="upstream unreachable"/);

  const noServer = startCli(cli, ["tunnel", "--listen", "0", "--to", `ws://127.0.0.1:${closed}/`]);
  const address = await listeningOn(noServer);
  const failed = await talk(Number(address.split(":")[1]), ["hello"]);
  t.equal(failed.error, "ECONNRESET", "a failed dial resets the local connection");
  await noServer.waitStderr(new RegExp(`error="connect ECONNREFUSED 127\\.0\\.0\\.1:${closed}"`));
  t.equal((await noServer.interrupt()).code, 0);
});

t.test("tunnel: Ctrl-C closes open tunnels with 1001, seen as EOF on both ends", async (t) => {
  let targetSide: net.Socket | undefined;
  const target = net.createServer({ allowHalfOpen: true });
  const targetEnd = new Promise<void>((resolve) => {
    target.once("connection", (s: net.Socket) => {
      targetSide = s;
      s.on("data", (chunk: Buffer) => s.write(chunk));
      s.once("end", () => resolve());
    });
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  t.teardown(async () => {
    targetSide?.destroy();
    await new Promise<void>((resolve) => target.close(() => resolve()));
  });
  const tunnel = await startTunnel(t, `127.0.0.1:${(target.address() as AddressInfo).port}`);
  const client = net.connect(tunnel.local.port, "127.0.0.1");
  client.on("error", () => undefined);
  client.write("ping");
  await new Promise((resolve) => client.once("data", resolve));
  const clientEnd = new Promise((resolve) => client.once("end", resolve));
  const result = await tunnel.client.interrupt();
  await clientEnd;
  await targetEnd;
  client.destroy();
  t.equal(result.code, 0);
  // Each side logs the close frame it received: the echo here, the reason there.
  t.match(result.stderr, /-> ws:\/\/\S+ close=1001 up=4 down=4 /);
  await tunnel.server.waitStderr(/-> 127\.0\.0\.1:\d+ close=1001 reason="shutting down" up=4 down=4 /);
});

// ---- helpers ----

function request(port: number, path: string, body?: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, method: body ? "POST" : "GET", agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => resolve(text));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** talk sends each line (waiting for an answer between them) and collects what comes back until the connection ends. */
function talk(port: number, lines: string[]): Promise<{ data: string; error: string | undefined }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    let error: string | undefined;
    const queue = [...lines];
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`${queue.shift()}\n`));
    socket.on("data", (chunk: string) => {
      data += chunk;
      const next = queue.shift();
      if (next !== undefined) socket.write(`${next}\n`);
    });
    socket.on("error", (err: NodeJS.ErrnoException) => (error = err.code));
    socket.on("close", () => resolve({ data, error }));
  });
}

