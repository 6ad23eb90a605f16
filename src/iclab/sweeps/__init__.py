"""Hyperparameter sweeps: grid or random search over config fields, run by Ray Tune.

A sweep file names a base config, the fields to vary and the metric to compare. iclab, not
Tune's samplers, turns it into a fixed list of trial configs (so a rerun makes the same trials);
Tune only runs them, each as a normal run directory ``OUT/<name>/<trial>``, and a summary
(``sweep.csv``, ``sweep.json``, ``sweep.png``) compares them. A trial whose config does not
validate is reported as invalid and the others still run; a trial that raises is reported as
failed with its error. Ray is imported only to run trials (``pip install 'iclab[sweep]'``).

```yaml
name: lr-width              # run directories: OUT/lr-width/trial-000-lr1e-03-d_model32, ...
base: quickstart            # a preset, or a config path relative to this file
set: ["train.steps=200"]    # overrides for every trial
search: grid                # or random: `samples` draws, `seed` seeds them
parameters:                 # dotted config fields (task options too)
  train.lr: [1.0e-3, 3.0e-4]
  model.d_model: [32, 64]   # random search also takes {distribution: loguniform, low, high}
metric: headline            # the model at the largest k; or loss, the final training loss
max_concurrent: 2           # trials at once
```

The package: ``spec`` reads the sweep file and expands it into trials, ``runner`` runs them on
Ray Tune, ``summary`` writes the comparison.
"""

from iclab.sweeps.runner import TrialJob, read_metric, run_sweep, run_trial
from iclab.sweeps.spec import SweepSpec, Trial, expand_trials, load_sweep, short_keys
from iclab.sweeps.summary import SweepResult, TrialRow, sweep_figure

__all__ = [
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialJob",
    "TrialRow",
    "expand_trials",
    "load_sweep",
    "read_metric",
    "run_sweep",
    "run_trial",
    "short_keys",
    "sweep_figure",
]
