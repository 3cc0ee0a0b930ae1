/** `nix path-info --json` objects, with the same keys in the same order, plus strata's `layer`. */
import type { NarInfo } from '../core/narinfo.js';
import type { StoreDir, StorePath } from '../core/store-path.js';
import type { PathInfo } from '../store/store.js';

export function pathInfoJson(dir: StoreDir, info: PathInfo, extra: { closureSize?: number; closureDownloadSize?: number } = {}): Record<string, unknown> {
  const o: Record<string, unknown> = {
    path: dir.print(info.path),
    narHash: info.narHash.toSri(),
    narSize: info.narSize,
    references: info.references.map((r) => dir.print(r)),
  };
  if (info.ca) o['ca'] = info.ca;
  if (extra.closureSize !== undefined) o['closureSize'] = extra.closureSize;
  if (info.deriver) o['deriver'] = dir.print(info.deriver);
  if (info.registrationTime) o['registrationTime'] = info.registrationTime;
  if (info.ultimate) o['ultimate'] = true;
  if (info.sigs.length > 0) o['signatures'] = info.sigs;
  // A binary cache's path: where its NAR file is, as Nix adds for a narinfo.
  const ni = info as Partial<NarInfo>;
  if (typeof ni.url === 'string') {
    if (ni.url !== '') o['url'] = ni.url;
    if (ni.fileHash) o['downloadHash'] = ni.fileHash.toSri();
    if (ni.fileSize) o['downloadSize'] = ni.fileSize;
    if (extra.closureDownloadSize !== undefined) o['closureDownloadSize'] = extra.closureDownloadSize;
  }
  if (info.layer) o['layer'] = info.layer;
  return o;
}

export function invalidPathJson(dir: StoreDir, path: StorePath): Record<string, unknown> {
  return { path: dir.print(path), valid: false };
}
