"""Persistent state: keys and usage (SQLite by default)."""

from agentrouter.store.models import KeyRow, UsageDelta, UsageTotals
from agentrouter.store.sqlite import Store, StoreError

__all__ = ["KeyRow", "Store", "StoreError", "UsageDelta", "UsageTotals"]
