# ruff: noqa: F811 (the fixtures imported from broker_support are parameters here)
"""libsodium is linked statically: no libsodium.so among the dynamic dependencies of the
extension or of libpyisolate_broker.so, no libsodium symbol exported, version 1.0.22."""

from pathlib import Path

from broker_support import broker_lib, c, peer  # noqa: F401 (fixtures, used as parameters)
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile


def _needed_and_exports(path: Path) -> tuple[list[str], set[str]]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        needed = [
            tag.needed
            for section in elf.iter_sections()
            if isinstance(section, DynamicSection)
            for tag in section.iter_tags()
            if tag.entry.d_tag == "DT_NEEDED"
        ]
        dynsym = elf.get_section_by_name(".dynsym")
        exports = {s.name for s in dynsym.iter_symbols() if s.entry.st_shndx != "SHN_UNDEF" and s.name}
    return needed, exports


def test_extension_has_no_dynamic_libsodium(dist):
    (module,) = dist.glob("lib/python3.14t/site-packages/_pyisolate.*.so")
    needed, exports = _needed_and_exports(module)
    assert not [n for n in needed if "sodium" in n], needed
    assert "PyInit__pyisolate" in exports
    assert not [s for s in exports if s.startswith(("crypto_", "sodium_", "randombytes", "pyi_"))]


def test_broker_library_has_no_dynamic_libsodium(broker_lib):
    needed, exports = _needed_and_exports(broker_lib)
    assert not [n for n in needed if "sodium" in n], needed
    assert not [s for s in exports if s.startswith(("crypto_", "sodium_", "randombytes"))]
    assert "pyi_transport_seal" in exports


def test_version_is_the_pinned_one(peer, c):
    got = peer({"mode": "version"})
    assert got["sodium"] == got["broker"] == "1.0.22"
    assert c.sodium_version() == "1.0.22"
