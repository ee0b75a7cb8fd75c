"""``python -m mesh.testing.peer_process``: one ``Peer`` in its own OS process (the child's side).

``mesh.testing.PeerProcess`` starts it and speaks its stdin/stdout protocol; run by hand it reads
one JSON command per line (see ``mesh.testing.PeerProcess``). This module exports nothing.
"""

from __future__ import annotations

from mesh.testing._peer_process import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
