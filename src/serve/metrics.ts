/**
 * Prometheus metrics of `strata serve`, in the text exposition format (version 0.0.4): request
 * counts by route and status, bytes sent, a latency histogram, and store hits per layer.
 */

// Latency buckets in seconds: narinfos answer in well under 1 ms, NARs take up to minutes.
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

function label(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** Counters and a histogram, rendered on demand. */
export class ServeMetrics {
  // Keyed by route, then status: no label string is built per request (observe runs on every
  // answer, render only when scraped).
  readonly #requests = new Map<string, Map<number, number>>();
  readonly #bytes = new Map<string, number>();
  readonly #layers = new Map<string, number>();
  readonly #uploads = new Map<string, number>();
  // Per bucket, the requests whose latency falls in it (not cumulative: one increment per
  // request instead of up to 16); render() accumulates.
  readonly #buckets = new Array<number>(BUCKETS.length).fill(0);
  #sum = 0;
  #count = 0;

  /** Records one finished request. */
  observe(route: string, status: number, bytes: number, seconds: number): void {
    let byStatus = this.#requests.get(route);
    if (byStatus === undefined) this.#requests.set(route, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
    this.#bytes.set(route, (this.#bytes.get(route) ?? 0) + bytes);
    this.#sum += seconds;
    this.#count++;
    let i = 0;
    while (i < BUCKETS.length && seconds > BUCKETS[i]!) i++;
    if (i < BUCKETS.length) this.#buckets[i]!++;
  }

  /** Records which layer of the served store answered a narinfo or NAR request. */
  layerHit(layer: string): void {
    this.#layers.set(layer, (this.#layers.get(layer) ?? 0) + 1);
  }

  upload(result: 'ok' | 'refused'): void {
    this.#uploads.set(result, (this.#uploads.get(result) ?? 0) + 1);
  }

  /** The exposition text. */
  render(): string {
    const out: string[] = [];
    out.push('# HELP strata_serve_requests_total HTTP requests answered.', '# TYPE strata_serve_requests_total counter');
    for (const [route, byStatus] of this.#requests) {
      for (const [status, v] of byStatus) out.push(`strata_serve_requests_total{route="${label(route)}",status="${status}"} ${v}`);
    }
    out.push('# HELP strata_serve_response_bytes_total Response body bytes sent.', '# TYPE strata_serve_response_bytes_total counter');
    for (const [k, v] of this.#bytes) out.push(`strata_serve_response_bytes_total{route="${label(k)}"} ${v}`);
    out.push('# HELP strata_serve_request_duration_seconds Time from request to last byte sent.', '# TYPE strata_serve_request_duration_seconds histogram');
    let below = 0;
    BUCKETS.forEach((b, i) => out.push(`strata_serve_request_duration_seconds_bucket{le="${b}"} ${(below += this.#buckets[i]!)}`));
    out.push(`strata_serve_request_duration_seconds_bucket{le="+Inf"} ${this.#count}`);
    out.push(`strata_serve_request_duration_seconds_sum ${this.#sum}`, `strata_serve_request_duration_seconds_count ${this.#count}`);
    out.push('# HELP strata_serve_layer_hits_total Paths served, by the layer that held them.', '# TYPE strata_serve_layer_hits_total counter');
    for (const [k, v] of this.#layers) out.push(`strata_serve_layer_hits_total{layer="${label(k)}"} ${v}`);
    out.push('# HELP strata_serve_uploads_total Uploaded paths, accepted or refused.', '# TYPE strata_serve_uploads_total counter');
    for (const [k, v] of this.#uploads) out.push(`strata_serve_uploads_total{result="${k}"} ${v}`);
    return `${out.join('\n')}\n`;
  }
}
