/**
 * Downloads for `builtin:fetchurl`, as Nix 2.8's file transfer does them with curl: `file://`,
 * `http://` and `https://` (one request as the binary-cache transport makes it: redirects
 * followed, transient failures retried with Nix's backoff), no TLS verification (the result's
 * hash is checked anyway) and no content decoding. Errors read as Nix's:
 * `unable to download 'URL': …`.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';

import { StrataError } from '../../core/error.js';
import { dump, httpRequest, HttpRequestError, type RetryCause } from '../../store/http-request.js';

/** Nix's `download-attempts` default. */
const ATTEMPTS = 5;
/** Nix's `baseRetryTimeMs`. */
const BASE_RETRY_MS = 250;

/** A download that failed. */
class DownloadError extends StrataError {
  constructor(url: string, why: string) {
    super('DOWNLOAD_FAILED', `unable to download '${url}': ${why}`, { value: url });
  }
}

/** A network error as curl's message shows it. */
function networkWhy(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return `${err.code ?? err.message} (${err.message})`;
}

const statusWhy = (status: number, message: string) => `HTTP error ${status} ('${message}')`;

/**
 * Opens `url` for reading: resolves once the body can be read (a 2xx response, or an open
 * file). Throws `DOWNLOAD_FAILED` naming the URL. `warn` receives the retry notices; `signal`
 * stops the download, the body included (an interrupted realise must not wait for a stalled server).
 *
 * @example (await openDownload('file:///tmp/x', console.warn)).pipe(sink);
 */
export async function openDownload(url: string, warn: (line: string) => void, signal?: AbortSignal): Promise<Readable> {
  if (signal?.aborted) throw new DownloadError(url, 'interrupted');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DownloadError(url, 'URL using bad/illegal format or missing URL (3)');
  }
  if (parsed.protocol === 'file:') return openFile(url, parsed, signal);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new DownloadError(url, 'Unsupported protocol (1)');
  const onRetry = (cause: RetryCause, ms: number) => {
    const why = 'error' in cause ? networkWhy(cause.error) : statusWhy(cause.response.statusCode, cause.response.statusMessage);
    warn(`warning: unable to download '${url}': ${why}; retrying in ${ms} ms`);
  };
  try {
    const res = await httpRequest(parsed, { attempts: ATTEMPTS, baseDelayMs: BASE_RETRY_MS, insecure: true, signal, onRetry });
    if (res.statusCode >= 200 && res.statusCode < 300) return res.body;
    await dump(res.body);
    throw new DownloadError(url, statusWhy(res.statusCode, res.statusMessage));
  } catch (e) {
    if (signal?.aborted) throw new DownloadError(url, 'interrupted');
    if (!(e instanceof HttpRequestError)) throw e;
    const f = e.failure;
    if (f.kind === 'network') throw new DownloadError(url, networkWhy(f.error));
    if (f.kind === 'too-many-redirects') throw new DownloadError(url, 'Number of redirects hit maximum amount (47)');
    if (f.kind === 'bad-redirect') throw new DownloadError(url, 'Unsupported protocol (1)');
    throw new DownloadError(url, 'interrupted');
  }
}

/** A `file://` URL: the file itself, opened before the caller starts writing anything. */
function openFile(url: string, parsed: URL, signal: AbortSignal | undefined): Promise<Readable> {
  const path = decodeURIComponent(parsed.pathname);
  return new Promise((resolve, reject) => {
    const s = createReadStream(path, { signal });
    s.once('ready', () => resolve(s));
    s.once('error', () => reject(new DownloadError(url, "Couldn't read a file:// file (37)")));
  });
}

/** Wraps an error raised while the body streams so that it names the URL. */
export function downloadStreamError(url: string, e: unknown): StrataError {
  if (e instanceof StrataError) return e;
  return new DownloadError(url, (e as Error).message);
}
