"""Deliberate mistakes in the engine's edge cases (issue 33: storage, signals, settings): make each in this checkout,
run the tests that must catch it, revert. Not collected by pytest; run it on a clean checkout (it edits files while
it runs and restores them):

    python tests/mutations_engine.py [NAME-PREFIX ...]

Prints CAUGHT or MISSED per mistake, with the tests that failed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutation_runner import main

ST, CLI = "pipelines/engine/store.py", "pipelines/cli.py"
ES, SG = "tests/test_edge_storage.py", "tests/test_edge_signals.py"
RT, DB = "pipelines/engine/runtime.py", "pipelines/engine/dblock.py"
CC, SE = "tests/test_edge_concurrent.py", "tests/test_edge_settings.py"
SP = "pipelines/engine/spec.py"
M = [
 ("e1 clashing column types: no fallback schema", ST, "        pass\n    fields: dict", "        raise\n    fields: dict",
  [ES + "::test_one_pipelines_sweeps_with_clashing_types_still_read_and_report"]),
 ("e2 every pipeline read as one dataset", ST, "        if pipeline is None:\n            names", "        if False:\n            names",
  [ES + "::test_reading_every_pipeline_keeps_each_pipelines_types"]),
 ("e3 compact: a sweep filter ignored", CLI, "args.sweep in (None, s)]", "True]",
  [ES + "::test_compact_without_pipeline_merges_each_pipeline_on_its_own"]),
 ("e4 SIGTERM left to Ray's driver handler (abort, exit 134)", RT,
  "    handle_sigterm()  # Ray's driver", "    pass  # Ray's driver", [SG]),
 ("e5 SIGTERM exits 1 like an incomplete sweep", CLI, "return 128 + TERMINATED[\"signum\"] if", "return code if", [SG]),
 ("e6 no lock around creating a SQLite database", DB, "        fcntl.flock(fd, fcntl.LOCK_EX)\n", "        pass\n", [CC]),
 ("e7 a list item given twice accepted", SP, "        if self.is_list and not self.repeats:\n", "        if False:\n", [SE]),
 ("e8 a closed pipe on stdout re-raised", CLI, "        if not _stdout_gone():\n            raise\n        os.dup2",
  "        raise\n        os.dup2", [SG + "::test_output_into_a_closed_pipe_ends_quietly"]),
]

if __name__ == "__main__":
    main(M)
