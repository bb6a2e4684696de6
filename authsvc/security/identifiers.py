"""The one normalization of a login name (an email address), for every comparison of two.

The per-account login limit, the account lookup and the uniqueness of addresses all compare
``normalize_email`` of the address, computed here in Python and stored beside the address
(``user.email_key``), never a database's ``lower()``: PostgreSQL's ``lower()`` follows the
server's locale (``lower('İ') = 'i'`` under glibc) and SQLite's folds ASCII only, so a key
computed one way and a lookup done the other let ``alİce@…`` reach alice's account under a limit
key of its own. With one function, every spelling that finds an account has that account's key.

The address itself is stored as given (the mailbox part may be case-sensitive to its server);
only the comparison key is folded:

1. NFKC, so compatibility forms (fullwidth ``ａ`` and ``＠``, ligatures, the Kelvin sign) become
   the characters they stand for;
2. Unicode case folding (``casefold``: ``İ`` → ``i̇``, ``ß`` → ``ss``), then NFKC again;
3. a COMBINING DOT ABOVE after ``i`` or ``j`` is dropped: those letters already carry the dot,
   so ``İ`` ends as ``i``, as the database's ``lower()`` has it;
4. invisible format characters (category Cf: zero-width space and joiners, soft hyphen, bidi
   controls) are dropped, and surrounding white space is stripped.

Lookalikes therefore share a key, and registration refuses the second of them.
"""

from __future__ import annotations

import re
import unicodedata

_DOT_ABOVE_ON_DOTTED = re.compile("(?<=[ij])\u0307")


def normalize_email(value: str) -> str:
    """The comparison key of an email address (or any login name)."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    folded = unicodedata.normalize("NFKC", folded)
    folded = _DOT_ABOVE_ON_DOTTED.sub("", folded)
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf").strip()
