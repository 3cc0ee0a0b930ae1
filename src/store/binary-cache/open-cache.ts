/**
 * `file://DIR?…` and `http(s)://HOST/…?…` → a {@link BinaryCacheStore}, with Nix's parameters:
 * `compression`, `compression-level`, `secret-key`, `priority`, `want-mass-query`, and strata's
 * `ttl-positive`/`ttl-negative` (seconds), `timeout` (seconds) and `retries` for HTTP.
 */
import { StrataError } from '../../core/error.js';
import type { OpenOptions } from '../open.js';
import type { StoreUri } from '../uri.js';
import { BinaryCacheStore, type BinaryCacheOptions } from './binary-cache-store.js';
import { cacheOptions, intParam } from './cache-params.js';

/**
 * Opens a binary cache store from a parsed `file`/`http`/`https` URI.
 *
 * @example const cache = await openBinaryCache(uri, parseStoreUri(uri), {});
 */
export async function openBinaryCache(uri: string, parsed: StoreUri, _options: OpenOptions = {}): Promise<BinaryCacheStore> {
  const p = parsed.params;
  const options: BinaryCacheOptions = cacheOptions(uri, p);
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
