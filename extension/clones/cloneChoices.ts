/** Clone VM...'s choices (pure: unit-tested in test/unit/clones.test.ts). */

export interface CloneChoice {
  label: string;
  description: string;
  full: boolean;
}

export const CLONE_KINDS: readonly CloneChoice[] = [
  { label: 'Linked clone', description: 'in milliseconds; shares the source\'s disk (the source cannot be deleted while the clone exists)', full: false },
  { label: 'Full copy', description: 'an independent disk; takes longer and uses as much space as the source', full: true },
];

/** A free name to suggest: `<source>-clone`, `<source>-clone-2`... (within 63 characters). */
export function suggestName(source: string, taken: (name: string) => boolean): string {
  const base = `${source.slice(0, 57)}-clone`;
  let name = base;
  for (let i = 2; taken(name); i++) name = `${base}-${i}`;
  return name;
}
