/**
 * A store URI → a Store: the one place that knows every scheme. Backends are loaded on demand so a
 * command pays only for the store it uses.
 */
import { StrataError } from '../core/error.js';
import type { Store } from './store.js';
import { parseStoreUri } from './uri.js';

export interface OpenOptions {
  /** Trusted public keys (`name:base64`) for stores that check signatures. */
  trustedPublicKeys?: string[];
  /** Refuse unsigned paths from caches (default true, as in Nix). */
  requireSigs?: boolean;
}

/** Opens the store a URI names; see the table of URIs in the spec. */
export async function openStore(uri: string, options: OpenOptions = {}): Promise<Store> {
  const parsed = parseStoreUri(uri);
  switch (parsed.scheme) {
    case 'local': {
      const { LocalStore } = await import('./local/local-store.js');
      const { localStoreConfigOf } = await import('./local/config.js');
      return LocalStore.open(uri, localStoreConfigOf(uri, parsed));
    }
    default: {
      const { openOtherStore } = await import('./open-other.js');
      return openOtherStore(uri, parsed, options);
    }
  }
}

/** Raised for schemes whose backend is not part of this build yet. */
export function unsupportedScheme(uri: string, scheme: string): StrataError {
  return new StrataError('URI_UNSUPPORTED', `Cannot open store '${uri}': ${scheme} stores are not supported yet`, { value: uri });
}
