"""The documentation is true: its code compiles and runs, its links and nav resolve, the site builds strictly.

Fast: every code block of every page compiles, every relative link, image and anchor
target exists, the nav lists every page and nothing else, and ``mkdocs build --strict``
passes. Slow: every tutorial and how-to runs top to bottom as a script at its reduced
settings (``tests/doc_pages.py``), writes every figure it shows, and prints its table.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_pages  # noqa: E402  (the page runner, also a script)

ROOT = doc_pages.ROOT
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
EXECUTED = [DOCS / "quickstart.md", *sorted((DOCS / "tutorials").glob("*.md")), *sorted((DOCS / "howto").glob("*.md"))]
LINK = re.compile(r"(?<!`)!?\[[^\]]*\]\(([^)\s]+)\)")

# What each executed page must print at its reduced settings: the table or summary it is about.
PRINTS = {
    "quickstart.md": [r"'accuracy': 0\.\d+, 'nll': \d"],
    "prior-predictive.md": [r"\| prior \| logit scale \|", r"\| N\(0, 1\) \| \d", r"\| N\(0, 1/fan_in\) \| \d",
                            r"\| Dirichlet\(1\) rows \| \d", "prior_predictive"],
    "swapping-guides.md": [r"\| run \| data \| accuracy \|", *(rf"\| {m}( T=[\d.]+)? \| test \| \d" for m in
                                                             ("map", "laplace", "ensemble", "dirichlet", "bam",
                                                              "mean_field", "low_rank", "nuts")),
                           r"\| run \| rank \| elpd_loo \|"],
    "diagnostics.md": [r"\| weights \| \d+ \| [\d.]+ \|", r"\| test probabilities \| \d+ \| [\d.]+ \|",
                       "same predictions: True", r"elpd_loo +-?[\d.]+", r"\| run \| rank \| elpd_loo \|", "ECE: {"],
    "new-prior.md": ["nngp:weight_scale=2,bias_scale=0.5", "'degenerate_share'"],
    "new-model.md": [r"^map \(1, \d+, 2\)", r"^mean_field \(50, \d+, 2\)", r"^low_rank \(50, \d+, 2\)"],
    "dask-sweep.md": [r"wrote runs/sweep-local/results\.md", r"wrote runs/sweep-cluster/results\.md",
                      r"^ItalyPowerDemand 0 map 0\.\d+ \d"],
    "own-data.md": [r"waves torch.Size\(\[90, 32, 1\]\)", r"\['saw', 'sine'\]", "'accuracy'"],
}


def relative_links(page):
    """(target path, anchor) of every relative Markdown link and image on ``page`` outside code blocks."""
    text = doc_pages.FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        out.append((path, anchor))
    return out


def nav_pages(nav):
    """Every page path named in an mkdocs ``nav`` (nested lists of {title: path or list})."""
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from nav_pages(value)
        else:
            yield value


def test_every_code_block_compiles():
    for page in PAGES:
        for i, (language, code) in enumerate(doc_pages.blocks(page.read_text())):
            if language == "python":
                try:
                    ast.parse(code)
                except SyntaxError as e:
                    pytest.fail(f"{page.relative_to(ROOT)}: python block {i + 1} does not compile: {e}")
    for page in EXECUTED:  # the script the page runner builds, bash blocks included
        compile(doc_pages.script(page.read_text()), str(page), "exec")


def test_every_relative_link_and_figure_resolves():
    broken = []
    for page in PAGES:
        for path, anchor in relative_links(page):
            target = (page.parent / path).resolve()
            if not target.is_file():
                broken.append(f"{page.relative_to(DOCS)} -> {path}")
            elif target.suffix == ".png" and target.stat().st_size == 0:
                broken.append(f"{page.relative_to(DOCS)} -> {path} (empty figure)")
    assert not broken, "broken links: " + "; ".join(broken)


def test_nav_lists_every_page_once():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = list(nav_pages(config["nav"]))
    missing = [p for p in listed if not (DOCS / p).is_file()]
    assert not missing, f"nav entries without a page: {missing}"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"
    unlisted = sorted(str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in listed)
    assert not unlisted, f"pages missing from the nav of mkdocs.yml: {unlisted}"


def test_every_executed_page_has_expectations():
    assert {p.name for p in EXECUTED} <= set(PRINTS)


def test_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env={**doc_pages.os.environ,
                                                                          "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "inference" / "index.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("page", EXECUTED, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_runs_and_writes_its_figures(page, tmp_path):
    reason = doc_pages.skip_reason(page.read_text())
    if reason:
        pytest.skip(reason)
    result = doc_pages.run(page, cwd=tmp_path, quick=True, timeout=1800)
    assert result.returncode == 0, f"{page.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    for figure in doc_pages.images(page.read_text()):
        written = tmp_path / figure
        assert written.is_file() and written.stat().st_size > 1000, f"{page.name} did not write {figure}"
    for pattern in PRINTS[page.name]:
        assert re.search(pattern, result.stdout, re.MULTILINE), f"{page.name} did not print /{pattern}/"
