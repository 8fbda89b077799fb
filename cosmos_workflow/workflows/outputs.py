"""The save folder's rules for `cosmos upsample`: which outputs may be written, and writing them.

- A file cosmos did not write (an input spec, anyone's file, a folder) is never replaced, not
  even with `--overwrite`: its item fails, naming the file.
- An output cosmos wrote and that was edited since is kept (the item is skipped and says so);
  `--overwrite` replaces it.
- An output whose new content would be identical is not rewritten (its mtime stays); a seed
  spec's `timestamp` does not count as a change.

What cosmos wrote is known from the save folder's ledger (`specs.outputs`). `plan_outputs`
decides before anything is sent (so `--dry-run` shows it); `write_outputs` checks again when
the results are in, records the new hashes, then writes each file atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from ..fsutil import atomic_write_bytes
from ..specs import upsampled_spec
from ..specs.outputs import OutputLedger, OutputState
from ..specs.writing import spec_bytes
from .jobs import PlannedItem

RUN_RECORD_NAME = "run.json"
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _not_ours(target: Path) -> dict:
    return {
        "code": "output_not_ours",
        "message": f"{target} exists and was not written by cosmos; it is never replaced",
        "hint": "choose another --save-dir, or move that file away",
    }


def _edited(target: Path) -> dict:
    return {
        "code": "output_edited",
        "message": f"{target} was changed since cosmos wrote it; kept as it is "
        "(the new prompt is in run.json)",
        "hint": "--overwrite replaces it",
    }


def plan_outputs(items: list[PlannedItem], save_dir: Path, *, overwrite: bool) -> None:
    """Set each planned item's `output_action` (new, replace, keep, overwrite), or fail it."""
    folder = Path(os.path.abspath(save_dir))
    ledger = OutputLedger.load(folder)
    actions = {
        OutputState.ABSENT: "new",
        OutputState.OWN: "replace",
        OutputState.EDITED: "overwrite" if overwrite else "keep",
    }
    for item in items:
        if item.status != "planned":
            continue
        target = folder / item.output_name
        if item.output_name.casefold() == RUN_RECORD_NAME:
            item.fail(
                {
                    "code": "reserved_output_name",
                    "message": f"its output {target} would be replaced by the run record "
                    "cosmos writes there",
                    "hint": 'rename the spec (its "name", or its file), or use another --save-dir',
                }
            )
            continue
        state = ledger.state(item.output_name)
        if state is OutputState.FOREIGN:
            item.fail(_not_ours(target))
        else:
            item.output_action = actions[state]


def write_outputs(items: list[PlannedItem], save_dir: Path, *, overwrite: bool) -> None:
    """Write the upsampled spec of each item (its `upsampled_prompt` is set) under the rules."""
    folder = Path(os.path.abspath(save_dir))
    ledger = OutputLedger.load(folder)
    to_write: list[tuple[PlannedItem, Path, bytes]] = []
    hashes: dict[str, str] = {}
    for item in items:
        target = folder / item.output_name
        state = ledger.state(item.output_name)
        if state is OutputState.FOREIGN:  # appeared while the job ran
            item.output_action = None
            item.fail(_not_ours(target))
            continue
        payload = spec_bytes(upsampled_spec(item.spec, item.upsampled_prompt, out_dir=folder))
        if state is not OutputState.ABSENT and _same_as_existing(item, target, payload, folder):
            if state is OutputState.EDITED:  # edited into exactly what cosmos writes
                hashes[item.output_name] = _sha256(target.read_bytes())
            item.status, item.output, item.output_action = "ok", str(target), "unchanged"
            continue
        if state is OutputState.EDITED and not overwrite:
            item.status, item.error, item.output_action = "skipped", _edited(target), "kept"
            continue
        to_write.append((item, target, payload))
        hashes[item.output_name] = _sha256(payload)
    # Hashes first: a crash before a file is renamed into place leaves the old file, whose
    # hash is in the ledger too, so it still counts as cosmos' own.
    ledger.record(hashes)
    for item, target, payload in to_write:
        try:
            atomic_write_bytes(target, payload)
        except OSError as exc:
            item.output_action = None
            item.fail(
                {
                    "code": "write_failed",
                    "message": f"cannot write {target}: {exc.strerror or exc}",
                    "hint": "check the free space and permissions of --save-dir, then rerun "
                    "the same command (the results are kept on the host)",
                }
            )
            continue
        item.status, item.output, item.output_action = "ok", str(target), "written"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_as_existing(item: PlannedItem, target: Path, payload: bytes, folder: Path) -> bool:
    """The file already holds `payload`, or differs only in a seed spec's `timestamp`."""
    try:
        existing = target.read_bytes()
    except OSError:
        return False
    if existing == payload:
        return True
    try:
        stamp = json.loads(existing).get("timestamp")
        written_at = datetime.strptime(stamp, _TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)
    except (ValueError, TypeError, AttributeError):
        return False
    data = upsampled_spec(item.spec, item.upsampled_prompt, out_dir=folder, now=written_at)
    return spec_bytes(data) == existing
