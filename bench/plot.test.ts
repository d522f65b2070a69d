import { describe, expect, it } from 'vitest';
import { escapeXml, linePlot, niceTicks } from './plot.js';

/** The points of each polyline, as [x, y] numbers. */
function polylines(svg: string): [number, number][][] {
  return [...svg.matchAll(/<polyline [^>]*points="([^"]+)"/g)].map((m) => m[1]!.split(' ').map((p) => p.split(',').map(Number) as [number, number]));
}

describe('linePlot', () => {
  const svg = linePlot({
    title: 'Throughput <by size>',
    xLabel: 'message size',
    yLabel: 'msg/s',
    logX: true,
    formatX: (x) => `${x} KiB`,
    series: [
      { name: 'maillab', points: [[1, 400], [100, 200], [10240, 10]] },
      { name: 'peer & co', points: [[1, 200], [100, undefined], [10240, 5]] },
    ],
  });

  it('is one SVG document with the title, labels and legend escaped', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('Throughput &lt;by size&gt;');
    expect(svg).toContain('>peer &amp; co</text>');
    expect(svg).toContain('>10240 KiB</text>');
  });

  it('draws a line through the points, higher values higher up, a log x axis evenly spaced by decade', () => {
    const [ours] = polylines(svg);
    expect(ours).toHaveLength(3);
    const [a, b, c] = ours!;
    expect(a![1]).toBeLessThan(b![1]); // 400 is drawn above 200 (SVG y grows downwards)
    expect(b![1]).toBeLessThan(c![1]);
    // log10: 1 → 0, 100 → 2, 10240 → 4.01: the middle point sits just under half way
    const share = (b![0] - a![0]) / (c![0] - a![0]);
    expect(share).toBeGreaterThan(0.49);
    expect(share).toBeLessThan(0.5);
  });

  it('leaves a gap where a value is missing', () => {
    // The peer's line has a missing middle value: two single points, no polyline, but both markers.
    expect(polylines(svg)).toHaveLength(1);
    expect(svg.match(/<circle /g)).toHaveLength(5);
  });

  it('refuses an x a log axis cannot place, and a plot without points', () => {
    expect(() => linePlot({ title: 't', xLabel: 'x', yLabel: 'y', logX: true, series: [{ name: 's', points: [[0, 1]] }] })).toThrow(/x = 0 cannot go on a logarithmic axis/);
    expect(() => linePlot({ title: 'empty', xLabel: 'x', yLabel: 'y', series: [] })).toThrow(/"empty": no points/);
  });

  it('puts legend entries past the third on a second row, and grows the plot to fit it', () => {
    const four = linePlot({ title: 't', xLabel: 'x', yLabel: 'y', series: ['a', 'b', 'c', 'd'].map((name) => ({ name, points: [[1, 1], [2, 2]] as [number, number][] })) });
    expect(four).toContain('height="376"');
    const legendY = [...four.matchAll(/<text x="\d+" y="(\d+)">[abcd]<\/text>/g)].map((m) => Number(m[1]));
    expect(legendY).toEqual([348, 348, 348, 364]);
  });
});

describe('niceTicks', () => {
  it('covers the maximum with round steps', () => {
    expect(niceTicks(430)).toEqual([0, 100, 200, 300, 400, 500]);
    expect(niceTicks(9)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0.7)).toEqual([0, 0.2, 0.4, 0.6, 0.8]);
    expect(niceTicks(0)).toEqual([0, 1]);
  });
});

describe('escapeXml', () => {
  it('escapes the characters that would break an attribute or text', () => {
    expect(escapeXml(`a<b>&"c"`)).toBe('a&lt;b&gt;&amp;&quot;c&quot;');
  });
});
