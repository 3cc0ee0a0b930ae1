/**
 * `file://DIR?…` and `http(s)://HOST/…?…` → a {@link BinaryCacheStore}, with Nix's parameters:
 * `compression`, `compression-level`, `secret-key`, `priority`, `want-mass-query`, and strata's
 * `ttl-positive`/`ttl-negative` (seconds), `timeout` (seconds) and `retries` for HTTP.
 */
import { StrataError } from '../../core/error.js';
import type { OpenOptions } from '../open.js';
import type { StoreUri } from '../uri.js';
import { BinaryCacheStore, type BinaryCacheOptions } from './binary-cache-store.js';
import type { CacheTransport } from './transport.js';
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
    const transport = new HttpTransport(parsed.url, { timeout: intParam(uri, p, 'timeout', 1), retries: intParam(uri, p, 'retries', 0) });
    return openRemoteCache(uri, transport, options);
  }
  throw new StrataError('URI_UNSUPPORTED', `Cannot open '${uri}' as a binary cache`, { value: uri });
}

/**
 * Opens a cache over the network (HTTP, S3) with Nix's narinfo disk cache beside it; when the
 * cache cannot be opened, the transport's connections and the disk cache are closed again.
 */
export async function openRemoteCache(uri: string, transport: CacheTransport, options: BinaryCacheOptions): Promise<BinaryCacheStore> {
  const { NarInfoDiskCache } = await import('./narinfo-disk-cache.js');
  // A disk cache made now knows no `nix-cache-info`: ask the cache while the file is made (~12 ms
  // of SQLite here, the request's time on loopback), not after.
  const cacheInfoRequest = NarInfoDiskCache.exists() ? undefined : transport.getFile('nix-cache-info');
  cacheInfoRequest?.catch(() => {}); // awaited below; a failure is reported there
  const diskCache = await NarInfoDiskCache.open();
  try {
    return await BinaryCacheStore.open(uri, transport, { ...options, diskCache, cacheInfoRequest });
  } catch (e) {
    await transport.close();
    diskCache?.close();
    throw e;
  }
}
