/**
 * `s3://bucket?…` → a {@link BinaryCacheStore} over an {@link S3Transport}, with Nix's S3
 * parameters (`endpoint`, `scheme`, `region`, `profile`, `multipart-upload`, `buffer-size` as
 * the part size) and the binary-cache ones (`compression`, `compression-level`, `secret-key`,
 * `priority`, `want-mass-query`, `ttl-positive`/`ttl-negative`). Credentials come from the AWS
 * SDK's usual chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, then `profile=` or
 * `AWS_PROFILE` in `~/.aws/credentials` and `~/.aws/config`.
 */
import { StrataError } from '../../core/error.js';
import { boolParam, type StoreUri } from '../uri.js';
import type { BinaryCacheOptions, BinaryCacheStore } from './binary-cache-store.js';
import { cacheOptions, intParam } from './cache-params.js';
import { openRemoteCache } from './open-cache.js';
import { S3Transport } from './s3-transport.js';

function invalid(uri: string, why: string): StrataError {
  return new StrataError('URI_INVALID', `Cannot use store URI '${uri}': ${why}`, { value: uri });
}

/**
 * Opens an S3 binary cache. Reading `nix-cache-info` is the first request, so wrong credentials
 * and a missing bucket fail here, with a one-line error.
 *
 * @example const cache = await openS3Cache(uri, parseStoreUri('s3://cache?endpoint=127.0.0.1:7480&scheme=http'));
 */
export async function openS3Cache(uri: string, parsed: Extract<StoreUri, { scheme: 's3' }>): Promise<BinaryCacheStore> {
  const p = parsed.params;
  const scheme = p.get('scheme');
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') throw invalid(uri, `parameter 'scheme' must be http or https, not '${scheme}'`);
  // Nix can gzip/xz narinfos and listings on S3; strata writes no listings or logs, and
  // uncompressed narinfos (what every reader, real Nix over plain HTTP included, can read).
  for (const key of ['narinfo-compression', 'ls-compression', 'log-compression']) {
    const v = p.get(key);
    if (v !== undefined && v !== '' && v !== 'none') throw invalid(uri, `parameter '${key}=${v}' is not supported (strata writes these files uncompressed)`);
  }
  const bufferSize = intParam(uri, p, 'buffer-size', 5 * 1024 * 1024);
  const options: BinaryCacheOptions = cacheOptions(uri, p);
  const transport = new S3Transport({
    bucket: parsed.bucket,
    endpoint: p.get('endpoint'),
    scheme: scheme as 'http' | 'https' | undefined,
    region: p.get('region'),
    profile: p.get('profile') || undefined,
    multipartUpload: boolParam(uri, p, 'multipart-upload', true),
    partSize: bufferSize,
  });
  return openRemoteCache(uri, transport, options);
}
