import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('layers')
    .description("the layer stack: each layer's kind, URI, priority, path count, size, generation, hits")
    .action(async (_opts: unknown, cmd: Command) => {
      const { withStore } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      const { describeLayers } = await import('../../store/layered/describe.js');
      const { formatBytes, printJson } = await import('../output.js');
      await withStore(cmd, async (store) => {
        const rows = await describeLayers(store);
        if (globalOptions(cmd).json) {
          printJson(rows);
          return;
        }
        const table = [['LAYER', 'KIND', 'PRIORITY', 'PATHS', 'SIZE', 'GENERATION', 'HITS', 'URI'], ...rows.map((r) => [r.name, r.kind, String(r.priority), String(r.paths), formatBytes(r.narSize), r.generation ?? '-', String(r.hits), r.uri])];
        const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
        for (const row of table) process.stdout.write(`${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`);
      });
    });
}

