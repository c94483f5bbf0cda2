/**
 * The TCP-over-WebSocket tunnel of docs/examples/tunnel.ts, run as users
 * would run it: a TCP client, the tunnel client, the tunnel server and a TCP
 * target, all on 127.0.0.1. 100 MiB each way byte-exact with bounded live memory,
 * how ends and resets cross the tunnel, an unreachable target, the CLI.
 */

import { createHash, randomFillSync } from "node:crypto";
import { once } from "node:events";
import * as net from "node:net";
import { performance } from "node:perf_hooks";
import t, { type Test } from "tap";
import { main, startTunnelClient, startTunnelServer, type Tunnel } from "../../docs/examples/tunnel.js";
import { closeStatus } from "../../src/index.js";
import { memorySample } from "../helpers/deflate-peer.js";
import { freePort } from "../helpers/peers.js";

/** startTarget runs a TCP server whose connections `onSocket` handles. */
async function startTarget(t: Test, onSocket: (s: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    onSocket(s);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

/** startTunnel runs both ends of a tunnel to `targetPort`, collecting their errors. */
async function startTunnel(t: Test, targetPort: number): Promise<{ port: number; errors: Error[] }> {
  const errors: Error[] = [];
  const onError = (err: Error): void => void errors.push(err);
  const server = await startTunnelServer({ port: 0, target: { port: targetPort }, onError });
  const client = await startTunnelClient({ listenPort: 0, url: server.url, onError });
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  return { port: client.port, errors };
}

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  return socket;
}

const MiB = 1024 * 1024;

t.test("100 MiB each way through the tunnel to a TCP echo server, byte-exact, bounded memory", async (t) => {
  const echoPort = await startTarget(t, (s) => s.pipe(s));
  const { port, errors } = await startTunnel(t, echoPort);
  const total = 100 * MiB;
  const chunkSize = 64 * 1024;
  const socket = await connect(port);
  // Live memory (heap + external, after a full GC) sampled every 8 MiB that
  // comes back: what the four sockets and both tunnel ends hold in flight.
  // Peak RSS, measured before, moved with the allocator and the GC's timing.
  const live = (): number => {
    const sample = memorySample();
    return sample.heapUsed + sample.external;
  };
  const baseline = live();
  let peakLive = baseline;
  let nextSample = 8 * MiB;
  const started = performance.now();
  const sent = createHash("sha256");
  const received = createHash("sha256");
  let receivedBytes = 0;
  const allReceived = new Promise<void>((resolve) => {
    socket.on("data", (chunk: Buffer) => {
      received.update(chunk);
      receivedBytes += chunk.length;
      if (receivedBytes >= nextSample) {
        nextSample += 8 * MiB;
        peakLive = Math.max(peakLive, live());
      }
      if (receivedBytes >= total) resolve();
    });
  });
  for (let offset = 0; offset < total; offset += chunkSize) {
    const chunk = randomFillSync(Buffer.allocUnsafe(chunkSize));
    sent.update(chunk);
    if (!socket.write(chunk)) await once(socket, "drain");
  }
  await allReceived;
  const seconds = (performance.now() - started) / 1000;
  const growth = (peakLive - baseline) / MiB;
  t.comment(
    `tunnel: 100 MiB each way in ${seconds.toFixed(2)} s (with a full GC every 8 MiB), ` +
      `${(total / 1e6 / seconds).toFixed(1)} MB/s per direction; peak live memory growth ${growth.toFixed(1)} MiB`,
  );
  t.equal(receivedBytes, total, "every byte came back");
  t.equal(received.digest("hex"), sent.digest("hex"), "sha256 of what came back equals what was sent");
  t.ok(growth < 8, `peak heap + external growth ${growth.toFixed(1)} MiB stays under 8 MiB while 100 MiB cross each way`);
  socket.end();
  await once(socket, "close");
  t.same(errors, [], "no tunnel errors on a clean close");
});

t.test("several connections share the tunnel, each its own stream", async (t) => {
  const echoPort = await startTarget(t, (s) => s.pipe(s));
  const { port, errors } = await startTunnel(t, echoPort);
  const results = await Promise.all(
    [1, 2, 3, 4, 5].map(async (n) => {
      const socket = await connect(port);
      const payload = Buffer.alloc(n * 100_000, n);
      const chunks: Buffer[] = [];
      let length = 0;
      const done = new Promise<void>((resolve) =>
        socket.on("data", (c: Buffer) => {
          chunks.push(c);
          length += c.length;
          if (length === payload.length) resolve();
        }),
      );
      socket.write(payload);
      await done;
      socket.end();
      await once(socket, "close");
      return Buffer.concat(chunks).equals(payload);
    }),
  );
  t.same(results, [true, true, true, true, true], "every connection got its own bytes back");
  t.same(errors, []);
});

t.test("a target that answers and closes: the client reads it all, then EOF", async (t) => {
  const answer = Buffer.alloc(3 * MiB, "z");
  const targetPort = await startTarget(t, (s) => s.end(answer));
  const { port, errors } = await startTunnel(t, targetPort);
  const socket = await connect(port);
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  await once(socket, "end");
  t.ok(Buffer.concat(chunks).equals(answer), "the whole answer arrived before the end");
  socket.end();
  await once(socket, "close");
  t.same(errors, [], "a clean close on the target is a clean close for the client");
});

t.test("a reset on the target resets the client's connection", async (t) => {
  const targetPort = await startTarget(t, (s) => {
    s.write("partial");
    s.once("data", () => s.resetAndDestroy());
  });
  const { port } = await startTunnel(t, targetPort);
  const socket = await connect(port);
  await once(socket, "data");
  socket.write("go");
  const [error] = (await once(socket, "error")) as [NodeJS.ErrnoException];
  t.equal(error.code, "ECONNRESET");
});

t.test("an unreachable target closes the client's connection", async (t) => {
  const { port, errors } = await startTunnel(t, await freePort());
  const socket = await connect(port);
  const [error] = (await once(socket, "error")) as [NodeJS.ErrnoException];
  t.equal(error.code, "ECONNRESET", "the client's connection is reset");
  t.same(
    errors.map((e) => (e as NodeJS.ErrnoException).code ?? closeStatus(e)),
    ["ECONNREFUSED", 1014],
    "the server reports the refusal, the client the WebSocket's close with 1014 (bad gateway)",
  );
});

t.test("main runs both ends from command-line arguments", async (t) => {
  const targetPort = await startTarget(t, (s) => s.pipe(s));
  const lines: string[] = [];
  const log = (line: string): void => void lines.push(line);
  const server: Tunnel = await main(["server", "0", `127.0.0.1:${targetPort}`], log);
  t.teardown(() => server.close());
  const client: Tunnel = await main(["client", "0", `ws://127.0.0.1:${server.port}`], log);
  t.teardown(() => client.close());
  t.match(lines, [/^tunnel server: ws:\/\/0\.0\.0\.0:\d+ -> 127\.0\.0\.1:\d+$/, /^tunnel client: 127\.0\.0\.1:\d+ -> ws:/]);
  const socket = await connect(client.port);
  socket.write("ping");
  const [data] = (await once(socket, "data")) as [Buffer];
  t.equal(data.toString(), "ping");
  socket.end();
  await once(socket, "close");
  await t.rejects(main(["bogus"], log), /usage: tunnel server/);
});
