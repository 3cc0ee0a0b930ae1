/**
 * `http://` and `https://` caches over Node's own `http` client: one keep-alive Agent per store
 * with a few connections, so many narinfo requests are in flight at once and no request pays for
 * a TCP handshake; timeouts, retries with exponential backoff for what may be transient, and
 * redirects followed (and absolute NAR URLs read) as Nix's curl does.
 * Node's client rather than undici: loading undici (1 MB of JavaScript and a WebAssembly HTTP
 * parser) cost 150-300 ms of every `strata copy --from http://…` here, more than the 300 narinfo
 * and NAR requests of a whole closure; `node:http` is part of Node's start-up snapshot.
 * Small files of a plain-http cache (narinfos, small NARs) go first through the lean client of
 * src/store/http-get-pool.ts, a quarter of node:http's cost per request; what it declines comes
 * here.
 */
import { createReadStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import type { Readable } from 'node:stream';

import { StrataError } from '../../core/error.js';
import { HttpGetPool, TIMED_OUT } from '../http-get-pool.js';
import { dump, httpRequest, HttpRequestError, type HttpResponse, MAX_REDIRECTS, REDIRECT_STATUSES, transientStatus } from '../http-request.js';
import { readAtMost } from '../read-at-most.js';
import { CACHE_KEY_RE, type CacheTransport } from './transport.js';

/** Options for {@link HttpTransport}. */
export interface HttpTransportOptions {
  /** Seconds to wait for a connection, for response headers, and between body chunks (default 30). */
  timeout?: number | undefined;
  /** Extra attempts after a network error, 408, 429 or most 5xx (default 4: Nix's download-attempts is 5). */
  retries?: number | undefined;
  /** Connections per origin (default 8: enough to hide 1 ms latency for 300-path closures). */
  connections?: number | undefined;
  /** First backoff in ms, doubled per attempt (default 250, Nix's baseRetryTimeMs). Tests make it small. */
  backoffMs?: number | undefined;
}

// A narinfo is at most 1 MiB (MAX_NARINFO_BYTES); small files over 4 MiB are refused unread.
const MAX_SMALL_FILE = 4 * 1024 * 1024;

function describe(e: unknown): string {
  const err = e as { message?: string; code?: string };
  const msg = (err.message ?? String(e)).split('\n')[0]!.replace(/\.$/, '');
  return err.code && !msg.includes(err.code) ? `${msg} (${err.code})` : msg;
}

/**
 * A narinfo's URL may be absolute (NARs kept on another server): Nix 2.8 fetches an `http(s)://`
 * URL as it is. Only for reading: keys written are always the cache's own.
 */
const ABSOLUTE_RE = /^https?:\/\//;

/** A URL's `user:password`, decoded, or undefined when it names none. */
function userinfo(u: URL): string | undefined {
  if (u.username === '' && u.password === '') return undefined;
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s; // a stray '%': taken as written
    }
  };
  return `${decode(u.username)}:${decode(u.password)}`;
}

/** A binary cache served over HTTP(S). */
export class HttpTransport implements CacheTransport {
  readonly uri: string;
  readonly #origin: string;
  /** `user:password` from the cache URL, sent (as curl sends it) to the cache's own origin only. */
  readonly #auth: string | undefined;
  readonly #basePath: string;
  readonly #agentOptions: http.AgentOptions;
  /** One agent per protocol: a redirect or an absolute NAR URL may lead from http to https. */
  readonly #agents = new Map<string, Promise<http.Agent>>();
  readonly #timeout: number;
  readonly #retries: number;
  readonly #backoff: number;
  /** GETs of small files the plain way (src/store/http-get-pool.ts), when the cache is plain http. */
  readonly #lean: HttpGetPool | undefined;

  constructor(url: string, options: HttpTransportOptions = {}) {
    const u = new URL(url);
    this.#auth = userinfo(u);
    // The password stays out of messages and of the disk cache's key.
    this.uri = this.#auth === undefined ? url : url.replace(/^([a-z]+:\/\/)[^@/]*@/i, '$1');
    this.#origin = u.origin;
    this.#basePath = u.pathname.replace(/\/+$/, '');
    this.#timeout = (options.timeout ?? 30) * 1000;
    this.#retries = options.retries ?? 4;
    this.#backoff = options.backoffMs ?? 250;
    // Idle keep-alive connections are kept 30 s, as long as nginx's default keepalive_timeout
    // (75 s) and Nix's curl would keep them.
    this.#agentOptions = { keepAlive: true, maxSockets: options.connections ?? 8, timeout: 30_000, scheduling: 'lifo' };
    // Small files of a plain-http cache without credentials: narinfos, walked one per level.
    if (u.protocol === 'http:' && this.#auth === undefined) {
      this.#lean = new HttpGetPool(u.hostname.replace(/^\[|\]$/g, ''), Number(u.port || 80), u.host, { maxSockets: options.connections ?? 8, timeoutMs: this.#timeout });
    }
  }

  /** The agent of `protocol`, created on first use: `https` (and TLS) is loaded only when used. */
  #agent(protocol: string): Promise<http.Agent> {
    let agent = this.#agents.get(protocol);
    if (!agent) {
      agent = protocol === 'https:' ? import('node:https').then((mod) => new mod.Agent(this.#agentOptions)) : Promise.resolve(new http.Agent(this.#agentOptions));
      this.#agents.set(protocol, agent);
    }
    return agent;
  }

  #url(key: string): string {
    return ABSOLUTE_RE.test(key) ? key : `${this.#origin}${this.#basePath}/${key}`;
  }

