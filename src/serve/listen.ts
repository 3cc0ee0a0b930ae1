/**
 * The thin node:http adapter around {@link CacheServer}: request in, handler, response out,
 * streamed bodies piped with backpressure (memory stays flat whatever the NAR size), metrics
 * recorded when the last byte is sent.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

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
  // Drain an unread request body so the connection can be reused.
  if (!req.complete) req.resume();
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

/**
 * Listens on `host:port` (port 0 picks a free one). Only what `host` names is bound.
 *
 * @example const { url, close } = await listen(new CacheServer(store), { host: '127.0.0.1', port: 0 });
 */
export async function listen(handler: CacheServer, options: { host?: string; port?: number } = {}): Promise<Listening> {
  // 16 KiB of headers is 20× what Nix sends; Node answers 431 beyond it.
  const server = createServer({ maxHeaderSize: 16 * 1024, keepAliveTimeout: 65_000, requestTimeout: 0 }, (req, res) => {
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
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host;
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
