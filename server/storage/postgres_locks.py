"""The PostgreSQL advisory locks kbrec takes, as (key space, purpose) pairs.

Advisory locks are per database, so kbrec stores in different databases of one
server do not contend; the key space keeps them apart from other applications'.
"""

from __future__ import annotations

from typing import Final

KEY_SPACE: Final = 0x6B627263  # "kbrc"
# Held by the transaction that migrates the schema.
MIGRATIONS_LOCK: Final = (KEY_SPACE, 1)
# Held by every write transaction from its start to its commit: change seqs commit in order.
CHANGES_LOCK: Final = (KEY_SPACE, 2)
# Held by the leader's session for as long as it leads.
LEADER_LOCK: Final = (KEY_SPACE, 3)
