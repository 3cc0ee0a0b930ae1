/**
 * `http://` and `https://` caches over undici: one keep-alive Agent per store with a few
 * connections, so many narinfo requests are in flight at once and no request pays for a TCP
 * handshake; timeouts, and retries with exponential backoff for what may be transient.
 */
import { createReadStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { Readable } from 'node:stream';

import { Agent, type Dispatcher } from 'undici';

import { StrataError } from '../../core/error.js';
import { CACHE_KEY_RE, type CacheTransport } from './transport.js';

/** Options for {@link HttpTransport}. */
export interface HttpTransportOptions {
  /** Seconds to wait for response headers, and between body chunks (default 30). */
  timeout?: number | undefined;
  /** Extra attempts after a network error, 429 or 5xx (default 4: Nix's download-attempts is 5). */
  retries?: number | undefined;
  /** Connections per origin (default 8: enough to hide 1 ms latency for 300-path closures). */
  connections?: number | undefined;
  /** First backoff in ms, doubled per attempt (default 200). Tests make it small. */
  backoffMs?: number | undefined;
}

// A narinfo is at most 1 MiB (MAX_NARINFO_BYTES); small files over 4 MiB are refused unread.
const MAX_SMALL_FILE = 4 * 1024 * 1024;

function retryable(status: number): boolean {
  return status === 429 || status >= 500;
}

function describe(e: unknown): string {
  const err = e as { message?: string; code?: string };
  const msg = (err.message ?? String(e)).split('\n')[0]!.replace(/\.$/, '');
  return err.code && !msg.includes(err.code) ? `${msg} (${err.code})` : msg;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A binary cache served over HTTP(S). */
export class HttpTransport implements CacheTransport {
  readonly uri: string;
  readonly #origin: string;
  readonly #basePath: string;
  readonly #agent: Agent;
  readonly #retries: number;
  readonly #backoff: number;

  constructor(url: string, options: HttpTransportOptions = {}) {
    const u = new URL(url);
    this.uri = url;
    this.#origin = u.origin;
    this.#basePath = u.pathname.replace(/\/+$/, '');
    const timeout = (options.timeout ?? 30) * 1000;
    this.#retries = options.retries ?? 4;
    this.#backoff = options.backoffMs ?? 200;
    this.#agent = new Agent({
      connections: options.connections ?? 8,
      keepAliveTimeout: 30_000,
      headersTimeout: timeout,
      bodyTimeout: timeout,
      connectTimeout: timeout,
    });
  }

  #url(key: string): string {
    return `${this.#origin}${this.#basePath}/${key}`;
  }

  #check(key: string): void {
    if (!CACHE_KEY_RE.test(key)) {
      throw new StrataError('CACHE_KEY_INVALID', `Cannot access '${key}' in '${this.uri}': it is not a cache file name`, { value: key });
    }
  }

  /**
   * One request with retries. Returns the response for 2xx, `undefined` for 404/403 (both mean
   * "not there" to Nix), and throws `HTTP_ERROR` for anything else once retries are spent.
   */
  async #request(method: Dispatcher.HttpMethod, key: string, body?: () => Buffer | Readable, headers: Record<string, string> = {}): Promise<Dispatcher.ResponseData | undefined> {
    this.#check(key);
    const action = method === 'PUT' ? 'upload' : 'fetch';
    let last: string;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await sleep(this.#backoff * 2 ** (attempt - 1) * (0.75 + Math.random() / 2));
      let res: Dispatcher.ResponseData;
      try {
        res = await this.#agent.request({ origin: this.#origin, path: `${this.#basePath}/${key}`, method, headers, body: body?.() ?? null });
      } catch (e) {
        last = describe(e);
        if (attempt < this.#retries) continue;
        break;
      }
      if (res.statusCode >= 200 && res.statusCode < 300) return res;
      await res.body.dump().catch(() => {});
      if (res.statusCode === 404 || res.statusCode === 403) return undefined;
      last = `HTTP ${res.statusCode}`;
      if (!retryable(res.statusCode) || attempt >= this.#retries) break;
    }
    const attempts = this.#retries + 1;
    throw new StrataError('HTTP_ERROR', `Cannot ${action} '${this.#url(key)}': ${last}${attempts > 1 ? ` (after up to ${attempts} attempts)` : ''}`, { value: this.#url(key) });
  }

  async getFile(key: string): Promise<Buffer | undefined> {
    const res = await this.#request('GET', key);
    if (!res) return undefined;
    const declared = Number(res.headers['content-length'] ?? 0);
    if (declared > MAX_SMALL_FILE) {
      res.body.destroy();
      throw new StrataError('HTTP_ERROR', `Cannot fetch '${this.#url(key)}': it is larger than ${MAX_SMALL_FILE} bytes`, { value: this.#url(key) });
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const c of res.body) {
        total += (c as Buffer).length;
        if (total > MAX_SMALL_FILE) {
          res.body.destroy();
          throw new StrataError('HTTP_ERROR', `Cannot fetch '${this.#url(key)}': it is larger than ${MAX_SMALL_FILE} bytes`, { value: this.#url(key) });
        }
        chunks.push(c as Buffer);
      }
    } catch (e) {
      if (e instanceof StrataError) throw e;
      throw new StrataError('HTTP_ERROR', `Cannot fetch '${this.#url(key)}': ${describe(e)}`, { value: this.#url(key), cause: e });
    }
    return Buffer.concat(chunks);
  }

  async getStream(key: string): Promise<Readable | undefined> {
    const res = await this.#request('GET', key);
    return res?.body;
  }

  async exists(key: string): Promise<boolean> {
    const res = await this.#request('HEAD', key);
    if (!res) return false;
    await res.body.dump().catch(() => {});
    return true;
  }

  async putFile(key: string, body: Buffer | (() => Readable), contentType: string, size?: number): Promise<void> {
    const headers: Record<string, string> = { 'content-type': contentType };
    const length = Buffer.isBuffer(body) ? body.length : size;
    if (length !== undefined) headers['content-length'] = String(length);
    const res = await this.#request('PUT', key, Buffer.isBuffer(body) ? () => body : body, headers);
    if (!res) throw new StrataError('HTTP_ERROR', `Cannot upload '${this.#url(key)}': the server refused it (403/404)`, { value: this.#url(key) });
    await res.body.dump().catch(() => {});
  }

  async putLocalFile(key: string, localPath: string, contentType: string): Promise<void> {
    try {
      const { size } = await stat(localPath);
      await this.putFile(key, () => createReadStream(localPath, { highWaterMark: 1 << 20 }), contentType, size);
    } finally {
      await rm(localPath, { force: true });
    }
  }

  async stagingDir(): Promise<string> {
    return tmpdir();
  }

  async list(_suffix: string): Promise<string[]> {
    throw new StrataError('UNSUPPORTED', `Cannot list '${this.uri}': HTTP caches cannot be listed`, { value: this.uri });
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}
