/**
 * The non-local backends, kept apart from `open.ts` so that opening a local store loads none of
 * them. Each case is filled in as its backend lands.
 */
import type { OpenOptions } from './open.js';
import { unsupportedScheme } from './open.js';
import type { Store } from './store.js';
import type { StoreUri } from './uri.js';

export async function openOtherStore(uri: string, parsed: StoreUri, options: OpenOptions): Promise<Store> {
  switch (parsed.scheme) {
    case 'file':
    case 'http':
    case 'https': {
      const { openBinaryCache } = await import('./binary-cache/open-cache.js');
      return openBinaryCache(uri, parsed, options);
    }
    case 's3': {
      const { openS3Cache } = await import('./binary-cache/open-s3.js');
      return openS3Cache(uri, parsed);
    }
    case 'layered': {
      const { openLayered } = await import('./layered/open-layered.js');
      return openLayered(uri, parsed.path);
    }
    case 'local-overlay': {
      const { openLocalOverlay } = await import('./layered/open-layered.js');
      return openLocalOverlay(uri);
    }
    default:
      throw unsupportedScheme(uri, parsed.scheme);
  }
}
