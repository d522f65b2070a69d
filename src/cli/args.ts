// The CLI's option parsing, shared by every command (kept apart from the commands, which load lazily).

/** The value after `name` (`--lab lab/mail.ts`), if given. */
export function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Every value of a repeatable option (`--to a --to b`); comma-separated lists count too. */
export function options(args: string[], name: string): string[] {
  const values: string[] = [];
  args.forEach((a, i) => {
    if (a === name && args[i + 1] !== undefined) values.push(...args[i + 1]!.split(',').filter(Boolean));
  });
  return values;
}
