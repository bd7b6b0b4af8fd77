"""The plugin layer: the hook specifications, the typed backend options, what a backend's ``load`` hook receives,
plugin discovery (entry points) and the contract every backend is held to. Backends reach it through
:mod:`harness.sdk` only."""
