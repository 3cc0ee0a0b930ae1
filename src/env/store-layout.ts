/**
 * What can be known about a store from its URI and configuration files alone, without opening
 * its database: where its files are, which local lowers it stacks (and their generations), and
 * where package indexes live. The fresh-cache path of `strata env` runs on this only, so that it
 * never loads SQLite.
 */
import { join } from 'node:path';

import { layeredPaths, lowerGeneration, readLayeredConfig } from '../store/layered/config.js';
import { parseStoreUri } from '../store/uri.js';

/** The name of a package index file (see package-index.ts). */
export const PACKAGE_INDEX_FILE = 'strata-packages.json';

/** A layer whose contents can change under the store: a local lower with a generation. */
export interface LayerLocation {
  /** The layer's name in answers (`lower0`, or `lower` for `local-overlay://`). */
  name: string;
  /** The lower store's root (its files are in `<root>/nix/store`). */
  root: string;
}

/** One package index file, and the layer that publishes it. */
export interface IndexLocation {
  /** `upper`, a lower's name, or `store` for a plain store. */
  layer: string;
  file: string;
}

/** The layout of a store as its URI and config files tell it. */
export interface StoreLayout {
  uri: string;
  /** Where the store's files are on this machine, when they are (local and layered stores). */
  realStoreDir?: string | undefined;
  /** Local lowers, highest priority first (none for a plain store). */
  lowers: LayerLocation[];
  /** Package index files in lookup order: the store's own (the upper) first, then each lower. */
  indexes: IndexLocation[];
  /** Substituters and trusted keys the store's configuration names (`strata.json`). */
  substituters: string[];
  trustedPublicKeys: string[];
}

/** A local store root's index: `<root>/nix/var/nix/strata-packages.json`. */
export function indexFileOfRoot(root: string): string {
  return join(root, 'nix', 'var', 'nix', PACKAGE_INDEX_FILE);
}

/**
 * Reads a store's layout from its URI (and `strata.json` for `layered://`).
 *
 * @example (await storeLayout('layered:///srv/me')).indexes // [{ layer: 'upper', … }, { layer: 'lower0', … }]
 */
export async function storeLayout(uri: string): Promise<StoreLayout> {
  const parsed = parseStoreUri(uri);
  // Loaded only for the schemes that need it: a layered store's fresh cache is checked without it.
  const configModule = () => import('../store/local/config.js');
  const p = parsed.params;
  switch (parsed.scheme) {
    case 'local': {
      const config = (await configModule()).localStoreConfigOf(uri, parsed);
      return {
        uri,
        realStoreDir: config.realStoreDir,
        lowers: [],
        indexes: [{ layer: 'store', file: join(config.stateDir, PACKAGE_INDEX_FILE) }],
        substituters: [],
        trustedPublicKeys: [],
      };
    }
    case 'layered': {
      const paths = layeredPaths(parsed.path);
      const lowers: LayerLocation[] = [];
      const indexes: IndexLocation[] = [
        { layer: 'upper', file: join(paths.state, PACKAGE_INDEX_FILE) },
      ];
      const config = readLayeredConfig(parsed.path);
      for (const lc of config.lowers) {
        const lp = parseStoreUri(lc.uri);
        if (lp.scheme === 'local') {
          const root = lp.params.get('root') ?? lp.root;
          if (root === undefined) continue;
          lowers.push({ name: lc.name, root });
          indexes.push({ layer: lc.name, file: indexFileOfRoot(root) });
        } else if (lp.scheme === 'file') {
          // A binary cache directory publishes its index at its top, beside nix-cache-info.
          indexes.push({ layer: lc.name, file: join(lp.path, PACKAGE_INDEX_FILE) });
        }
      }
      return {
        uri,
        realStoreDir: paths.merged,
        lowers,
        indexes,
        substituters: config.substituters,
        trustedPublicKeys: config.trustedPublicKeys,
      };
    }
    case 'local-overlay': {
      const config = (await configModule()).localStoreConfigOf(uri, parsed);
      const lowers: LayerLocation[] = [];
      const indexes: IndexLocation[] = [
        { layer: 'upper', file: join(config.stateDir, PACKAGE_INDEX_FILE) },
      ];
      const lowerUri = parseStoreUri(p.get('lower-store') || 'local');
      if (lowerUri.scheme === 'local') {
        const lower = (await configModule()).localStoreConfigOf(p.get('lower-store') || 'local', lowerUri);
        if (lower.root !== undefined) lowers.push({ name: 'lower', root: lower.root });
        indexes.push({ layer: 'lower', file: join(lower.stateDir, PACKAGE_INDEX_FILE) });
      }
      return {
        uri,
        realStoreDir: config.realStoreDir,
        lowers,
        indexes,
        substituters: [],
        trustedPublicKeys: [],
      };
    }
    case 'file':
      return {
        uri,
        lowers: [],
        indexes: [{ layer: 'store', file: join(parsed.path, PACKAGE_INDEX_FILE) }],
        substituters: [],
        trustedPublicKeys: [],
      };
    default:
      return { uri, lowers: [], indexes: [], substituters: [], trustedPublicKeys: [] };
  }
}

/** The current generation of each local lower (see `lowerGeneration`): cheap, a read or a stat. */
export function lowerGenerations(
  layout: StoreLayout,
): Array<LayerLocation & { generation: string }> {
  return layout.lowers.map((l) => ({ ...l, generation: lowerGeneration(l.root) }));
}
