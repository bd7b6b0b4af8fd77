"""The configuration layer: the typed schema in Hydra's ConfigStore, composing a command line into one config per
job, the checks Hydra cannot do itself, and what a job of a multirun is called. Below it: plugin/ (each backend's
typed options) and model/ (what a model source is); above it: run/, which turns a checked config into a job."""
