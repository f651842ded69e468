#!/usr/bin/env python3
"""Lists Rust functions longer than N lines (rustfmt-formatted code): `tools/long_fns.py 80 DIR...`.

Issue 15's bound: no function in the agent or the engine over about 80 lines
(`tools/long_fns.py 80 crates/aha-agent crates/aha-engine` prints nothing).
"""
import os
import re
import sys

FN = re.compile(r'^(\s*)(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?fn (\w+)')


def long_fns(limit, roots):
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in sorted(files):
                if not name.endswith('.rs'):
                    continue
                path = os.path.join(dirpath, name)
                lines = open(path, encoding='utf-8').read().split('\n')
                for i, line in enumerate(lines):
                    m = FN.match(line)
                    if not m:
                        continue
                    indent = m.group(1)
                    for j in range(i + 1, len(lines)):
                        if lines[j] == indent + '}':
                            if j - i + 1 > limit:
                                yield j - i + 1, f'{path}:{i + 1}', m.group(7)
                            break


if __name__ == '__main__':
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    found = sorted(long_fns(int(sys.argv[1]), sys.argv[2:]), reverse=True)
    for n, where, fn in found:
        print(f'{n:5d} {where} {fn}')
    sys.exit(1 if found else 0)
