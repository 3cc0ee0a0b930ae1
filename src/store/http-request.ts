/**
 * One HTTP(S) request as Nix 2.8's file transfer (curl) makes it, for the binary-cache transport
 * and for `builtin:fetchurl`: redirects followed (at most 10 per attempt), and transient failures
 * (network errors, 408, 429, most 5xx) retried with Nix's exponential backoff, every attempt
 * starting again from the URL asked for. An AbortSignal stops the request, its body and the wait
 * between attempts. Each caller phrases the failures in its own words.
 */
import * as http from 'node:http';
import type * as https from 'node:https';
import type { Readable } from 'node:stream';

import { StrataError } from '../core/error.js';

/** Redirects followed per attempt, as many as Nix's curl follows (CURLOPT_MAXREDIRS). */
export const MAX_REDIRECTS = 10;
/** The statuses a redirect is followed for. */
export const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** A response whose status was read; `body` streams the rest. */
export interface HttpResponse {
  statusCode: number;
  statusMessage: string;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

/** What an attempt that is retried ended with: a network error or a transient status. */
export type RetryCause = { error: unknown } | { response: HttpResponse };

export interface HttpRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** The request body, made again for every attempt. */
  body?: () => Buffer | Readable;
  /** Attempts in all (Nix's download-attempts is 5). */
  attempts: number;
  /** The first wait between attempts, in ms (Nix's baseRetryTimeMs is 250). */
  baseDelayMs: number;
  /**
   * Attempts the caller made already its own way: the first attempt here waits the backoff
   * that would follow the last of those, and the backoff goes on growing from there.
   */
  firstDelayAttempt?: number;
  /** Redirects are followed unless false (an upload's body is not sent twice). */
  followRedirects?: boolean;
  /** The agent for `protocol` (`http:` or `https:`); Node's global one when absent. */
  agent?: (protocol: string) => Promise<http.Agent>;
  /** `user:password` to send to `url`, if any. */
  auth?: (url: URL) => string | undefined;
  /** Ms to wait for a connection, for the headers, and between body chunks (none when absent). */
  timeoutMs?: number;
  /** Accept any TLS certificate (builtin:fetchurl: the output's hash is checked anyway). */
  insecure?: boolean;
  signal?: AbortSignal | undefined;
  /** Told before each wait for another attempt. */
  onRetry?: (cause: RetryCause, delayMs: number) => void;
}

/** Why a request gave up without a response to return. */
export type HttpFailure =
  | { kind: 'network'; error: unknown }
  | { kind: 'too-many-redirects'; status: number }
  | { kind: 'bad-redirect'; status: number; location: string }
  | { kind: 'aborted' };

/** A request that gave up; callers turn it into their own error. */
export class HttpRequestError extends StrataError {
  constructor(
    url: string,
    readonly failure: HttpFailure,
  ) {
    super('HTTP_REQUEST_FAILED', `Cannot request '${url}': ${failure.kind}`, { value: url });
  }
}

/** Whether Nix retries a failed HTTP status (filetransfer.cc's classification). */
export function transientStatus(status: number): boolean {
  if (status >= 500) return status !== 501 && status !== 505 && status !== 511;
  return status === 408 || status === 429;
}

/** Reads and discards the rest of a body, so its connection goes back to the pool. */
export function dump(body: Readable): Promise<void> {
  return new Promise((resolve) => {
    if (body.readableEnded || body.destroyed) return resolve();
    body.once('end', resolve).once('close', resolve).once('error', () => resolve());
    body.resume();
  });
}

/** Nix's wait after failed attempt `n` (from 1): base × 2^(n-1+U(0, 0.5)) ms. */
function backoff(baseMs: number, n: number): number {
  return Math.round(baseMs * 2 ** (n - 1 + Math.random() * 0.5));
}

