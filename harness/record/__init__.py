"""The record layer: the files a job leaves: results.csv and summary.csv, run.json as a typed record, every timed
sample of a cell, the job's outcome read back from them, and statistics over repeated runs. It never imports run/."""
