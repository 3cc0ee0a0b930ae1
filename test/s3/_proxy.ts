/**
 * A tiny HTTP proxy in front of the test S3 server that can misbehave on purpose: answer
 * `503 SlowDown` (S3's throttling reply), or run a hook when a request arrives (to kill the
 * server mid-upload). Headers go through untouched, Host included, so SigV4 signatures made for
 * the proxy's address still verify upstream. Every request is logged.
 */
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What to do with one request. */
export type ProxyAction = 'pass' | 'slowdown';

/** One request the proxy saw, and the status it answered. */
export interface ProxyLogEntry {
  method: string;
  url: string;
  status: number;
}

/** A running proxy. */
export interface FaultProxy {
  hostPort: string;
  log: ProxyLogEntry[];
  close(): Promise<void>;
}

const SLOW_DOWN = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>';

/** Starts a proxy to `127.0.0.1:upstreamPort`; `decide` picks each request's fate. */
export async function startProxy(upstreamPort: number, decide: (req: IncomingMessage) => ProxyAction = () => 'pass'): Promise<FaultProxy> {
  const log: ProxyLogEntry[] = [];
  const server = createServer((req, res) => {
    const entry: ProxyLogEntry = { method: req.method ?? '', url: req.url ?? '', status: 0 };
    log.push(entry);
    if (decide(req) === 'slowdown') {
      req.resume();
      req.on('end', () => {
        entry.status = 503;
        res.writeHead(503, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(SLOW_DOWN) });
        res.end(SLOW_DOWN);
      });
      return;
    }
    const up = httpRequest({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      entry.status = ur.statusCode ?? 0;
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
      ur.on('error', () => res.destroy());
    });
    // The upstream died: drop the client's connection as the real server's death would.
    up.on('error', () => {
      entry.status = -1;
      res.destroy();
      req.destroy();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    hostPort: `127.0.0.1:${port}`,
    log,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
