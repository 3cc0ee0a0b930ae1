/**
 * The thin node:http adapter around {@link CacheServer}: request in, handler, response out,
 * streamed bodies piped with backpressure (memory stays flat whatever the NAR size), metrics
 * recorded when the last byte is sent.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { StrataError } from '../core/error.js';
import type { CacheServer } from './cache-server.js';

/** A listening server. */
export interface Listening {
  /** `http://HOST:PORT`, what clients put in `substituters`. */
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

class ByteCounter extends Transform {
  bytes = 0;
  constructor() {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

// Times are performance.now() doubles: hrtime.bigint() allocates a BigInt per call.
async function respond(handler: CacheServer, req: IncomingMessage, res: ServerResponse, start: number): Promise<void> {
  // No `headers`: req.headers is built lazily from rawHeaders, and the handler needs none.
  const answer = await handler.handle({ method: req.method ?? 'GET', url: req.url ?? '/', body: req });
  // A request body the answer did not read (a refused upload) may be endless: it is not drained
  // for the sake of keep-alive, the connection closes once the answer is out.
  if (!req.complete) {
    res.shouldKeepAlive = false;
    req.resume();
  }
  res.writeHead(answer.status, answer.headers);
  let bytes = 0;
  const body = answer.body;
  if (body === undefined) res.end();
  else if (Buffer.isBuffer(body)) {
    bytes = body.length;
    res.end(body);
  } else {
    const counter = new ByteCounter();
    try {
      await pipeline(body, counter, res);
    } catch {
      // Headers are gone: cutting the connection is the only way to tell the client.
      res.destroy();
    }
    bytes = counter.bytes;
  }
  handler.metrics.observe(answer.route, answer.status, bytes, (performance.now() - start) / 1000);
}

/** Where {@link listen} listens, and its timeouts (the defaults suit production; tests shorten them). */
export interface ListenOptions {
  host?: string;
  port?: number;
  /** A client must send its whole request head within this (default 60 s, Node's usual). */
  headersTimeoutMs?: number;
  /** A socket with no byte moving either way for this long is closed (default 300 s). */
  idleTimeoutMs?: number;
}

/**
 * Listens on `host:port` (port 0 picks a free one). Only what `host` names is bound.
 *
 * @example const { url, close } = await listen(new CacheServer(store), { host: '127.0.0.1', port: 0 });
 */
export async function listen(handler: CacheServer, options: ListenOptions = {}): Promise<Listening> {
  const headersTimeout = options.headersTimeoutMs ?? 60_000;
  // 16 KiB of headers is 20× what Nix sends; Node answers 431 beyond it. No limit on a whole
  // request (an upload of a large NAR takes what it takes), which in Node also turns off the
  // one on its headers: that one is set again, or a client that never finishes its headers
  // holds a socket for good (slowloris). Node checks it every `connectionsCheckingInterval`.
  const server = createServer({
    maxHeaderSize: 16 * 1024,
    keepAliveTimeout: 65_000,
    requestTimeout: 0,
    headersTimeout,
    connectionsCheckingInterval: Math.min(30_000, Math.max(10, Math.floor(headersTimeout / 2))),
  }, (req, res) => {
    // The hot path without a promise: a memoised narinfo the store's change token vouches for.
    const start = performance.now();
    const quick = handler.answerFromMemo(req.method, req.url);
    if (quick === undefined) {
      respond(handler, req, res, start).catch(() => res.destroy());
      return;
    }
    res.writeHead(quick.status, quick.headers);
    res.end(quick.body);
    handler.metrics.observe(quick.route, quick.status, quick.body === undefined ? 0 : (quick.body as Buffer).length, (performance.now() - start) / 1000);
  });
  // A socket silent both ways this long is dropped (a client that stopped reading a NAR, or
  // vanished without a FIN, would hold it and the NAR's open file forever): Nix's own client
  // gives up on a transfer stalled as long (stalled-download-timeout, 300 s).
  server.timeout = options.idleTimeoutMs ?? 300_000;
  const host = options.host ?? '127.0.0.1';
  const shown = host.includes(':') ? `[${host}]` : host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const where = `${shown}:${options.port ?? 0}`;
      const why = e.code === 'EADDRINUSE' ? 'the address is already in use' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EADDRNOTAVAIL' ? 'no such address on this machine' : e.message;
      reject(new StrataError('LISTEN_FAILED', `Cannot listen on ${where}: ${why}`, { value: where, cause: e }));
    });
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${shown}:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
