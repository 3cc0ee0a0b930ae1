/** What `strata layers` shows: one row per layer, upper first. */
import { readdirSync } from 'node:fs';

import { StrataError } from '../../core/error.js';
import { LocalStore } from '../local/local-store.js';
import type { Store } from '../store.js';
import { localLowerRoot, lowerGeneration } from './config.js';
import { LayeredStore } from './layered-store.js';
import { mountMode } from './mounts.js';

export interface LayerRow {
  name: string;
  kind: 'upper' | 'local' | 'binary-cache';
  uri: string;
  /** 0 for the upper; lowers count up in priority order. */
  priority: number;
  /** Valid paths in the layer's own metadata. */
  paths: number;
  /** Sum of their NAR sizes. */
  narSize: number;
  generation?: string | undefined;
  /** Upper rows served by this layer's files (copy-ups for lowers, own objects for the upper). */
  hits: number;
  /** For the upper: how the overlay is mounted (root, user-namespace or fuse-overlayfs). */
  mount?: string | undefined;
}

export async function describeLayers(store: Store): Promise<LayerRow[]> {
  if (!(store instanceof LayeredStore)) {
    throw new StrataError('NOT_LAYERED', `Cannot list layers of '${store.uri}': it is not a layered store`, { value: store.uri });
  }
  const upperNames = new Set(readdirSync(store.upperLayer));
  const upperPaths = await store.upper.queryAllValidPaths();
  const hits = new Map<string, number>();
  let upperOwn = 0;
  for (const p of upperPaths) {
    if (upperNames.has(p.baseName)) {
      upperOwn++;
      continue;
    }
    const l = await store.lowerHas(p);
    if (l) hits.set(l.name, (hits.get(l.name) ?? 0) + 1);
  }
  const rows: LayerRow[] = [
    { name: 'upper', kind: 'upper', uri: store.upperLayer, priority: 0, paths: store.upper.db.countValid(), narSize: store.upper.db.totalNarSize(), hits: upperOwn, mount: mountMode() },
  ];
  store.lowers.forEach((l, i) => {
    const local = l.store instanceof LocalStore ? l.store : undefined;
    let generation: string | undefined;
    const root = localLowerRoot(l.store.uri);
    if (root !== undefined) generation = lowerGeneration(root);
    rows.push({
      name: l.name,
      kind: local ? 'local' : 'binary-cache',
      uri: l.store.uri,
      priority: i + 1,
      paths: local ? local.db.countValid() : 0,
      narSize: local ? local.db.totalNarSize() : 0,
      generation,
      hits: hits.get(l.name) ?? 0,
    });
  });
  return rows;
}
