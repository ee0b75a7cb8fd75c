"""Options of ``mesh console``: where it listens, who may use it, where its links point."""

from __future__ import annotations

import hmac
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseSettings):
    """``MESH_CONSOLE_*`` environment variables (or keyword arguments in tests)."""

    model_config = SettingsConfigDict(env_prefix="MESH_CONSOLE_", extra="ignore")

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback also needs ``allow_remote``."""
    port: int = Field(default=8470, ge=0, le=65535)
    """TCP port (0 picks a free one)."""
    allow_remote: bool = False
    """Serve clients that are not on this machine (they must send the bearer token)."""
    token: str = ""
    """Bearer token for remote clients and for every write action; empty disables both."""
    token_file: str = ""
    """File holding the token (a mounted Kubernetes Secret); wins over ``token`` when set."""
    jaeger_ui_url: str = ""
    """Base URL of the Jaeger UI, e.g. ``http://127.0.0.1:16686``; a run links to ``<url>/trace/<id>``."""
    scratchpad_dir: str = ""
    """Directory of the agents' scratchpads (default ``$MESH_STATE_DIR/scratchpads``)."""
    max_runs: int = Field(default=2000, ge=1)
    """Workflows the live log tail keeps in memory (the least recently updated are dropped)."""
    operator: str = ""
    """Name decisions are attributed to when the request does not say (default: the token's holder)."""

    def bearer_token(self) -> str:
        """The configured token ("" when none); read from ``token_file`` at every call so a rotated Secret applies."""
        if self.token_file:
            try:
                return Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError:
                return ""
        return self.token.strip()

    def token_matches(self, presented: str) -> bool:
        """Constant-time comparison of a presented token with the configured one."""
        expected = self.bearer_token()
        return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())

    def scratchpads(self, state_dir: Path) -> Path:
        """Where the scratchpads are."""
        return (
            Path(self.scratchpad_dir).expanduser()
            if self.scratchpad_dir
            else state_dir / "scratchpads"
        )
