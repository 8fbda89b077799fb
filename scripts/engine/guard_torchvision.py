"""Guard torchvision's two fake-op registrations (nms, qnms) so the registry build imports
beside a CPU torch. See scripts/setup_engine.sh. Idempotent (marked _cosmos_guard)."""

import importlib.util
import pathlib
import re

spec = importlib.util.find_spec("torchvision")
if spec is None:
    raise SystemExit("torchvision missing from engine venv")
meta = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
src = meta.read_text()
if "_cosmos_guard" not in src:
    # torchvision 0.28/0.29 write `@torch.library.register_fake("torchvision::nms")`, older ones
    # `@register_meta("nms")`. Exactly two lines (nms, qnms) must change: if the file has moved
    # on, fail here rather than leave an engine that cannot import.
    new, count = re.subn(
        r'^@((?:torch\.library\.register_fake|register_meta)\("(?:torchvision::)?q?nms"\))[ \t]*$',
        r'@(\1 if __import__("torchvision").extension._has_ops() else (lambda f: f))'
        "  # _cosmos_guard",
        src,
        flags=re.M,
    )
    if count != 2:
        raise SystemExit(f"{meta}: expected 2 nms/qnms registrations to guard, found {count}")
    meta.write_text(new)
