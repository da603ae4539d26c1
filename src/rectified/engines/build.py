"""``python -m rectified.engines.build``: compile the fused engine's kernels into the cache
(the main one, and the state formats' one, which is otherwise built on first use).

Meant for set-up scripts and images, so that the first fused step of a program does not pay
the compilation (which it would otherwise do, once per installation). Prints where the library
is and how long it took; exits 1 (with the compiler's message) if it cannot be built. After a
failed build, later processes run foreach without compiling again; ``--force`` retries.
"""

from __future__ import annotations

import argparse
import sys
import time

from rectified.engines.fused import kernel as extension


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rectified.engines.build", description=__doc__)
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if cached or an earlier build failed")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for name, source in (("kernel", extension.SOURCE),
                         ("state formats' kernel", extension.FORMATS_SOURCE)):
        try:
            path = extension.build(force=args.force, source=source)
        except extension.BuildError as error:
            print(f"fused engine {name} not built: {error}", file=sys.stderr)
            return 1
        print(f"fused engine {name}: {path} ({time.perf_counter() - start:.1f} s)")
        start = time.perf_counter()
    return 0


if __name__ == "__main__":
    sys.exit(main())
