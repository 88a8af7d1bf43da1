"""Reading and writing the package's files: atomic writes (temp file, fsync, rename) and JSONL.

Every file a run or a command writes goes through :func:`atomic_write_bytes`, so a reader (or a
resumed run) sees the old file or the new one, never half of one; a write that fails (a full
disk, a read-only folder) removes its temp file and raises :class:`~qcrd_plugin.errors.WriteFailed`
naming the file. Every JSONL file is read by :func:`read_jsonl` under the bad input policy of
``docs/formats.md``: no line is ever skipped silently.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable

from .errors import UserInputError, WriteFailed


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (the directory entry, not only the file's data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to a temp file beside ``path``, fsync, then rename over ``path``.

    A failed write (``OSError``: a full disk, a read-only folder) removes the temp file, leaves
    ``path`` as it was and raises :class:`WriteFailed` naming the file; a kill leaves at most the
    temp file, which the next write replaces.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not land before the data does
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {path} ({err.strerror or err})") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """:func:`atomic_write_bytes` of ``value`` as indented JSON."""
    atomic_write_text(path, json.dumps(value, indent=2, default=str))


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records atomically, one JSON object per line, ASCII-escaped so that tools which also
    split lines on U+2028 still see one record per line."""
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


# The longest line (one record) a JSONL reader accepts. Real records are kilobytes (a pool line
# with 64 long samples stays well under 1 MiB); a longer line is a wrong file or a corrupt one,
# and is refused after reading this much of it instead of being loaded whole.
MAX_LINE_BYTES = 4 * 2**20


def decode_utf8(raw: bytes, path: Path, error: type[Exception] | None = None) -> str:
    """A whole file's bytes as text (a UTF-8 byte-order mark is dropped). Bytes that are not
    UTF-8 raise ``error`` (default UserInputError) naming the file and the line they sit on."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise (error or UserInputError)(f"{path}: line {line}: not UTF-8 text") from None


def parse_json(text: str, path: Path, line: int | None = None):
    """``json.loads(text)``; a bad document raises UserInputError naming ``path`` and the line
    (``line``, or where the JSON parser stopped)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}:{line or err.lineno}: not valid JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:  # an int over 4300 digits; nesting too deep
        where = f"{path}:{line}" if line else str(path)
        raise UserInputError(f"{where}: not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None


def read_jsonl(path: Path, opener: Callable = open) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line of a JSONL file (``opener``: ``gzip.open``
    for a ``.gz`` file).

    Bad input policy (docs/formats.md): no line is ever skipped. A line that is not UTF-8, not
    JSON, not a JSON object or longer than :data:`MAX_LINE_BYTES` raises UserInputError naming
    the file and line; so does a file that cannot be read (a folder, a corrupt ``.gz``). Blank
    lines are not records, and a UTF-8 byte-order mark at the start is allowed.
    """
    records = []
    try:
        with opener(path, "rb") as handle:
            number = 0
            while raw := handle.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise UserInputError(
                        f"{path}:{number}: line longer than {MAX_LINE_BYTES // 2**20} MiB, the limit for "
                        "one record (is this a JSONL file?)"
                    )
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise UserInputError(
                        f"{path}:{number}: not UTF-8 text (byte {err.start + 1} of the line)"
                    ) from None
                if not line.strip():
                    continue
                record = parse_json(line, path, number)
                if not isinstance(record, dict):
                    raise UserInputError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                records.append((number, record))
    except (OSError, EOFError, zlib.error) as err:  # a folder, an unreadable file, a corrupt or truncated .gz
        if isinstance(err, FileNotFoundError):
            raise UserInputError(f"{path}: file not found") from None
        raise UserInputError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    return records


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line, record) for every record of a user's data file: JSONL (one object per line), or one
    JSON array of objects, as many datasets ship (each record named by the line it starts on).
    The bad input policy of :func:`read_jsonl` holds for both."""
    try:
        head = Path(path).open("rb").read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise UserInputError(f"{path}: file not found") from None
        raise UserInputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not head.startswith(b"["):
        return read_jsonl(Path(path))
    text = decode_utf8(Path(path).read_bytes(), Path(path))
    decoder, records = json.JSONDecoder(), []
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            raise UserInputError(
                f"{path}:{text.count(chr(10), 0, position) + 1}: not valid JSON (the array is not closed with ']')"
            )
        if text[position] == "]":
            break
        line = text.count("\n", 0, position) + 1
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise UserInputError(f"{path}:{text.count(chr(10), 0, err.pos) + 1}: not valid JSON ({err.msg})") from None
        except (ValueError, RecursionError) as err:
            raise UserInputError(f"{path}:{line}: not valid JSON ({type(err).__name__})") from None
        if not isinstance(record, dict):
            raise UserInputError(f"{path}:{line}: expected a JSON object in the array, got {type(record).__name__}")
        records.append((line, record))
    if text[position + 1 :].strip():
        raise UserInputError(
            f"{path}:{text.count(chr(10), 0, position) + 1}: text after the closing ']' of the JSON array"
        )
    return records
