"""The patch series: applied in order; a failing patch is named with its failed hunks and
leaves the tree untouched; a malformed series is refused."""

import subprocess

import pytest

from conftest import ROOT
from pyisolate_build import patches
from pyisolate_build.errors import LockError, PatchError

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 41))


def make_patch(tmp_path, name, old, new, path="Lib/mod.txt"):
    """A real unified diff made by diff(1), as a developer would."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root, text in ((a, old), (b, new)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    diff = subprocess.run(["diff", "-u", f"a/{path}", f"b/{path}"], cwd=tmp_path, capture_output=True, text=True)
    assert diff.returncode == 1, diff.stderr
    return diff.stdout


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "Lib").mkdir(parents=True)
    (src / "Lib" / "mod.txt").write_text(ORIGINAL)
    return src


def write_series(tmp_path, entries):
    pdir = tmp_path / "cpython-patches"
    pdir.mkdir(exist_ok=True)
    for name, text in entries.items():
        (pdir / name).write_text(text)
    (pdir / "series").write_text("# test series\n" + "".join(f"{n}  # comment\n" for n in entries))
    return pdir


def test_project_series_is_valid():
    for patch in patches.read_series(ROOT / "cpython-patches"):
        assert patch.path.is_file()


def test_series_applies_in_order(tmp_path, tree):
    step1 = ORIGINAL.replace("line 5\n", "line five\n")
    step2 = step1.replace("line five\n", "line FIVE\n")  # only applies after step 1
    pdir = write_series(
        tmp_path,
        {
            "a-first.patch": make_patch(tmp_path / "p1", "x", ORIGINAL, step1),
            "b-second.patch": make_patch(tmp_path / "p2", "x", step1, step2),
        },
    )
    summary = patches.apply_series(patches.read_series(pdir), tree)
    assert (tree / "Lib" / "mod.txt").read_text() == step2
    assert summary == ["a-first.patch: 1 file(s)", "b-second.patch: 1 file(s)"]


def test_failed_hunk_is_named_and_tree_untouched(tmp_path, tree):
    # Two hunks; the second expects text the tree does not have.
    wrong_base = ORIGINAL.replace("line 30\n", "something else\n")
    new = wrong_base.replace("line 3\n", "LINE 3\n").replace("line 33\n", "LINE 33\n")
    pdir = write_series(tmp_path, {"core-change.patch": make_patch(tmp_path / "p", "x", wrong_base, new)})
    with pytest.raises(PatchError) as info:
        patches.apply_series(patches.read_series(pdir), tree)
    err = info.value
    assert err.patch == "core-change.patch"
    assert any("Lib/mod.txt" in h and "Hunk #2 FAILED" in h for h in err.hunks), err.hunks
    assert "core-change.patch" in str(err) and "Hunk #2 FAILED" in str(err)
    # Hunk 1 would have applied, but the dry run stopped everything: no half-patched file.
    assert (tree / "Lib" / "mod.txt").read_text() == ORIGINAL
    assert not list(tree.rglob("*.rej")) and not list(tree.rglob("*.orig"))


def test_already_applied_patch_is_refused(tmp_path, tree):
    new = ORIGINAL.replace("line 5\n", "line five\n")
    pdir = write_series(tmp_path, {"twice.patch": make_patch(tmp_path / "p", "x", ORIGINAL, new)})
    (tree / "Lib" / "mod.txt").write_text(new)
    with pytest.raises(PatchError, match=r"twice\.patch"):
        patches.apply_series(patches.read_series(pdir), tree)


def test_patch_for_missing_file(tmp_path, tree):
    pdir = write_series(
        tmp_path,
        {
            "ghost.patch": make_patch(tmp_path / "p", "x", ORIGINAL, ORIGINAL + "more\n", path="Lib/ghost.txt"),
        },
    )
    with pytest.raises(PatchError, match=r"ghost\.patch"):
        patches.apply_series(patches.read_series(pdir), tree)


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ("missing.patch\n", "missing.patch is listed but does not exist"),
        ("x.patch\nx.patch\n", "listed twice"),
        ("../escape.patch\n", "is not a \\*.patch file name"),
        ("notes.txt\n", "is not a \\*.patch file name"),
    ],
)
def test_bad_series(tmp_path, series, message):
    pdir = tmp_path / "cpython-patches"
    pdir.mkdir()
    (pdir / "x.patch").write_text("")
    (pdir / "series").write_text(series)
    with pytest.raises(LockError, match=message) as info:
        patches.read_series(pdir)
    assert "line" in str(info.value)
