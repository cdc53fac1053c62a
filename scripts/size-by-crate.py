#!/usr/bin/env python3
"""Which crates a function's binary is made of: text and data bytes by crate, from the symbols
of a build with symbols (`cargo build --profile profiling -p <function>`; the release build
is stripped). LTO inlines across crates, so a symbol counts for the crate it is named after.

  scripts/size-by-crate.py target/profiling/orders-create [--top 25]
"""

import argparse
import collections
import re
import subprocess


def crate_of(name):
    name = name.strip()
    # <impl Trait for Type>::method, <Type as Trait>::method: the type's crate
    m = re.match(r"<+(?:impl [^ ]+ for )?&?(?:mut )?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)", name)
    if m:
        return m.group(1)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    if m:
        return m.group(1)
    return "(C, asm, unnamed)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    out = subprocess.run(["nm", "-S", "--size-sort", "-C", args.binary], check=True,
                         capture_output=True, text=True).stdout
    sizes = collections.Counter()
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2].lower() in "tdrb":
            sizes[crate_of(parts[3])] += int(parts[1], 16)
    total = sum(sizes.values())
    print(f"{'crate':40} {'KiB':>8} {'share':>6}")
    for crate, size in sizes.most_common(args.top):
        print(f"{crate:40} {size / 1024:8.0f} {size / total:6.1%}")
    print(f"{'total (symbols)':40} {total / 1024:8.0f}")


if __name__ == "__main__":
    main()
