/**
 * The substituters a command may ask for paths no layer has (`strata realise`, `strata env`):
 * opened on first use, so a run whose paths all are valid or in some layer never opens one.
 */
import type { StorePath } from '../core/store-path.js';
import type { Store } from './store.js';
import type { TrustPolicy } from './trust.js';

export interface SubstituterSet {
  /** Fetches what it can of `paths` (with their closures) into the target; `undefined` when there are no substituters. */
  substitute: ((paths: StorePath[]) => Promise<StorePath[]>) | undefined;
  /** Paths fetched so far, closures included. */
  count(): number;
  close(): Promise<void>;
}

/**
 * The substituters `uris` for `target`. A substituter that cannot be opened is reported through
 * `onWarning` and left out, as Nix skips a substituter it cannot reach.
 */
export function substituterSet(
  target: Store,
  uris: string[],
  trust: TrustPolicy,
  options: { openStore?: ((uri: string) => Promise<Store>) | undefined; onWarning?: ((message: string) => void) | undefined } = {},
): SubstituterSet {
  const opened: Store[] = [];
  let openedAll = false;
  let count = 0;
  const substitute = async (paths: StorePath[]): Promise<StorePath[]> => {
    if (!openedAll) {
      openedAll = true;
      const open = options.openStore ?? (await import('./open.js')).openStore;
      for (const uri of uris) {
        try {
          opened.push(await open(uri));
        } catch (e) {
          options.onWarning?.(`cannot open substituter '${uri}': ${(e as Error).message}`);
        }
      }
    }
    const { substitutePaths } = await import('./substitute.js');
    const r = await substitutePaths(target, opened, paths, trust);
    count += r.substituted.length;
    return r.substituted;
  };
  return {
    substitute: uris.length > 0 ? substitute : undefined,
    count: () => count,
    close: async () => {
      for (const s of opened.splice(0)) await s.close();
    },
  };
}
