"""Run a documentation page as a script: its code blocks, in order, exactly as a reader sees them.

``python`` blocks are joined into one script; each ``bash`` block runs at its place
in that script through bash, with ``bzoo`` meaning this checkout's command line
(``python -m zoo.cli``) and ``python`` this interpreter. Any other fence (``text``,
``yaml``) is not code to run. A page that must not run yet says so once, anywhere, as
``<!-- docs-test: skip-page REASON -->``.

``BZOO_DOCS_QUICK=1`` asks a page for its reduced settings (fewer steps and draws);
each page reads it visibly. The test suite runs every page that way; run a page here
without ``--quick`` to regenerate the figures it shows:

    python tests/doc_pages.py docs/tutorials/prior-predictive.md     # writes docs/tutorials/figures/...
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip-page\s+(.*?)\s*-->", re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")
QUICK = "BZOO_DOCS_QUICK"

PREAMBLE = '''\
def _shell(commands):  # a bash block of the page, run where it stands
    import os as _os, subprocess as _sp, sys as _sys
    define = f'bzoo() {{ "{_sys.executable}" -m zoo.cli "$@"; }}; python() {{ "{_sys.executable}" "$@"; }}\\n'
    _sp.run(["bash", "-euo", "pipefail", "-c", define + commands], check=True)


'''


def blocks(text):
    """[(language, code)] of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def skip_reason(text):
    """Why the page must not run yet (its ``docs-test: skip-page`` marker), or None."""
    m = SKIP.search(text)
    return m.group(1) if m else None


def images(text):
    """Relative paths of the PNG figures the page shows."""
    return [p for p in IMAGE.findall(text) if "://" not in p]


def script(text):
    """The page's code blocks as one Python script."""
    parts = [PREAMBLE]
    for language, code in blocks(text):
        if language == "python":
            parts.append(code)
        elif language in ("bash", "sh", "console"):
            parts.append(f"_shell({code!r})\n")
    return "\n".join(parts)


def run(page, cwd=None, quick=False, timeout=None, capture=True):
    """Write ``page`` as a script into ``cwd`` (default: the page's folder) and run it there.

    Returns the ``subprocess.CompletedProcess`` (stdout and stderr captured as text unless ``capture=False``).
    """
    page = Path(page).resolve()
    cwd = Path(cwd or page.parent)
    cwd.mkdir(parents=True, exist_ok=True)
    path = cwd / f"_page_{page.stem.replace('-', '_')}.py"
    path.write_text(script(page.read_text()))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                   os.environ.get("PYTHONPATH")]))}
    env.pop(QUICK, None)
    if quick:
        env[QUICK] = "1"
    try:
        return subprocess.run([sys.executable, "-u", path.name], cwd=cwd, env=env, capture_output=capture, text=True,
                              timeout=timeout)
    finally:
        path.unlink(missing_ok=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run documentation pages as scripts (full settings by default).")
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--quick", action="store_true", help=f"reduced settings ({QUICK}=1)")
    parser.add_argument("--cwd", type=Path, help="where to run (default: each page's own folder)")
    args = parser.parse_args(argv)
    status = 0
    for page in args.pages:
        reason = skip_reason(page.read_text())
        if reason:
            print(f"{page}: skipped ({reason})")
            continue
        started = time.perf_counter()
        result = run(page, args.cwd, args.quick, capture=False)
        print(f"{page}: exit {result.returncode} after {time.perf_counter() - started:.0f} s")
        status = status or result.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
