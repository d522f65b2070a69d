// A small SVG line plot for the bench's scale series (issue 17): one line per system, points at the measured x
// values, axes with a few ticks, a legend. No dependency: the output is a plain SVG 1.1 document a README can link.

export interface Series {
  name: string;
  /** [x, y] pairs; a missing y (undefined) leaves a gap, the line resumes at the next point. */
  points: [number, number | undefined][];
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** A logarithmic x axis (message sizes from 1 KiB to 10 MiB). */
  logX?: boolean;
  /** How an x value is written under its tick (default: the number). */
  formatX?: (x: number) => string;
  width?: number;
  height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd'];
/** Room for the axis labels; the right margin leaves room for the last x tick's label, centred on the edge. */
const MARGIN = { left: 70, right: 45, top: 40, bottom: 70 };
/** Legend entries per row, and the height of a row. */
const LEGEND_PER_ROW = 3;
const LEGEND_ROW = 16;

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round numbers for a y axis from 0 to at least `max`: 0, step, 2·step... with step 1, 2 or 5 × 10^n. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function fmtNumber(v: number): string {
  return Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(3)).toString();
}

/** The plot as an SVG document. Throws on an x that a log axis cannot place, naming it. */
export function linePlot(options: PlotOptions): string {
  const width = options.width ?? 640;
  const legendRows = Math.max(1, Math.ceil(options.series.length / LEGEND_PER_ROW));
  // Each legend row past the first makes the plot that much taller, so the plotting area keeps its size.
  const extra = (legendRows - 1) * LEGEND_ROW;
  const height = (options.height ?? 360) + extra;
  const bottom = MARGIN.bottom + extra;
  const xs = [...new Set(options.series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b);
  if (xs.length === 0) throw new Error(`linePlot "${options.title}": no points`);
  for (const x of xs) if (options.logX && !(x > 0)) throw new Error(`linePlot "${options.title}": x = ${x} cannot go on a logarithmic axis`);
  const ys = options.series.flatMap((s) => s.points.map(([, y]) => y)).filter((y): y is number => y !== undefined && Number.isFinite(y));
  const yTicks = niceTicks(Math.max(0, ...ys));
  const yMax = yTicks[yTicks.length - 1]!;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - bottom;
  const tx = (x: number) => (options.logX ? Math.log10(x) : x);
  const [x0, x1] = [tx(xs[0]!), tx(xs[xs.length - 1]!)];
  const px = (x: number) => MARGIN.left + (x1 === x0 ? plotW / 2 : ((tx(x) - x0) / (x1 - x0)) * plotW);
  const py = (y: number) => MARGIN.top + plotH - (y / yMax) * plotH;
  const r = (v: number) => v.toFixed(1);
  const formatX = options.formatX ?? fmtNumber;

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(options.title)}</text>`,
  ];
  for (const y of yTicks) {
    parts.push(`<line x1="${MARGIN.left}" y1="${r(py(y))}" x2="${width - MARGIN.right}" y2="${r(py(y))}" stroke="#ddd"/>`);
    parts.push(`<text x="${MARGIN.left - 6}" y="${r(py(y) + 4)}" text-anchor="end">${escapeXml(fmtNumber(y))}</text>`);
  }
  for (const x of xs) {
    parts.push(`<line x1="${r(px(x))}" y1="${MARGIN.top + plotH}" x2="${r(px(x))}" y2="${MARGIN.top + plotH + 5}" stroke="black"/>`);
    parts.push(`<text x="${r(px(x))}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${escapeXml(formatX(x))}</text>`);
  }
  parts.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top + plotH}" x2="${width - MARGIN.right}" y2="${MARGIN.top + plotH}" stroke="black"/>`);
  parts.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${MARGIN.top + plotH}" stroke="black"/>`);
  parts.push(`<text x="${MARGIN.left + plotW / 2}" y="${MARGIN.top + plotH + 40}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel)}</text>`);

  options.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    // Runs of consecutive points with a value: one polyline each, so a missing value leaves a gap.
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${run.join(' ')}"/>`);
      run = [];
    };
    for (const [x, y] of [...s.points].sort((a, b) => a[0] - b[0])) {
      if (y === undefined || !Number.isFinite(y)) {
        flush();
        continue;
      }
      run.push(`${r(px(x))},${r(py(y))}`);
      parts.push(`<circle cx="${r(px(x))}" cy="${r(py(y))}" r="3" fill="${color}"><title>${escapeXml(`${s.name}: ${formatX(x)} → ${fmtNumber(y)}`)}</title></circle>`);
    }
    flush();
    const ly = height - 12 - (legendRows - 1 - Math.floor(i / LEGEND_PER_ROW)) * LEGEND_ROW;
    const lx = MARGIN.left + (i % LEGEND_PER_ROW) * 180;
    parts.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 20}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="${lx + 26}" y="${ly}">${escapeXml(s.name)}</text>`);
  });
  parts.push(`</svg>`);
  return parts.join('\n') + '\n';
}
