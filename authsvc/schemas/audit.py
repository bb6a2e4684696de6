"""The audit chain's verification report (``GET /audit/verify``, ``authsvc audit verify``)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

BreakReason = Literal["digest_mismatch", "missing", "prev_mismatch", "head_mismatch"]


class BrokenLink(BaseModel):
    seq: int = Field(description="Where the chain breaks (for `missing`: the absent seq).")
    id: uuid.UUID | None = Field(
        description="The event found there; null when no row is (`missing`, `head_mismatch`)."
    )
    reason: BreakReason = Field(
        description="`digest_mismatch`: the row was changed. `missing`: a seq is absent (a "
        "row deleted). `prev_mismatch`: the row does not follow its predecessor (inserted or "
        "reordered). `head_mismatch`: the chain's head disagrees with the last row (the "
        "newest rows deleted, or rows appended behind the chain's back)."
    )


class ChainReport(BaseModel):
    intact: bool
    events: int = Field(description="Events in the trail.")
    first_broken: BrokenLink | None = Field(description="The first broken link; null if intact.")
