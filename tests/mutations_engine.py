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
SP, RN = "pipelines/engine/spec.py", "pipelines/engine/runner.py"
RC, CV = "pipelines/engine/record.py", "tests/test_edge_code_version.py"
DA, ED = "core/data.py", "tests/test_edge_data.py"
DBP, RCM, RVI = "pipelines/rex/domainbed.py", "pipelines/rex/common.py", "pipelines/rex/rex_vs_irm.py"
GC, DBS, TG = "benchmarks/gpu_check.py", "benchmarks/domainbed_sweep.py", "tests/test_gpu_check.py"
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
 ("e9 the Optuna storage opened only once Ray runs", RN, "        _optuna_storage(sweep)\n    init_ray",
  "        pass\n    init_ray", [ES + "::test_a_missing_optuna_directory_is_refused_before_ray",
                                   ES + "::test_a_bad_optuna_url_is_refused_before_ray"]),
 ("e10 a read-only SQLite file not checked", DB, "if os.path.exists(path) and not os.access(path, os.W_OK):", "if False:",
  [ES + "::test_a_read_only_database_is_refused_in_one_line_naming_it"]),
 ("e11 report: an unwritable --out not caught", CLI, "    except OSError as exc:\n        if is_disk_full(exc):\n            raise\n        raise GensweepError(f\"cannot write the report",
  "    except ZeroDivisionError as exc:\n        if is_disk_full(exc):\n            raise\n        raise GensweepError(f\"cannot write the report",
  [ES + "::test_report_into_a_read_only_out_is_refused_in_one_line"]),
 ("e12 a sweep resumed across a code change", RC, "    if version_text(before) != version_text(code_version()):",
  "    if False:", [CV + "::test_a_sweep_recorded_by_another_code_version_is_refused_unless_allowed"]),
 ("e13 rows without their code version", ST, 'core["code_version"] = core["code_version"] or version_text()',
  'core["code_version"] = core["code_version"]', [CV + "::test_every_row_and_the_record_carry_the_code_version"]),
 ("e14 a sweep recorded before versions were kept refused", RC, "    if not before:\n        return\n",
  "    if not before:\n        before = {}\n", [CV + "::test_a_sweep_recorded_without_a_version_or_with_this_one_resumes"]),
 ("e15 --allow-code-change not passed on by resume", CLI, 'allow_code_change=args.allow_code_change,', "",
  [CV + "::test_a_sweep_recorded_by_another_code_version_is_refused_unless_allowed"]),
 ("e16 an empty IDX file accepted", DA, "        if images.size == 0:\n", "        if False:\n",
  [ED + "::test_an_empty_idx_file_is_refused_naming_it"]),
 ("e17 labels past 9 accepted", DA, "if labels.min() < 0 or labels.max() > 9:", "if labels.min() < 0:",
  [ED + "::test_labels_outside_0_to_9_are_refused"]),
 ("e18 the data not checked before Ray", RN, 'note = data.data_note() if hasattr(data, "data_note") else None',
  "note = None", [ED]),
 ("e19 an infinite float setting accepted", SP, "                if isinstance(item, float) and math.isinf(item):",
  "                if False:", [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e20 --data-dir ignored by a pipeline generating its data", RN, "    if isinstance(data, NoData) and sweep.data_dir:",
  "    if False:", [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e21 an empty --results accepted", CLI, 'is not None and not args.results.strip():', 'is None:',
  [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e22 sweeps: an incomplete sweep shown complete", CLI, 'if record.get("complete") and total is not None and done >= total',
  "if True", ["tests/test_edge_sweeps_command.py"]),
 ("e23 a restarted sweep loses its total", RC, '    if "total" in before:', "    if False:", ["tests/test_edge_sweeps_command.py"]),
]
# e40-e49: MLflow as a user browses it (tests/test_edge_mlflow.py; MLFLOW's range)
TR, SK, EM = "pipelines/engine/tracking.py", "pipelines/engine/sink.py", "tests/test_edge_mlflow.py"
M += [
 ("e40 batched child runs start when they end", TR, "start_time=start,\n", "start_time=end,\n",
  [EM + "::test_times_of_a_child_run_are_its_rows_on_both_write_paths"]),
 ("e41 REST child runs start when they are created", TR, "start_time=start, run_name=", "run_name=",
  [EM + "::test_times_of_a_child_run_are_its_rows_on_both_write_paths"]),
 ("e42 REST child runs end when they are written", TR, '"FINISHED", end_time=end)', '"FINISHED")',
  [EM + "::test_times_of_a_child_run_are_its_rows_on_both_write_paths"]),
 ("e43 a trial's training time not passed to MLflow", SK, "finished_at=finished_at, wall_s=wall_s))", "finished_at=finished_at))",
  [EM + "::test_child_runs_last_as_long_as_their_row_says"]),
 ("e44 a child run ends when the batch is written, not at its row's finished_at", SK,
  "finished_at=finished_at, wall_s=wall_s))", "wall_s=wall_s))", [EM + "::test_child_runs_last_as_long_as_their_row_says"]),
 ("e45 a child run's finished_at ignored", TR, "int(round(self.finished_at.timestamp() * 1000)) if self.finished_at",
  "int(time.time() * 1000) if self.finished_at", [EM + "::test_times_of_a_child_run_are_its_rows_on_both_write_paths"]),
 ("e46 new experiments keep MLflow's default artifact location (./mlruns)", TR,
  "name, artifact_location=artifact_location(tracking_uri, pipeline), tags=", "name, tags=",
  [EM + "::test_the_report_and_its_figures_are_artifacts_of_the_parent_run_under_the_results"]),
 ("e47 report: not logged on the parent run", CLI, "    print(log_report(args.results, pipeline.name, sweep, str(out_dir)))",
  "    pass", [EM + "::test_the_report_and_its_figures_are_artifacts_of_the_parent_run_under_the_results"]),
 ("e48 ui: the URL opens MLflow 3's GenAI overview", TR, 'UI_QUERY = "?workflowType=machine_learning"', 'UI_QUERY = ""',
  [EM + "::test_ui_prints_the_url_that_opens_each_experiment_on_its_runs"]),
 ("e49 report: a missing MLflow store created", TR, "if db is not None and not db.is_file():", "if False:",
  [EM + "::test_an_experiment_made_before_keeps_its_artifact_location_and_gets_the_report"]),
 # issue 33, DATA: releases known by content; settings that would be ignored; the GPU check's projections
 ("e24 a gzipped file hashed as stored", DA, '    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:\n        for block',
  '    with open(path, "rb") as f:\n        for block', [ED + "::test_a_release_is_known_by_its_decompressed_content_gzipped_or_not"]),
 ("e25 plain files not looked up by content", DA, 'return content is not None and digest(path, "sha256") == content',
  "return False", [ED + "::test_a_release_is_known_by_its_decompressed_content_gzipped_or_not",
                   ED + "::test_the_real_mnist_test_split_is_mnist_gzipped_and_gunzipped"]),
 ("e26 releases listed only by their .gz md5", DA, "for release in dict.fromkeys([*KNOWN_CONTENT, *KNOWN_RELEASES]):",
  "for release in KNOWN_RELEASES:", [ED + "::test_a_release_is_known_by_its_decompressed_content_gzipped_or_not"]),
 ("e27 one file of a pair names the release", DA, "if all(ours(path, release) for path in (images, labels)):",
  "if any(ours(path, release) for path in (images, labels)):",
  [ED + "::test_a_release_is_known_by_its_decompressed_content_gzipped_or_not"]),
 ("e28 domainbed's paper preset on the embedded digits", DBP, 'needs_data_dir=("mnist", "paper"),', 'needs_data_dir=("mnist",),',
  [ED + "::test_domainbeds_mnist_presets_without_data_dir_are_refused"]),
 ("e29 a preset's needs_data_dir not checked", RN, "    if sweep.preset in pipeline.needs_data_dir and not sweep.data_dir:",
  "    if False:", [ED + "::test_domainbeds_mnist_presets_without_data_dir_are_refused"]),
 ("e30 loo_datasets outside datasets ignored", DBP, "    if outside:\n", "    if False:\n",
  [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e31 loo_datasets=none beside a dataset accepted", DBP, "    if NO_PAIRS in loo and len(loo) > 1:", "    if False:",
  [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e32 loo_datasets=none refused as a dataset not swept", DBP, "outside = [d for d in loo if d != NO_PAIRS and d not in swept]",
  "outside = [d for d in loo if d not in swept]", [SE + "::test_settings_next_to_the_refused_ones_are_accepted"]),
 ("e33 retrain_top without a search stage ignored", RCM,
  'if settings["retrain_top"] and "search" not in settings.get("stages", ["search"]):', "if False:",
  [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e34 rex-vs-irm without its retrain check", RVI, "    check=check_retrain,\n", "",
  [SE + "::test_settings_that_do_nothing_or_the_wrong_thing_are_refused"]),
 ("e35 RL projection: updates_per_step 0 taken as no updates", GC,
  'per_lockstep = s["updates_per_step"] or len(s["train_factors"])', 'per_lockstep = s["updates_per_step"]',
  [TG + "::test_the_rl_study_projection_counts_one_update_per_training_domain"]),
 ("e36 RL projection: updates during the random steps", GC,
  'updating = s["total_steps"] - max(s["random_steps"], SACConfig().seq_len)', 'updating = s["total_steps"]',
  [TG + "::test_the_rl_study_projection_counts_one_update_per_training_domain"]),
 ("e37 RL projection: the tuning runs left out", GC,
  'tuning_runs = len(penalized) * s["tune_samples"] if "tune" in s["stages"] else 0', "tuning_runs = 0",
  [TG + "::test_the_rl_study_projection_counts_one_update_per_training_domain"]),
 ("e38 DomainBed projection: every run trains on all but one environment", DBS,
  "sum(mean_batch * (n - len(c)) for c in combos)", "sum(mean_batch * (n - 1) for c in combos)",
  [TG + "::test_the_domainbed_projection_matches_a_hand_computation"]),
 ("e39 DomainBed projection: one evaluation per run", DBS, "checkpoints * n_images * eval_per_image", "n_images * eval_per_image",
  [TG + "::test_the_domainbed_projection_matches_a_hand_computation"]),
 ("e50 the running line shows only the trial that reported last", "pipelines/engine/sink.py",
  'running = [t for t in trials if t.trial_id in self.curves and (t is trial or t.status == "RUNNING")]', "running = [trial]",
  ["tests/test_sink_rows.py::test_the_running_line_names_every_running_trial_at_its_latest_step"]),
]

if __name__ == "__main__":
    main(M)
