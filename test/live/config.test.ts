/** persistence.conf and ventoy.json: round trips, properties, and bad input naming line or field. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CorruptImageError } from '../../src/errors.ts';
import { decodePersistenceConf, encodePersistenceConf, entryPaths, decodeVentoyJson, encodeVentoyJson, parseBootArgs } from '../../src/ops/live/index.ts';

const seed = process.env.CI ? { seed: 1313 } : {};
const name = fc.stringMatching(/^[a-z][a-z0-9_-]{0,7}$/).filter((n) => n !== 'lib');

describe('persistence.conf', () => {
  test('the usual files decode to their entries and paths', () => {
    const c = decodePersistenceConf('# comment\n\n/ union\n/home bind,source=.home\r\n  /opt\tlink,union,source=./x/\n');
    assert.deepEqual(c.entries, [
      { dir: '/', method: 'union', source: '', explicitSource: false },
      { dir: '/home', method: 'bind', source: '.home', explicitSource: true },
      { dir: '/opt', method: 'union', source: 'x', explicitSource: true },
    ]);
    assert.deepEqual(c.entries.map(entryPaths), [{ upper: '/rw', work: '/work' }, { upper: '/.home' }, { upper: '/x/rw', work: '/x/work' }]);
    assert.equal(encodePersistenceConf(c), '/ union\n/home bind,source=.home\n/opt union,source=x\n');
  });

  test('decode(encode(x)) is x for any valid set of lines', () => {
    const entry = fc.record({ dirParts: fc.array(name, { minLength: 1, maxLength: 3 }), method: fc.constantFrom('bind', 'link', 'union'), source: fc.option(fc.array(name, { minLength: 1, maxLength: 2 }), { nil: undefined }) });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 6 }), (raw) => {
        const entries: { dir: string; method: 'bind' | 'link' | 'union'; source: string; explicitSource: boolean }[] = [];
        for (const r of raw) {
          const dir = `/${r.dirParts.join('/')}`;
          const source = r.source ? r.source.join('/') : dir.slice(1);
          const clash = entries.some((e) => e.dir === dir || e.source === source || e.source.startsWith(`${source}/`) || source.startsWith(`${e.source}/`));
          if (!clash && !dir.startsWith('/run/live')) entries.push({ dir, method: r.method as 'bind', source, explicitSource: r.source !== undefined });
        }
        const text = encodePersistenceConf({ entries });
        assert.deepEqual(decodePersistenceConf(text).entries, entries);
        assert.equal(encodePersistenceConf(decodePersistenceConf(text)), text);
      }),
      seed,
    );
  });

  test('bad lines are refused naming the line and the rule', () => {
    const bad: [string, RegExp][] = [
      ['/ union\nusr bind\n', /line 2: "usr" is not an absolute directory/],
      ['/a/../b bind\n', /line 1: .* \. or \.\. component/],
      ['/lib bind\n', /line 1: .*refuses persistence on \/lib/],
      ['/run/live/x bind\n', /below \/run\/live/],
      ['/a bind,frobnicate\n', /line 1: unknown option "frobnicate"/],
      ['/a bind,,union\n', /empty option/],
      ['/a bind union\n', /found 3 fields/],
      ['/a bind,source=../x\n', /leaves the persistence volume/],
      ['/a bind,source=\n', /source= needs a path/],
      ['/a bind\n/b bind,source=a/b\n', /line 2: its source "a\/b" and line 1's "a" are the same or nested/],
      ['/a bind\n/a union,source=z\n', /line 2: \/a is listed twice/],
      ['/ union\n/x union,source=.\n', /line 2: .* same or nested/],
      ['/a\0 bind\n', /NUL/],
    ];
    for (const [text, re] of bad) {
      assert.throws(() => decodePersistenceConf(text), (err: unknown) => err instanceof CorruptImageError && re.test(err.message), text);
    }
  });

  test('arbitrary text decodes or throws CorruptImageError, nothing else', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (text) => {
        try {
          decodePersistenceConf(text);
        } catch (err) {
          assert.ok(err instanceof CorruptImageError, String(err));
        }
      }),
      seed,
    );
  });
});

describe('ventoy.json', () => {
  test('the persistence plugin decodes; other keys survive encode', () => {
    const v = decodeVentoyJson('\uFEFF{"control":[{"VTOY_DEFAULT_MENU_MODE":"1"}],"persistence":[{"image":"/a.iso","backend":"/a.dat"},{"image":"/b.iso","backend":["/b1.dat","/b2.dat"],"autosel":2,"timeout":5}]}');
    assert.deepEqual(v.persistence, [{ image: '/a.iso', backends: ['/a.dat'] }, { image: '/b.iso', backends: ['/b1.dat', '/b2.dat'], autosel: 2, timeout: 5 }]);
    const again = decodeVentoyJson(encodeVentoyJson(v));
    assert.deepEqual(again, v);
    assert.deepEqual(decodeVentoyJson('{}').persistence, []);
  });

  test('decode(encode(x)) is x for any plugin', () => {
    const path = fc.array(name, { minLength: 1, maxLength: 3 }).map((p) => `/${p.join('/')}`);
    const entry = fc.record({ image: path, backends: fc.uniqueArray(path, { minLength: 1, maxLength: 3 }), timeout: fc.option(fc.nat(100), { nil: undefined }) });
    fc.assert(
      fc.property(fc.uniqueArray(entry, { selector: (e) => e.image, maxLength: 4 }), fc.boolean(), (entries, withAutosel) => {
        const persistence = entries.map((e) => ({ image: e.image, backends: e.backends, ...(withAutosel ? { autosel: e.backends.length } : {}), ...(e.timeout !== undefined ? { timeout: e.timeout } : {}) }));
        const value = { persistence, other: { theme: { file: '/t.txt' } } };
        assert.deepEqual(decodeVentoyJson(encodeVentoyJson(value)), value);
      }),
      seed,
    );
  });

  test('bad input names the field or the line', () => {
    const bad: [string, RegExp][] = [
      ['{\n  "persistence": [\n    {"image": "/a.iso",, }\n  ]\n}', /ventoy\.json: line 3: not valid JSON/],
      ['[]', /top level: must be a JSON object/],
      ['{"persistence": {}}', /persistence: must be a list/],
      ['{"persistence": [1]}', /persistence\[0\]: must be an object/],
      ['{"persistence": [{"image": "a.iso", "backend": "/a.dat"}]}', /persistence\[0\]\.image: "a\.iso" must be an absolute path/],
      ['{"persistence": [{"image": "/a.iso"}]}', /persistence\[0\]\.backend: is missing/],
      ['{"persistence": [{"image": "/a.iso", "backend": []}]}', /backend: is an empty list/],
      ['{"persistence": [{"image": "/a.iso", "backend": ["/x", 3]}]}', /backend\[1\]: must be a non-empty string/],
      ['{"persistence": [{"image": "/a.iso", "backend": ["/x", "/x"]}]}', /"\/x" is listed twice/],
      ['{"persistence": [{"image": "/a.iso", "backend": "/x", "autosel": 2}]}', /autosel: must be an integer from 1 to 1/],
      ['{"persistence": [{"image": "/a.iso", "backend": "/x", "timeout": -1}]}', /timeout: must be an integer/],
      ['{"persistence": [{"image": "/a.iso", "backend": "/x", "colour": 1}]}', /persistence\[0\]\.colour: unknown field/],
      ['{"persistence": [{"image": "/a.iso", "backend": "/x"}, {"image": "/a.iso", "backend": "/y"}]}', /the image "\/a\.iso" is listed twice/],
      ['{"persistence": [{"image": "/../a.iso", "backend": "/x"}]}', /has a \.\. component/],
    ];
    for (const [text, re] of bad) assert.throws(() => decodeVentoyJson(text), (err: unknown) => err instanceof CorruptImageError && re.test(err.message), text);
  });
});

describe('boot config arguments', () => {
  test('values of kernel lines only, in order, without duplicates', () => {
    const a = parseBootArgs([
      'set layerfs=x\nmenuentry "a" {\n  linux /casper/vmlinuz layerfs-path=minimal.standard.live.squashfs persistent --- quiet\n}\n',
      'label live\n  append initrd=/live/initrd.img boot=live persistence persistence-label=p1,p2 layerfs-path=minimal.squashfs\n  append layerfs-path=minimal.standard.live.squashfs\n',
    ]);
    assert.deepEqual(a.values('layerfs-path'), ['minimal.standard.live.squashfs', 'minimal.squashfs']);
    assert.deepEqual(a.values('persistence-label'), ['p1,p2']);
    assert.equal(a.has('persistent'), true);
    assert.equal(a.has('layerfs'), false);
  });
});
