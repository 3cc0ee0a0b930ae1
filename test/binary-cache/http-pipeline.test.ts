/**
 * The pipelined HTTP/1.1 client of http:// caches, against scripted raw-socket servers: requests
 * batched into one write, responses read in order whatever their framing (length, chunked, HEAD,
 * none until close), requests a closing server left unanswered sent again, broken responses
 * failing only their own request.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { PipelinePool } from '../../src/store/binary-cache/http-pipeline.js';

interface Req {
  method: string;
  path: string;
}

/** A server that parses pipelined request heads and answers each with `answer(req, socket, n)`. */
async function scripted(answer: (req: Req, socket: Socket, n: number) => void): Promise<{ server: Server; port: number; writes: number[]; connections: () => number }> {
  const writes: number[] = [];
  let conns = 0;
  let n = 0;
  const server = createServer((socket) => {
    conns++;
    let buf = '';
    socket.on('error', () => {});
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      let count = 0;
      for (let end; (end = buf.indexOf('\r\n\r\n')) >= 0; ) {
        const [method, path] = buf.slice(0, end).split(' ');
        buf = buf.slice(end + 4);
        count++;
        if (!socket.destroyed && !socket.writableEnded) answer({ method: method!, path: path! }, socket, n++);
      }
      writes.push(count);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port, writes, connections: () => conns };
}

const servers: Server[] = [];
const pools: PipelinePool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) p.close();
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
});

async function text(p: Promise<{ statusCode: number; body: NodeJS.ReadableStream }>): Promise<string> {
  const r = await p;
  const chunks: Buffer[] = [];
  for await (const c of r.body) chunks.push(c as Buffer);
  return `${r.statusCode} ${Buffer.concat(chunks).toString()}`;
}

describe('PipelinePool', () => {
  it('sends queued requests in one write and reads length, chunked, HEAD and 404 answers in order', async () => {
    const s = await scripted((req, socket) => {
      const body = `body of ${req.path}`;
      if (req.path === '/chunked') socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n${(12).toString(16)}\r\n0123456789ab\r\n0\r\nX-Trailer: t\r\n\r\n`);
      else if (req.path === '/missing') socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found');
      else socket.write(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${req.method === 'HEAD' ? '' : body}`);
    });
    servers.push(s.server);
    const pool = new PipelinePool('127.0.0.1', s.port, { connections: 1 });
    pools.push(pool);
    const host = `127.0.0.1:${s.port}`;
    const got = await Promise.all([
      text(pool.request('GET', '/a', host)),
      text(pool.request('GET', '/chunked', host)),
      text(pool.request('HEAD', '/head', host)),
      text(pool.request('GET', '/missing', host)),
      text(pool.request('GET', '/b', host)),
    ]);
    expect(got).toEqual(['200 body of /a', '200 abc0123456789ab', '200 ', '404 not found', '200 body of /b']);
    expect(s.writes, 'all five requests arrived in one write').toEqual([5]);
  });

  it('sends again what a server closing its connection (Connection: close, or a plain close) left unanswered', async () => {
    const s = await scripted((req, socket, n) => {
      const body = `body of ${req.path}`;
      // The first connection answers two requests and says it closes; the second answers one and just closes.
      if (n === 1) socket.end(`HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      else if (n === 2) socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      else if (n === 0 || n > 2) socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    servers.push(s.server);
    const pool = new PipelinePool('127.0.0.1', s.port, { connections: 1 });
    pools.push(pool);
    const host = `127.0.0.1:${s.port}`;
    const paths = ['/1', '/2', '/3', '/4', '/5', '/6'];
    const got = await Promise.all(paths.map((p) => text(pool.request('GET', p, host))));
    expect(got).toEqual(paths.map((p) => `200 body of ${p}`));
    expect(s.connections()).toBe(3);
  });

  it('fails the request whose response breaks off, and only that one', async () => {
    const s = await scripted((req, socket) => {
      if (req.path === '/broken') {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part');
        setTimeout(() => socket.destroy(), 20);
      } else socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`);
    });
    servers.push(s.server);
    const pool = new PipelinePool('127.0.0.1', s.port, { connections: 1 });
    pools.push(pool);
    const host = `127.0.0.1:${s.port}`;
    const [a, broken, after] = await Promise.allSettled([text(pool.request('GET', '/a', host)), text(pool.request('GET', '/broken', host)), text(pool.request('GET', '/after', host))]);
    expect(a).toEqual({ status: 'fulfilled', value: '200 ok' });
    expect(broken.status).toBe('rejected');
    expect((broken as PromiseRejectedResult).reason.code).toBe('ECONNRESET');
    expect(after).toEqual({ status: 'fulfilled', value: '200 ok' });
  });

  it('streams a large body with backpressure, and a body read to the end of the connection', async () => {
    const big = Buffer.alloc(8 << 20, 7);
    const s = await scripted((req, socket) => {
      if (req.path === '/big') socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`), big]));
      else socket.end('HTTP/1.0 200 OK\r\n\r\nuntil close');
    });
    servers.push(s.server);
    const pool = new PipelinePool('127.0.0.1', s.port, { connections: 1 });
    pools.push(pool);
    const host = `127.0.0.1:${s.port}`;
    const r = await pool.request('GET', '/big', host);
    const h = createHash('sha256');
    let size = 0;
    for await (const c of r.body) {
      h.update(c as Buffer);
      size += (c as Buffer).length;
      await new Promise((res) => setImmediate(res)); // a slow reader
    }
    expect(size).toBe(big.length);
    expect(h.digest('hex')).toBe(createHash('sha256').update(big).digest('hex'));
    expect(await text(pool.request('GET', '/eof', host))).toBe('200 until close');
  });

  it('refuses a malformed status line and gives up on a connection refused', async () => {
    const s = await scripted((_req, socket) => socket.write('SPDY/9 what\r\n\r\n'));
    servers.push(s.server);
    const pool = new PipelinePool('127.0.0.1', s.port, { connections: 1 });
    pools.push(pool);
    const e = await pool.request('GET', '/x', 'h').catch((x: unknown) => x);
    expect((e as { code?: string }).code).toBe('HPE_INVALID_CONSTANT');
    await new Promise<void>((r) => s.server.close(() => r()));
    servers.pop();
    const refused = await new PipelinePool('127.0.0.1', s.port).request('GET', '/x', 'h').catch((x: unknown) => x);
    expect((refused as { code?: string }).code).toBe('ECONNREFUSED');
  });
});
