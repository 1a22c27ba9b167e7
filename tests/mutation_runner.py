"""Run a list of deliberate mistakes against the tests that must catch them (the ``mutations_*.py`` scripts).

Each mistake is (name, path, old text, new text, tests): the file's single
``old`` is replaced by ``new``, the tests are run (``pytest -q``), the file is
restored. Not collected by pytest (it edits files while it runs: use a clean
checkout). ``main(mistakes)`` prints CAUGHT or MISSED per mistake with the
failing tests and exits non-zero when one is missed; command-line arguments
select mistakes by name prefix.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Mistake = tuple[str, str, str, str, list[str]]


def main(mistakes: list[Mistake]) -> None:
    only = sys.argv[1:]
    out = []
    for name, path, old, new, tests in mistakes:
        if only and not any(name.startswith(o) for o in only):
            continue
        full = os.path.join(ROOT, path)
        text = open(full).read()
        assert text.count(old) == 1, (name, text.count(old))
        open(full, "w").write(text.replace(old, new))
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=900)
            summary = [line for line in proc.stdout.splitlines() if "passed" in line or "failed" in line or "error" in line][-1:]
            failed = [line.split(" - ")[0].replace("FAILED ", "") for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        finally:
            open(full, "w").write(text)
        caught = proc.returncode != 0
        out.append((name, caught))
        print(("CAUGHT  " if caught else "MISSED  ") + name, summary, failed, flush=True)
    missed = [name for name, caught in out if not caught]
    print(f"{len(out) - len(missed)} of {len(out)} caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
    sys.exit(1 if missed else 0)
