/**
 * The parameters every binary-cache URI takes (`compression`, `compression-level`, `secret-key`,
 * `priority`, `want-mass-query`, `ttl-positive`/`ttl-negative`), read once for file, HTTP and S3.
 */
import { readFileSync } from 'node:fs';

import { StrataError } from '../../core/error.js';
import { parseSecretKey } from '../../core/signature.js';
import { boolParam } from '../uri.js';
import type { BinaryCacheOptions } from './binary-cache-store.js';

/** An integer parameter of at least `min`, or undefined when absent. */
export function intParam(uri: string, params: Map<string, string>, key: string, min: number): number | undefined {
  const v = params.get(key);
  if (v === undefined) return undefined;
  if (!/^-?[0-9]{1,12}$/.test(v) || Number(v) < min) {
    throw new StrataError('URI_INVALID', `Cannot use store URI '${uri}': parameter '${key}' must be an integer of at least ${min}, not '${v}'`, { value: uri });
  }
  return Number(v);
}

/** The cache options the common parameters give (the secret key file is read here). */
export function cacheOptions(uri: string, p: Map<string, string>): BinaryCacheOptions {
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
  return options;
}
