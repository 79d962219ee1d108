"""Choices and defaults shared by the library and the command line.

Free of heavy imports (torch, pandas, plotly): the CLI builds its options from here, so
``dora-diag --help`` and usage errors answer at once; the library modules take their
constants from here too. The training methods are one table of their own, ``dora_diag.methods``.
"""

AXES = ("out", "in")
DEVICES = ("auto", "cpu", "cuda")

# Measured on 2 cores (benchmarks/): per-row sums run fastest on 2 MB blocks.
DEFAULT_BLOCK_BYTES = 2 << 20

# Where tensors stream (analysis.executors): this machine, or row-range tasks on a Ray cluster
# of about DEFAULT_TASK_BYTES each (large enough that a task's fixed cost, scheduling and opening
# the headers, is small next to its reads).
EXECUTORS = ("local", "ray")
DEFAULT_TASK_BYTES = 256 << 20

QUANTIZE = ("nf4",)

DEMO_STEPS = 200
DEMO_SAVE_EVERY = 50
DEMO_SEEDS = 3

# "Will DoRA help?": the heuristic's thresholds (analysis.verdict; the check command's options).
CHECK_MIN_R = 0.3        # the detrended coupling above which DoRA likely helps
CHECK_ALPHA = 0.05       # significance level of its layer-permutation p (and 1 - the CI level)
CHECK_MIN_UNITS = 6      # fewer independent layers is too little data (the paper's analysis used six)
CHECK_TRIAL_SEEDS = 2

# The matched trial (check --trial): runs of at most this many steps unless asked.
TRIAL_STEPS = 100