  /** Where `key` is fetched from: a cache file name under the cache's URL, or (reading) an absolute http(s) URL. */
  #target(method: string, key: string): URL {
    if (ABSOLUTE_RE.test(key) && method !== 'PUT') {
      try {
        return new URL(key);
      } catch {
        // Refused below, as any other odd key.
      }
    } else if (CACHE_KEY_RE.test(key)) return new URL(this.#url(key));
    throw new StrataError('CACHE_KEY_INVALID', `Cannot access '${key}' in '${this.uri}': it is not a cache file name`, { value: key });
  }

  /**
   * One request with retries. Returns the response for 2xx, `undefined` for 404/403 (both mean
   * "not there" to Nix), and throws `HTTP_ERROR` for anything else once retries are spent.
   */
  async #request(method: string, key: string, body?: () => Buffer | Readable, headers: Record<string, string> = {}, spent = 0): Promise<HttpResponse | undefined> {
    const fail = (why: string) => this.#failure(method, key, why);
    let res: HttpResponse;
    try {
      res = await httpRequest(this.#target(method, key), {
        method,
        headers,
        ...(body ? { body } : {}),
        attempts: this.#retries + 1 - spent,
        // An attempt already made (the lean client's) is waited after, as between any two.
        ...(spent > 0 ? { firstDelayAttempt: spent } : {}),
        baseDelayMs: this.#backoff,
        // Followed as Nix's curl does (a CDN, a moved cache); an upload's body is not sent twice.
        followRedirects: method !== 'PUT',
        agent: (protocol) => this.#agent(protocol),
        auth: (url) => (url.origin === this.#origin ? this.#auth : userinfo(url)),
        timeoutMs: this.#timeout,
      });
    } catch (e) {
      if (!(e instanceof HttpRequestError)) throw e;
      const f = e.failure;
      if (f.kind === 'network') throw fail(describe(f.error));
      if (f.kind === 'too-many-redirects') throw fail(`HTTP ${f.status} after ${MAX_REDIRECTS} redirects`);
      if (f.kind === 'bad-redirect') throw fail(`HTTP ${f.status} to '${f.location}', which is not an http(s) URL`);
      throw fail('interrupted');
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    await dump(res.body);
    if (res.statusCode === 404 || res.statusCode === 403) return undefined;
    throw fail(`HTTP ${res.statusCode}`);
  }

  #failure(method: string, key: string, why: string): StrataError {
    const attempts = this.#retries + 1;
    return new StrataError('HTTP_ERROR', `Cannot ${method === 'PUT' ? 'upload' : 'fetch'} '${this.#url(key)}': ${why}${attempts > 1 ? ` (after up to ${attempts} attempts)` : ''}`, { value: this.#url(key) });
  }

  async getFile(key: string): Promise<Buffer | undefined> {
    const file = await this.getSmall(key, MAX_SMALL_FILE);
    if (file === null) throw new StrataError('HTTP_ERROR', `Cannot fetch '${this.#url(key)}': it is larger than ${MAX_SMALL_FILE} bytes`, { value: this.#url(key) });
    return file;
  }

  async getSmall(key: string, limit: number): Promise<Buffer | null | undefined> {
    // The plain case on the lean client; anything else (a redirect, an error status, a network
    // error) is asked again the full way, which retries, follows and words it.
    const lean = this.#lean && CACHE_KEY_RE.test(key) ? await this.#lean.get(`${this.#basePath}/${key}`, limit) : undefined;
    // The lean answer counts as an attempt: a status Nix does not retry is final, a transient
    // one is tried again after the backoff. A network error or a redirect starts over.
    let spent = 0;
    if (lean === TIMED_OUT) {
      if (this.#retries === 0) throw this.#failure('GET', key, `no answer for ${this.#timeout / 1000} s (ETIMEDOUT)`);
      spent = 1;
    } else if (lean) {
      if (lean.status >= 200 && lean.status < 300) return lean.body ?? null;
      if (lean.status === 404 || lean.status === 403) return undefined;
      const retried = transientStatus(lean.status) && this.#retries > 0;
      if (!retried && !REDIRECT_STATUSES.has(lean.status)) throw this.#failure('GET', key, `HTTP ${lean.status}`);
      if (retried) spent = 1;
    }
    const res = await this.#request('GET', key, undefined, {}, spent);
    if (!res) return undefined;
    if (Number(res.headers['content-length'] ?? 0) > limit) {
      res.body.destroy();
      return null;
    }
    try {
      return (await readAtMost(res.body, limit)) ?? null;
    } catch (e) {
      if (e instanceof StrataError) throw e;
      throw new StrataError('HTTP_ERROR', `Cannot fetch '${this.#url(key)}': ${describe(e)}`, { value: this.#url(key), cause: e });
    }
  }

  async getStream(key: string): Promise<Readable | undefined> {
    const res = await this.#request('GET', key);
    return res?.body;
  }

  async exists(key: string): Promise<boolean> {
    const res = await this.#request('HEAD', key);
    if (!res) return false;
    await dump(res.body);
    return true;
  }

  async putFile(key: string, body: Buffer | (() => Readable), contentType: string, size?: number): Promise<void> {
    const headers: Record<string, string> = { 'content-type': contentType };
    const length = Buffer.isBuffer(body) ? body.length : size;
    if (length !== undefined) headers['content-length'] = String(length);
    const res = await this.#request('PUT', key, Buffer.isBuffer(body) ? () => body : body, headers);
    if (!res) throw new StrataError('HTTP_ERROR', `Cannot upload '${this.#url(key)}': the server refused it (403/404)`, { value: this.#url(key) });
    await dump(res.body);
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
    this.#lean?.close();
    for (const agent of this.#agents.values()) (await agent).destroy();
  }
}
