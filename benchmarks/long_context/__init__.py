"""The planted-fact probe that `benchmarks/bench_long_context.py` runs (its command line and the run
itself live there), split by concern so that a trial of the recipe touches one file:

- `data.py`: the facts, the ACLSum filler, splicing a fact in, inputs of an exact length, the JSONL files;
- `recipe.py`: the model (configs, build), the settings (`FULL`, `QUICK`, the curriculum) and the arguments of
  every `mega2bart train`/`eval` step;
- `steps.py`: the resumable record of finished steps and the `mega2bart` subprocess;
- `scoring.py`: recall by depth bucket and in order, from the predictions `mega2bart eval` wrote;
- `report.py`: the markdown table, the mean and worst over seeds, runs combined;
- `plot.py`: the dependency-free PNG writer and the recall plot.

The modules import `_harness` (the benchmarks' shared helpers) as the entry point puts `benchmarks/` on the path.
"""
