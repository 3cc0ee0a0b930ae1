/** Builds a file tree from the recipe format of ../shared/vectors/nar.json (modes 0644/0755). */
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Recipe {
  type: 'directory' | 'regular' | 'symlink';
  entries?: Record<string, Recipe>;
  executable?: boolean;
  contents_b64?: string;
  target?: string;
}

export function buildTree(path: string, r: Recipe): void {
  if (r.type === 'directory') {
    mkdirSync(path, 0o755);
    for (const [name, child] of Object.entries(r.entries ?? {})) buildTree(join(path, name), child);
  } else if (r.type === 'regular') {
    writeFileSync(path, Buffer.from(r.contents_b64 ?? '', 'base64'));
    chmodSync(path, r.executable ? 0o755 : 0o644);
  } else {
    symlinkSync(r.target!, path);
  }
}

