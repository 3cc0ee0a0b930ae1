/**
 * The lean GET client against real servers on loopback: Node's http server for the ordinary
 * framings, and raw sockets for what a cache might send besides (HTTP/1.0, a body ended by the
 * close, garbage, a stall). Whatever it does not handle must come back `undefined`, never as a
 * wrong answer.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { HttpGetPool, type SmallResponse, TIMED_OUT } from '../../src/store/http-get-pool.js';

const servers: Array<HttpServer | Server> = [];
const pools: HttpGetPool[] = [];

afterEach(async () => {
  for (const p of pools.splice(0)) p.close();
  for (const s of servers.splice(0)) {
    if ('closeAllConnections' in s) s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

async function listening<S extends HttpServer | Server>(server: S): Promise<{ server: S; pool: (timeoutMs?: number, maxSockets?: number) => HttpGetPool }> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    pool: (timeoutMs = 5000, maxSockets = 8) => {
      const p = new HttpGetPool('127.0.0.1', port, `127.0.0.1:${port}`, { timeoutMs, maxSockets });
      pools.push(p);
      return p;
    },
  };
}

/** A GET that must not time out. */
async function get(pool: HttpGetPool, path: string, limit: number): Promise<SmallResponse | undefined> {
  const r = await pool.get(path, limit);
  if (r === TIMED_OUT) throw new Error(`${path} timed out`);
  return r;
}

/** A raw server answering every request (read up to its empty line) with `answer`. */
function rawServer(answer: (socket: Socket, n: number) => void): Server {
  let n = 0;
  return createNetServer((socket) => {
    let seen = '';
    socket.on('data', (d) => {
      seen += d.toString('latin1');
      while (seen.includes('\r\n\r\n')) {
        seen = seen.slice(seen.indexOf('\r\n\r\n') + 4);
        answer(socket, n++);
      }
    });
    socket.on('error', () => {});
  });
}

describe('HttpGetPool', () => {
  it('reads Content-Length and chunked bodies, 404s as statuses, all over one kept-alive socket', async () => {
    let connections = 0;
    const { server, pool } = await listening(
      createServer((req, res) => {
        if (req.url === '/fixed') res.writeHead(200, { 'content-length': '5' }).end('fixed');
        else if (req.url === '/chunked') {
          res.writeHead(200); // no length: Node's server sends it chunked
          res.write('chun');
          setTimeout(() => res.end('ked'), 5);
        } else res.writeHead(404, { 'content-length': '3' }).end('no\n');
      }),
    );
    server.on('connection', () => connections++);
    const p = pool();
    for (let i = 0; i < 20; i++) {
      const fixed = await get(p, '/fixed', 100);
      expect([fixed?.status, fixed?.body?.toString()]).toEqual([200, 'fixed']);
      const chunked = await get(p, '/chunked', 100);
      expect([chunked?.status, chunked?.body?.toString()]).toEqual([200, 'chunked']);
      expect((await get(p, '/missing', 100))?.status).toBe(404);
    }
    expect(connections).toBe(1);
  });

  it('chunk extensions and trailers, an HTTP/1.0 answer ended by the close, and Connection: close', async () => {
    const { server, pool } = await listening(
      rawServer((s, n) => {
        if (n === 0) s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n');
        else if (n === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok', () => s.end());
        else s.end('HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end');
      }),
    );
    let connections = 0;
    server.on('connection', () => connections++);
    const p = pool();
    expect((await get(p, '/a', 100))?.body?.toString()).toBe('abcde');
    expect((await get(p, '/b', 100))?.body?.toString()).toBe('ok');
    expect((await get(p, '/c', 100))?.body?.toString()).toBe('until the end');
    // The chunked answer's socket was kept; the two that said close were not.
    expect(connections).toBe(2);
  });

  it('a body over the limit comes back without its bytes, by its length or as its chunks arrive', async () => {
    const { pool } = await listening(
      createServer((req, res) => {
        if (req.url === '/long') res.writeHead(200, { 'content-length': String(1 << 20) }).end(Buffer.alloc(1 << 20));
        else {
          res.writeHead(200);
          for (let i = 0; i < 10; i++) res.write(Buffer.alloc(1000));
          res.end();
        }
      }),
    );
    const p = pool();
    expect(await get(p, '/long', 1000)).toEqual({ status: 200, body: undefined });
    expect(await get(p, '/chunks', 5000)).toEqual({ status: 200, body: undefined });
    expect((await get(p, '/chunks', 10_000))?.body?.length).toBe(10_000);
  });

  it('gives undefined for what it does not handle: refused, cut, garbage, informational, silent', async () => {
    const { pool: refusedPool } = await listening(createNetServer((s) => s.destroy()));
    expect(await get(refusedPool(), '/x', 100)).toBeUndefined();
    const { pool } = await listening(
      rawServer((s, n) => {
        if (n === 0) s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort', () => s.destroy());
        else if (n === 1) s.end('HELLO\r\n\r\n');
        else if (n === 2) s.write('HTTP/1.1 100 Continue\r\n\r\n');
        else if (n === 3) s.write('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx');
        // else: no answer at all
      }),
    );
    const p = pool(300);
    for (let i = 0; i < 4; i++) expect(await get(p, '/x', 100), `answer ${i}`).toBeUndefined();
    const started = Date.now();
    expect(await p.get('/silent', 100), 'a stall is told apart: it counts as an attempt').toBe(TIMED_OUT);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('a kept-alive socket the server closed meanwhile is replaced, not reported', async () => {
    const { server, pool } = await listening(createServer((_req, res) => res.writeHead(200, { 'content-length': '2' }).end('ok')));
    server.keepAliveTimeout = 20;
    const p = pool();
    expect((await get(p, '/a', 100))?.body?.toString()).toBe('ok');
    await new Promise((r) => setTimeout(r, 150));
    expect((await get(p, '/b', 100))?.body?.toString()).toBe('ok');
    // Closed just as the next request went out: that request is made again on a new socket.
    const { pool: rawPool } = await listening(
      rawServer((s, n) => {
        if (n === 1) s.destroy();
        else s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }),
    );
    const q = rawPool();
    expect((await get(q, '/a', 100))?.body?.toString()).toBe('ok');
    expect((await get(q, '/b', 100))?.body?.toString()).toBe('ok');
  });

  it('keeps at most maxSockets open; requests beyond wait their turn; close() ends the rest', async () => {
    let open = 0;
    let most = 0;
    const { server, pool } = await listening(createServer((req, res) => setTimeout(() => res.writeHead(200, { 'content-length': String(req.url!.length) }).end(req.url), 10)));
    server.on('connection', (s) => {
      most = Math.max(most, ++open);
      s.on('close', () => open--);
    });
    const p = pool(5000, 2);
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => get(p, `/${i}`, 100)));
    expect(answers.map((a) => a?.body?.toString())).toEqual(['/0', '/1', '/2', '/3', '/4', '/5']);
    expect(most).toBe(2);
    p.close();
    expect(await get(p, '/after', 100)).toBeUndefined();
  });
});
