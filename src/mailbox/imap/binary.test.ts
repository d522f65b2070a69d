// BINARY (RFC 3516): FETCH BINARY[part], BINARY.PEEK, BINARY.SIZE, partial fetches, literal8 answers and UNKNOWN-CTE.
// The RFC has no examples section; these follow its grammar (§7) and rules (§4.2, §4.3).
import { describe, expect, test } from 'vitest';
import { STORES, type StoreFactory } from './stores.test-helper.js';
import { BOB, useWire } from './wire.test-helper.js';

const crlf = (...l: string[]) => l.map((x) => x + '\r\n').join('');
const BYTES = Buffer.from([0x00, 0x01, 0x02, 0xff, 0x0d, 0x0a, 0x41]);

const MULTIPART = Buffer.from(
  crlf(
    'From: a@example.test',
    'Subject: parts',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b"',
    '',
    '--b',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    'Sch=C3=B6ne Gr=C3=BC=C3=9Fe,   ',
    'a long line=',
    ' joined',
    '--b',
    'Content-Type: application/octet-stream',
    'Content-Transfer-Encoding: base64',
    '',
    BYTES.toString('base64'),
    '--b',
    'Content-Type: application/octet-stream',
    'Content-Transfer-Encoding: x-uuencode',
    '',
    'begin 644 x',
    '--b--',
  ),
);
const TEXT = Buffer.from('Schöne Grüße,\r\na long line joined');
const SINGLE = Buffer.from(crlf('Subject: one', 'Content-Transfer-Encoding: BASE64', '', Buffer.from('hello\r\n').toString('base64')));

describe.each(STORES)('BINARY on the %s', (_name, makeStore: StoreFactory) => {
  const wire = useWire(makeStore);
  const last = (l: string[]) => l[l.length - 1];
  const setup = async () => {
    await wire.store.deliver(BOB, MULTIPART);
    await wire.store.deliver(BOB, SINGLE);
    await wire.ok('SELECT INBOX');
  };
  const literal = (data: Buffer, eight = false) => `${eight ? '~' : ''}{${data.length}}\r\n${data.toString('latin1')}`;

  test('is advertised', async () => {
    expect((await wire.ok('CAPABILITY'))[0]!.split(' ')).toContain('BINARY');
  });

  test('BINARY.PEEK and BINARY.SIZE undo quoted-printable and base64; NUL comes as a literal8', async () => {
    await setup();
    expect(await wire.ok('FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])')).toEqual([`* 1 FETCH (BINARY.SIZE[1] ${TEXT.length} BINARY[1] ${literal(TEXT)})`]);
    expect(await wire.ok('FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])')).toEqual([`* 1 FETCH (BINARY[2] ${literal(BYTES, true)} BINARY.SIZE[2] 7)`]);
    // Partial fetches count in decoded octets; without NUL the data is a plain literal.
    expect(await wire.ok('FETCH 1 (BINARY.PEEK[2]<1.3> BINARY.PEEK[1]<100.5>)')).toEqual([`* 1 FETCH (BINARY[2]<1> ${literal(BYTES.subarray(1, 4))} BINARY[1]<100> "")`]);
    expect(await wire.ok('UID FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1])')).toEqual([`* 2 FETCH (UID 2 BINARY[1] ${literal(Buffer.from('hello\r\n'))} BINARY.SIZE[1] 7)`]);
    // The whole message is as stored; a part that does not exist is NIL, its size 0.
    expect(await wire.ok('FETCH 2 (BINARY.PEEK[] BINARY.PEEK[4] BINARY.SIZE[4])')).toEqual([`* 2 FETCH (BINARY[] ${literal(SINGLE)} BINARY[4] NIL BINARY.SIZE[4] 0)`]);
    expect((await wire.store.messages(BOB, 'INBOX')).map((m) => m.flags)).toEqual([[], []]);
  });

  test('BINARY sets \\Seen, as BODY does', async () => {
    await setup();
    expect(await wire.ok('FETCH 2 BINARY[1]')).toEqual([`* 2 FETCH (BINARY[1] ${literal(Buffer.from('hello\r\n'))} FLAGS (\\Seen \\Recent))`]);
  });

  test('an encoding we cannot undo is NO [UNKNOWN-CTE]; sections other than part numbers are BAD', async () => {
    await setup();
    expect(last(await wire.run('FETCH 1 BINARY.PEEK[3]'))).toMatch(/^t\d+ NO \[UNKNOWN-CTE\] /);
    expect(last(await wire.run('FETCH 1 BINARY.SIZE[3]'))).toMatch(/^t\d+ NO \[UNKNOWN-CTE\] /);
    for (const bad of ['BINARY[1.MIME]', 'BINARY[HEADER]', 'BINARY[0]', 'BINARY[1.]', 'BINARY.SIZE[1]<0.1>', 'BINARY']) {
      expect(last(await wire.run(`FETCH 1 ${bad}`)), bad).toMatch(/^t\d+ BAD /);
    }
  });
});
