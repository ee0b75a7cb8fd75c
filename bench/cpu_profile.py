"""Run a module under cProfile with a CPU-time clock: ``python -m bench.cpu_profile OUT MODULE ARGS...``.

``python -m cProfile`` times functions by wall clock, so on a busy machine every function seems to
take as long as the scheduler keeps the process waiting; this uses ``time.process_time`` and
writes the stats to ``OUT`` when the module returns or exits (an agent on SIGTERM).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    """Profile ``MODULE`` with ``ARGS`` as its argv; dump the stats on the way out."""
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