/** Waits `ms`, or less when `signal` aborts (the caller then checks it). */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((res) => {
    // The listener goes when the wait ends: one signal may outlive many requests (a whole build).
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      res();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

let httpsModule: Promise<typeof https> | undefined;

/** One request, no redirect followed: resolves once the status and headers are in. */
async function send(url: URL, o: HttpRequestOptions): Promise<HttpResponse> {
  // `https` (and TLS) is loaded only when used.
  const request: typeof http.request = url.protocol === 'https:' ? (await (httpsModule ??= import('node:https'))).request : http.request;
  const agent = await o.agent?.(url.protocol);
  const body = o.body?.();
  return new Promise<HttpResponse>((resolve, reject) => {
    const options: https.RequestOptions = {
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      auth: o.auth?.(url),
      port: url.port,
      path: `${url.pathname}${url.search}`,
      method: o.method ?? 'GET',
      headers: o.headers ?? {},
      ...(agent ? { agent } : {}),
      ...(o.insecure ? { rejectUnauthorized: false } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    };
    const req = request(options);
    const timeout = o.timeoutMs;
    if (timeout !== undefined)
      req.setTimeout(timeout, () => req.destroy(Object.assign(new Error(`no answer for ${timeout / 1000} s`), { code: 'ETIMEDOUT' })));
    req.once('error', reject);
    req.once('response', (res) => {
      // Errors after the headers (a reset, the timeout) reach the body's reader.
      req.removeListener('error', reject);
      req.on('error', (e) => res.destroy(e));
      resolve({ statusCode: res.statusCode ?? 0, statusMessage: res.statusMessage ?? '', headers: res.headers, body: res });
    });
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else {
      body.once('error', (e) => req.destroy(e));
      body.pipe(req);
    }
  });
}

/** One attempt: `url` with its redirects followed. */
async function attempt(url: URL, o: HttpRequestOptions): Promise<HttpResponse> {
  let current = url;
  for (let redirects = 0; ; redirects++) {
    const res = await send(current, o);
    const location = res.headers.location;
    if (o.followRedirects === false || !REDIRECT_STATUSES.has(res.statusCode) || location === undefined) return res;
    await dump(res.body);
    const next = URL.canParse(location, current.href) ? new URL(location, current) : undefined;
    if (next === undefined || (next.protocol !== 'http:' && next.protocol !== 'https:'))
      throw new HttpRequestError(url.href, { kind: 'bad-redirect', status: res.statusCode, location });
    if (redirects >= MAX_REDIRECTS) throw new HttpRequestError(url.href, { kind: 'too-many-redirects', status: res.statusCode });
    current = next;
  }
}

/**
 * Requests `url`, retrying as Nix does. Resolves with the last response: a 2xx, or a status that
 * is not transient or was the last attempt's (its body unread); throws {@link HttpRequestError}
 * for a network error on the last attempt, a redirect it will not follow, or an abort.
 *
 * @example const res = await httpRequest(new URL('http://cache/nix-cache-info'), { attempts: 5, baseDelayMs: 250 });
 */
export async function httpRequest(url: URL, o: HttpRequestOptions): Promise<HttpResponse> {
  const aborted = () => new HttpRequestError(url.href, { kind: 'aborted' });
  const before = o.firstDelayAttempt ?? 0;
  if (before > 0) await sleep(backoff(o.baseDelayMs, before), o.signal);
  for (let n = 1; ; n++) {
    if (o.signal?.aborted) throw aborted();
    let cause: RetryCause;
    try {
      const res = await attempt(url, o);
      if (!transientStatus(res.statusCode) || n >= o.attempts) return res;
      await dump(res.body);
      cause = { response: res };
    } catch (e) {
      if (o.signal?.aborted) throw aborted();
      if (e instanceof HttpRequestError) throw e;
      if (n >= o.attempts) throw new HttpRequestError(url.href, { kind: 'network', error: e });
      cause = { error: e };
    }
    const ms = backoff(o.baseDelayMs, before + n);
    o.onRetry?.(cause, ms);
    await sleep(ms, o.signal);
  }
}
