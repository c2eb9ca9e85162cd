"""`make bench`: normlab's training throughput next to plain reference loops, side by side.

`python -m normlab.bench` (or scripts/bench.py) runs it; the modules, one job each:

    catalog   the case names, Transformer sizes and scaling points
    cli       the command line: options, defaults, checks, which set to run
    runner    the rounds: each case in a fresh process, medians, the files written
    cases     one case in this process: its model, data and step, timed
    models    the models the cases train (normlab's and the references), built from seed 0
    timing    the timed loop and the autocast of --amp
    steps     the SGD step with the probe's calls (also scripts/bench_probe.py's)
    machine   what the machine is and whether it has bf16 instructions
    report    medians into ratios, precision speed-ups, scaling fits and markdown tables
"""
