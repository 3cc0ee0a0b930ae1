/**
 * `file://DIR?…` and `http(s)://HOST/…?…` → a {@link BinaryCacheStore}, with Nix's parameters:
 * `compression`, `compression-level`, `secret-key`, `priority`, `want-mass-query`, and strata's
 * `ttl-positive`/`ttl-negative` (seconds), `timeout` (seconds) and `retries` for HTTP.
 */
import { readFileSync } from 'node:fs';

import { StrataError } from '../../core/error.js';
import { parseSecretKey } from '../../core/signature.js';
import type { OpenOptions } from '../open.js';
import { boolParam, type StoreUri } from '../uri.js';
import { BinaryCacheStore, type BinaryCacheOptions } from './binary-cache-store.js';

function intParam(uri: string, params: Map<string, string>, key: string, min: number): number | undefined {
  const v = params.get(key);
  if (v === undefined) return undefined;
  if (!/^-?[0-9]{1,12}$/.test(v) || Number(v) < min) {
    throw new StrataError('URI_INVALID', `Cannot use store URI '${uri}': parameter '${key}' must be an integer of at least ${min}, not '${v}'`, { value: uri });
  }
  return Number(v);
}

/**
 * Opens a binary cache store from a parsed `file`/`http`/`https` URI.
 *
 * @example const cache = await openBinaryCache(uri, parseStoreUri(uri), {});
 */
export async function openBinaryCache(uri: string, parsed: StoreUri, _options: OpenOptions = {}): Promise<BinaryCacheStore> {
  const p = parsed.params;
  const options: BinaryCacheOptions = {
    compression: p.get('compression'),
    compressionLevel: intParam(uri, p, 'compression-level', 0),
    ttlPositive: intParam(uri, p, 'ttl-positive', 0),
    ttlNegative: intParam(uri, p, 'ttl-negative', 0),
    priority: intParam(uri, p, 'priority', -1_000_000),
    wantMassQuery: p.has('want-mass-query') ? boolParam(uri, p, 'want-mass-query', false) : undefined,
  };
  const keyFile = p.get('secret-key');
  if (keyFile !== undefined && keyFile !== '') {
    let text: string;
    try {
      text = readFileSync(keyFile, 'utf8');
    } catch (e) {
      throw new StrataError('KEY_INVALID', `Cannot read secret key '${keyFile}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { value: keyFile });
    }
    options.secretKey = parseSecretKey(text);
  }
  if (parsed.scheme === 'file') {
    const { FileTransport } = await import('./file-transport.js');
    return BinaryCacheStore.open(uri, new FileTransport(parsed.path), options);
  }
  if (parsed.scheme === 'http' || parsed.scheme === 'https') {
    const { HttpTransport } = await import('./http-transport.js');
    const { NarInfoDiskCache } = await import('./narinfo-disk-cache.js');
    options.diskCache = await NarInfoDiskCache.open();
    const transport = new HttpTransport(parsed.url, { timeout: intParam(uri, p, 'timeout', 1), retries: intParam(uri, p, 'retries', 0) });
    try {
      return await BinaryCacheStore.open(uri, transport, options);
    } catch (e) {
      await transport.close();
      options.diskCache?.close();
      throw e;
    }
  }
  throw new StrataError('URI_UNSUPPORTED', `Cannot open '${uri}' as a binary cache`, { value: uri });
}
