"""The README and the docs site run as written.

Every ```bash and ```python block is executed, in order, as a reader would paste it: the README in
one empty folder, the docs pages (in the order of mkdocs.yml's nav) one after another in another, so
a page may use what an earlier one made (the home page makes photos/ and models/vgg16.onnx). Shell
blocks run under ``bash -euo pipefail`` with this virtual environment's ``bin`` first on PATH, so
``featuremaps`` is the installed command; Python blocks run in a fresh interpreter each.

A block that needs what a plain machine lacks (a GPU, a cluster, the network, ImageNet weights) is
preceded by ``<!-- skip: REASON -->``; ``test_marked_block`` reports each one as skipped with its
reason. Other fences must say ``text``. The fast tests check that every block is run or marked and
that every relative link resolves; the slow test runs the blocks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.long_module  # minutes: scheduled first (tests/conftest.py)

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
RUN = ("bash", "python")  # fence languages that are executed
NOT_RUN = ("text",)  # fence languages that are shown only
SKIP = re.compile(r"<!--\s*skip:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason from a <!-- skip: ... --> comment right above, else None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def nav_pages() -> list[Path]:
    """docs pages in the order of mkdocs.yml's nav (read as text: no YAML parser needed)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:", 1)[1]
    return [DOCS / name for name in re.findall(r"^\s*-\s*[^:\n]+:\s*(\S+\.md)\s*$", nav, flags=re.M)]


def documents() -> list[Path]:
    return [ROOT / "README.md", *nav_pages()]


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, with the skip reason written right above it (blank lines
    between allowed)."""
    found, lines, i = [], doc.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{doc}:{i + 1}: unclosed code fence"
        above = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        reason = SKIP.search(above)
        found.append(Block(doc, i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n",
                           reason.group(1) if reason else None))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for doc in documents() for b in blocks(doc)]


# ------------------------------------------------------------------ fast checks


def test_every_docs_page_is_in_the_nav_and_exists():
    pages = nav_pages()
    missing = [str(p) for p in pages if not p.is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
    orphans = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p not in pages)
    assert not orphans, f"docs pages missing from mkdocs.yml's nav (add them): {orphans}"


def test_every_block_is_run_or_marked_skipped_with_a_reason():
    problems = []
    for b in all_blocks():
        if b.lang not in RUN + NOT_RUN:
            problems.append(f"{b.where}: fence language {b.lang!r}: use one of {RUN + NOT_RUN}")
        if b.skip is not None and (b.lang not in RUN or not b.skip):
            problems.append(f"{b.where}: a skip comment needs a reason and a bash/python block")
    for doc in documents():  # a skip comment that does not sit right above a block is a typo
        text = doc.read_text()
        marked = {b.line for b in blocks(doc) if b.skip is not None}
        for m in SKIP.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            following = text.splitlines()[line:]
            nxt = line + 1 + next(k for k, ln in enumerate(following) if ln.strip())
            if nxt not in marked:
                problems.append(f"{doc.relative_to(ROOT)}:{line}: skip comment not right above a code block")
    assert not problems, "\n".join(problems)
    assert sum(b.lang in RUN and b.skip is None for b in all_blocks()) >= 20  # the parser found them


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor MkDocs' toc extension makes of a heading (lower case, words joined by '-')."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def _anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def test_every_relative_link_resolves():
    broken = []
    for doc in documents():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s):, mailto:
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, "\n".join(broken)


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("block", [b for b in all_blocks() if b.skip], ids=lambda b: b.where)
def test_marked_block(block):
    """Lists each block the slow test does not run, with the reason written above it."""
    pytest.skip(f"{block.where}: {block.skip}")


# ------------------------------------------------------------------ the blocks, run


def _env(scratch: Path) -> dict:
    import matplotlib

    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "featuremaps").exists():
        pytest.fail(f"no featuremaps command next to {sys.executable}: install the package (pip install -e .)")
    env = dict(os.environ)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        MPLBACKEND="Agg",
        MPLCONFIGDIR=matplotlib.get_cachedir(),  # reuse the font cache (XDG_CACHE_HOME moves below)
        XDG_CACHE_HOME=str(scratch / ".cache"),  # the model cache starts empty and stays here
        TORCH_HOME=str(scratch / ".torch"),  # no ImageNet checkpoint: --weights auto is random here
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(block: Block, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    if block.lang == "bash":
        cmd, stdin = ["bash", "-euo", "pipefail", "-c", block.code], None
    else:
        cmd, stdin = [sys.executable, "-"], block.code
    return subprocess.run(cmd, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def _run_in_order(docs: list[Path], scratch: Path, times: list[tuple[str, float]]) -> None:
    env = _env(scratch)
    for doc in docs:
        for block in blocks(doc):
            if block.lang not in RUN or block.skip:
                continue
            start = time.perf_counter()
            proc = _run(block, scratch, env)
            times.append((block.where, time.perf_counter() - start))
            assert proc.returncode == 0, (
                f"{block.where} failed (exit {proc.returncode}):\n{block.code}\n"
                f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("part", ["README.md", "docs"])
def test_blocks_run_as_written(part, tmp_path, capsys, request):
    """README.md's blocks in one empty folder; the docs pages' blocks in nav order in another (the
    object storage page writes to bucket ``featuremaps-docs`` on the tests' S3 server, 127.0.0.1)."""
    docs = [ROOT / "README.md"] if part == "README.md" else nav_pages()
    if part == "docs":
        server = request.getfixturevalue("s3_server")  # AWS_* of this process (and the blocks) point at it
        fs = server.fs()
        if not fs.exists("featuremaps-docs"):
            fs.mkdir("featuremaps-docs")
    times: list[tuple[str, float]] = []
    try:
        _run_in_order(docs, tmp_path, times)
    finally:
        with capsys.disabled():  # the time each block took, for keeping this test affordable
            print(f"\n{part}: {len(times)} blocks in {sum(t for _, t in times):.0f} s: "
                  + ", ".join(f"{w} {t:.0f} s" for w, t in times))
    if part == "docs":  # what the pages promise to leave behind
        assert (tmp_path / "models" / "vgg16-int8.ort").is_file()
        assert (tmp_path / "figs" / "chelsea-overview.png").is_file()
        assert (tmp_path / "report" / "index.html").is_file()


# ------------------------------------------------------------------ what the API page says in prose


def test_reference_features_takes_names_and_says_what_is_missing():
    """docs/api.md: ``taps`` are Tap records or text, with ``model_name=`` when ``model`` is a network."""
    torch = pytest.importorskip("torch")
    from featuremaps.errors import LayerError
    from featuremaps.export.reference import reference_features

    maps = reference_features("resnet18", torch.zeros(1, 3, 64, 64), "layer1,layer2.0.add")
    assert maps["layer1.1.relu_1"].shape == (1, 64, 16, 16) and maps["layer2.0.add"].shape == (1, 128, 8, 8)
    net = __import__("torchvision").models.vgg11()
    with pytest.raises(LayerError, match="say which model they belong to"):
        reference_features(net, torch.zeros(1, 3, 32, 32), "0,5")
