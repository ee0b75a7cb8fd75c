"""``python -m mesh.testing.fake_anthropic``: the fake Messages API as a process.

For demos and workflow tests that run agents as separate processes::

    python -m mesh.testing.fake_anthropic --port 8765 [--mode first-tool|needle] [--seed 0]

prints ``fake-anthropic listening on http://127.0.0.1:8765`` and serves until SIGINT/SIGTERM.
In-process tests use ``mesh.testing.FakeAnthropicServer``; this module exports nothing.
"""

from __future__ import annotations

import sys

from mesh.testing._anthropic import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
