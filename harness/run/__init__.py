"""The run layer: one job from its plan to its files. The plan of a job, its stages (load, validate, overhead, cells),
the executors that run them in this process or in an isolated worker, the cell loop, repeats and multiruns, the
output directory's ownership, GPU pinning, the generate and chat tasks, and what reaches the terminal."""
