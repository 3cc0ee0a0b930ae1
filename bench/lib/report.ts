/**
 * Reporting: markdown tables with ratios, and updating one `### subsection` of one `## section`
 * of BENCHMARKS.md. Other people edit other sections of that file concurrently, so the file is
 * re-read immediately before the write and only our subsection's text is replaced.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { machine, ROOT } from './env.js';

export function table(header: string[], rows: string[][]): string[] {
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
}

export function ms(seconds: number): string {
  return seconds >= 10
    ? `${seconds.toFixed(1)} s`
    : seconds >= 1
      ? `${seconds.toFixed(2)} s`
      : `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
}

export function us(seconds: number): string {
  return `${(seconds * 1e6).toFixed(1)} µs`;
}

export function ratio(x: number): string {
  return `${x.toFixed(x >= 100 ? 0 : 2)}×`;
}

export function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 2 : 0)} MiB`;
}

/** Prints lines and returns them (for --write). */
export function say(lines: string[]): string[] {
  for (const l of lines) console.log(l);
  return lines;
}

/**
 * Replaces (or appends) `### <sub>` inside `## <section>` of BENCHMARKS.md with `body`, creating
 * the section (with `intro` under its title) when missing. A short read-modify-write.
 */
export function writeSubsection(
  section: string,
  intro: string[],
  sub: string,
  body: string[],
): void {
  const file = join(ROOT, 'BENCHMARKS.md');
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const lines = text.replace(/\n+$/, '').split('\n');
  const block = [`### ${sub}`, '', ...body];
  let s = lines.indexOf(`## ${section}`);
  if (s < 0) {
    lines.push('', `## ${section}`, '', ...intro, '', ...block);
  } else {
    let end = lines.findIndex((l, i) => i > s && l.startsWith('## '));
    if (end < 0) end = lines.length;
    const from = lines.findIndex((l, i) => i > s && i < end && l === `### ${sub}`);
    if (from < 0) {
      while (end > s && lines[end - 1] === '') end--;
      lines.splice(end, 0, '', ...block);
    } else {
      let to = lines.findIndex((l, i) => i > from && (l.startsWith('### ') || l.startsWith('## ')));
      if (to < 0) to = lines.length;
      while (to > from && lines[to - 1] === '') to--;
      lines.splice(from, to - from, ...block);
    }
    s = lines.indexOf(`## ${section}`);
    // Keep the section's intro current.
    const firstSub = lines.findIndex(
      (l, i) => i > s && (l.startsWith('### ') || l.startsWith('## ')),
    );
    lines.splice(s + 1, firstSub - s - 1, '', ...intro, '');
  }
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${lines.join('\n')}\n`);
  renameSync(tmp, file);
  console.log(`updated ${file} (## ${section} / ### ${sub})`);
}

/** `writeSubsection` into `## Local store`, whose intro (the machine line) every such bench shares. */
export function writeLocalStoreSubsection(sub: string, body: string[]): void {
  writeSubsection(
    'Local store',
    [
      `Machine: ${machine()}. Whole-process timings include start-up; in-process ones do not. Ratios are strata / the other.`,
    ],
    sub,
    body,
  );
}
