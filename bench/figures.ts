// The bench's bookkeeping (issue 17): every paired figure is measured in rounds, maillab and the peer one after the
// other in each round (the order alternating from round to round), and a goal is judged on the median of the
// per-round ratios, printed with their min–max, so one noisy pair cannot decide it.
import { stats, type Stats } from './load.js';

export type Who = 'ours' | 'peer';

export interface FigureDef {
  id: string;
  title: string;
  unit: string;
  /** Which direction is better, for the ratio's reading. */
  better: 'lower' | 'higher';
}

export interface Figure extends FigureDef {
  /** One value per round (undefined: that round has none for this system). */
  rounds: Record<Who, (number | undefined)[]>;
}

/** A goal on a figure's ratio (>1: maillab better), or on maillab's own value. */
export type Goal =
  | { figure: string; what: string; ratioAtLeast: number }
  | { figure: string; what: string; oursAtMost: number }
  | { figure: string; what: string; oursAtLeast: number };

export interface GoalVerdict {
  what: string;
  figure: string;
  target: string;
  /** "met", "missed", or why it was not judged. */
  verdict: string;
  /** The judged value: the median ratio, or maillab's median. */
  value?: Stats;
  kind: 'ratio' | 'value';
}

/** The figures of one run, by id, in the order first measured. */
export class Figures {
  private readonly list: Figure[] = [];

  /** Records `value` as `who`'s figure in `round` (0-based). */
  sample(def: FigureDef, who: Who, round: number, value: number): void {
    if (!Number.isFinite(value)) throw new Error(`${def.id}: ${who}'s value in round ${round + 1} is ${value}, not a number`);
    this.figure(def).rounds[who][round] = value;
  }

  /** Makes the figure known (so it is listed with "—" even when nothing was measured). */
  figure(def: FigureDef): Figure {
    let f = this.list.find((x) => x.id === def.id);
    if (!f) this.list.push((f = { ...def, rounds: { ours: [], peer: [] } }));
    return f;
  }

  /** Forgets every value of `who` for a figure (a run that could not be trusted, e.g. TLS not proven). */
  drop(id: string, who: Who): void {
    const f = this.list.find((x) => x.id === id);
    if (f) f.rounds[who] = [];
  }

  get(id: string): Figure | undefined {
    return this.list.find((x) => x.id === id);
  }

  all(): readonly Figure[] {
    return this.list;
  }
}

export function valuesOf(f: Figure, who: Who): number[] {
  return f.rounds[who].filter((v): v is number => v !== undefined);
}

export function statsOf(f: Figure, who: Who): Stats | undefined {
  const v = valuesOf(f, who);
  return v.length ? stats(v) : undefined;
}

/**
 * The per-round ratios (ours/peer when higher is better, peer/ours when lower is: above 1, maillab is better), from
 * the rounds where both systems have a value. A round whose value is zero on either side is left out.
 */
export function roundRatios(f: Figure): number[] {
  const out: number[] = [];
  const n = Math.max(f.rounds.ours.length, f.rounds.peer.length);
  for (let i = 0; i < n; i++) {
    const o = f.rounds.ours[i];
    const p = f.rounds.peer[i];
    if (o === undefined || p === undefined || o === 0 || p === 0) continue;
    out.push(f.better === 'higher' ? o / p : p / o);
  }
  return out;
}

export function ratioStats(f: Figure): Stats | undefined {
  const r = roundRatios(f);
  return r.length ? stats(r) : undefined;
}

function decimals(median: number, unit: string): number {
  return unit === 'count' || median >= 100 ? 0 : median >= 10 ? 1 : 2;
}

export function fmt(s: Stats | undefined, unit: string): string {
  if (!s) return '—';
  const d = decimals(s.median, unit);
  return s.samples.length > 1 ? `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})` : s.median.toFixed(d);
}

export function fmtRatio(s: Stats | undefined): string {
  if (!s) return '—';
  return s.samples.length > 1 ? `${s.median.toFixed(2)}× (${s.min.toFixed(2)}–${s.max.toFixed(2)})` : `${s.median.toFixed(2)}×`;
}

export function judge(figures: Figures, goals: readonly Goal[]): GoalVerdict[] {
  return goals.map((g) => {
    const f = figures.get(g.figure);
    if ('ratioAtLeast' in g) {
      const r = f && ratioStats(f);
      const target = `≥ ${g.ratioAtLeast}×`;
      if (!r) return { what: g.what, figure: g.figure, target, kind: 'ratio', verdict: f && valuesOf(f, 'ours').length ? 'not judged: no peer value' : 'not judged: not measured' };
      return { what: g.what, figure: g.figure, target, kind: 'ratio', value: r, verdict: r.median >= g.ratioAtLeast ? 'met' : 'missed' };
    }
    const ours = f && statsOf(f, 'ours');
    const atMost = 'oursAtMost' in g;
    const bound = atMost ? g.oursAtMost : g.oursAtLeast;
    const target = `${atMost ? '≤' : '≥'} ${bound} ${f?.unit ?? ''}`.trim();
    if (!ours) return { what: g.what, figure: g.figure, target, kind: 'value', verdict: 'not judged: not measured' };
    const met = atMost ? ours.median <= bound : ours.median >= bound;
    return { what: g.what, figure: g.figure, target, kind: 'value', value: ours, verdict: met ? 'met' : 'missed' };
  });
}

/** The goals as a Markdown table: goal, target, the judged median with its min–max, met/missed. */
export function goalsTable(verdicts: readonly GoalVerdict[], figures: Figures): string[] {
  return [
    `| goal | target | median (min–max) | rounds | verdict |`,
    `| --- | --- | --- | --- | --- |`,
    ...verdicts.map((v) => {
      const unit = figures.get(v.figure)?.unit ?? '';
      const value = v.kind === 'ratio' ? fmtRatio(v.value) : v.value ? `${fmt(v.value, unit)} ${unit}` : '—';
      return `| ${v.what} | ${v.target} | ${value} | ${v.value?.samples.length ?? 0} | ${v.verdict === 'met' ? 'met' : v.verdict === 'missed' ? '**missed**' : v.verdict} |`;
    }),
  ];
}

/** The figures as a Markdown table: per system the median (min–max) over rounds, and the per-round ratio. */
export function figuresTable(figures: Figures): string[] {
  return [
    `| figure | unit | maillab | peer | ratio, per round: median (min–max) (>1: maillab better) |`,
    `| --- | --- | --- | --- | --- |`,
    ...figures.all().map((f) => `| ${f.title} | ${f.unit} | ${fmt(statsOf(f, 'ours'), f.unit)} | ${fmt(statsOf(f, 'peer'), f.unit)} | ${fmtRatio(ratioStats(f))} |`),
  ];
}

/** The JSON form of a figure: each system's rounds and stats, and the ratios. */
export function figureJson(f: Figure) {
  return { id: f.id, title: f.title, unit: f.unit, better: f.better, ours: statsOf(f, 'ours') ?? null, peer: statsOf(f, 'peer') ?? null, ratio: ratioStats(f) ?? null, rounds: f.rounds };
}

/** The order of the systems (or variants) in round `round`: as listed in even rounds, reversed in odd ones, so none always runs first. */
export function orderOf<T>(sides: readonly T[], round: number): T[] {
  return round % 2 === 0 ? [...sides] : [...sides].reverse();
}
