"""What `cosmos upsample` wrote into a save folder: the ledger `.cosmos-outputs.json`.

Before it writes an output spec, cosmos records the SHA-256 of the bytes it is about to write,
under the file's name, in a hidden ledger in the same folder (written atomically). A file in
the save folder is then, for cosmos:

- `ABSENT`: nothing there; the output is new.
- `OWN`: its bytes are ones cosmos wrote under that name: it may be replaced.
- `EDITED`: cosmos wrote a file of that name, but its bytes changed since: a hand edit, kept
  unless the user asks (`--overwrite`).
- `FOREIGN`: cosmos never wrote that name here (an input spec, anyone's file), or it is not a
  regular file (a folder, a link): never replaced, whatever the options.

The hash is recorded *before* the file is written, so a crash between the two leaves a file
that still counts as cosmos' own. A ledger that cannot be read counts as empty: every existing
file is then foreign, which loses nothing. Folder loads pass over the files a ledger lists
(they are earlier outputs, not inputs).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ..errors import CosmosError
from ..fsutil import atomic_write_json, sha256_file

LEDGER_NAME = ".cosmos-outputs.json"
LEDGER_KIND = "cosmos-output-ledger"
# Hashes kept per name: enough to recognise any recent version cosmos wrote.
_KEEP_HASHES = 20


class OutputState(str, Enum):
    ABSENT = "absent"
    OWN = "own"
    EDITED = "edited"
    FOREIGN = "foreign"


def _read(folder: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((folder / LEDGER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("kind") != LEDGER_KIND:
        return {}
    outputs = data.get("outputs")
    if not isinstance(outputs, dict):
        return {}
    return {
        name: [h for h in hashes if isinstance(h, str)]
        for name, hashes in outputs.items()
        if isinstance(name, str) and isinstance(hashes, list)
    }


@dataclass
class OutputLedger:
    """The ledger of one folder, as read; `record()` adds to it on disk."""

    folder: Path
    outputs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> OutputLedger:
        folder = Path(os.path.abspath(folder))
        return cls(folder, _read(folder))

    def lists(self, name: str) -> bool:
        """Cosmos wrote a file of this name here (maybe edited since)."""
        return name in self.outputs

    def state(self, name: str) -> OutputState:
        path = self.folder / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return OutputState.ABSENT
        except OSError:
            return OutputState.FOREIGN
        if not stat.S_ISREG(st.st_mode) or name not in self.outputs:
            return OutputState.FOREIGN
        try:
            digest = sha256_file(path)
        except OSError:
            return OutputState.FOREIGN
        return OutputState.OWN if digest in self.outputs[name] else OutputState.EDITED

    def record(self, written: dict[str, str]) -> None:
        """Add {name: sha256} before those files are written (re-read first: runs may share it)."""
        if not written:
            return
        outputs = _read(self.folder)
        for name, digest in written.items():
            hashes = [h for h in outputs.get(name, []) if h != digest] + [digest]
            outputs[name] = hashes[-_KEEP_HASHES:]
        self.outputs = outputs
        try:
            atomic_write_json(
                self.folder / LEDGER_NAME,
                {"kind": LEDGER_KIND, "version": 1, "outputs": outputs},
            )
        except OSError as exc:
            raise CosmosError(
                f"cannot write {self.folder / LEDGER_NAME}: {exc.strerror or exc}",
                "choose a --save-dir you can write to",
                code="save_dir_not_writable",
            ) from None
