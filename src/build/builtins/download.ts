/**
 * Downloads for `builtin:fetchurl`, as Nix 2.8's file transfer does them with curl: `file://`,
 * `http://` and `https://`, redirects followed, no TLS verification (the result's hash is checked
 * anyway), no content decoding, and transient failures (connection errors, 408, 429, most 5xx)
 * retried up to 5 times with exponential backoff while nothing has been received yet. Errors read
 * as Nix's: `unable to download 'URL': …`.
 */
import { createReadStream } from 'node:fs';
import * as http from 'node:http';
import type * as https from 'node:https';
import type { Readable } from 'node:stream';

import { StrataError } from '../../core/error.js';

/** Nix's `download-attempts` default. */
const ATTEMPTS = 5;
/** Nix's `baseRetryTimeMs`. */
const BASE_RETRY_MS = 250;
/** curl's redirect limit as Nix sets it (CURLOPT_MAXREDIRS). */
const MAX_REDIRECTS = 10;

/** A download that failed; `transient` ones are worth another attempt. */
class DownloadError extends StrataError {
  constructor(
    url: string,
    why: string,
    readonly transient: boolean,
  ) {
    super('DOWNLOAD_FAILED', `unable to download '${url}': ${why}`, { value: url });
  }
}

/** Whether Nix retries a failed HTTP status (filetransfer.cc's classification). */
function transientStatus(status: number): boolean {
  if (status >= 400 && status < 500) return status === 408 || status === 429;
  return status !== 501 && status !== 505 && status !== 511;
}

/** Waits `ms`, or less when `signal` aborts (the caller then checks it). */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((res) => {
    const t = setTimeout(res, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), res()), { once: true });
  });
}

/**
 * Opens `url` for reading: resolves once the body can be read (a 2xx response, or an open
 * file). Throws `DOWNLOAD_FAILED` naming the URL. `warn` receives the retry notices; `signal`
 * stops the download, the body included (an interrupted realise must not wait for a stalled server).
 *
 * @example (await openDownload('file:///tmp/x', console.warn)).pipe(sink);
 */
export async function openDownload(url: string, warn: (line: string) => void, signal?: AbortSignal): Promise<Readable> {
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw new DownloadError(url, 'interrupted', false);
    try {
      return await openOnce(url, signal);
    } catch (e) {
      if (signal?.aborted) throw new DownloadError(url, 'interrupted', false);
      if (!(e instanceof DownloadError) || !e.transient || attempt >= ATTEMPTS) throw e;
      const ms = Math.round(BASE_RETRY_MS * 2 ** (attempt - 1 + Math.random() * 0.5));
      warn(`warning: ${e.message}; retrying in ${ms} ms`);
      await sleep(ms, signal);
    }
  }
}

async function openOnce(url: string, signal: AbortSignal | undefined): Promise<Readable> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DownloadError(url, 'URL using bad/illegal format or missing URL (3)', false);
  }
  if (parsed.protocol === 'file:') return openFile(url, parsed, signal);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new DownloadError(url, 'Unsupported protocol (1)', false);
  let current = parsed;
  for (let redirects = 0; ; redirects++) {
    const res = await get(url, current, signal);
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (status >= 300 && status < 400 && location !== undefined) {
      res.resume();
      if (redirects >= MAX_REDIRECTS)
        throw new DownloadError(url, `Number of redirects hit maximum amount (47)`, false);
      current = new URL(location, current);
      if (current.protocol !== 'http:' && current.protocol !== 'https:')
        throw new DownloadError(url, 'Unsupported protocol (1)', false);
      continue;
    }
    if (status < 200 || status >= 300) {
      res.resume();
      throw new DownloadError(url, `HTTP error ${status} ('${res.statusMessage ?? ''}')`, transientStatus(status));
    }
    return res;
  }
}

async function get(url: string, target: URL, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
  const request: typeof http.request =
    target.protocol === 'https:'
      ? ((await import('node:https')) as typeof https).request
      : http.request;
  return new Promise((resolve, reject) => {
    // No TLS verification, as Nix's builtin: the output's hash is checked anyway.
    const options: https.RequestOptions = { method: 'GET', rejectUnauthorized: false, signal };
    const req = request(target, options, resolve);
    req.on('error', (e) => reject(new DownloadError(url, `${(e as NodeJS.ErrnoException).code ?? e.message} (${e.message})`, true)));
    req.end();
  });
}

/** A `file://` URL: the file itself, opened before the caller starts writing anything. */
function openFile(url: string, parsed: URL, signal: AbortSignal | undefined): Promise<Readable> {
  const path = decodeURIComponent(parsed.pathname);
  return new Promise((resolve, reject) => {
    const s = createReadStream(path, { signal });
    s.once('ready', () => resolve(s));
    s.once('error', () => reject(new DownloadError(url, "Couldn't read a file:// file (37)", false)));
  });
}

/** Wraps an error raised while the body streams so that it names the URL. */
export function downloadStreamError(url: string, e: unknown): StrataError {
  if (e instanceof StrataError) return e;
  return new DownloadError(url, (e as Error).message, false);
}
