"""Why a configuration is fast or slow: per-cell profiles taken after the timed iterations (:mod:`.cell`), the
category rule (:mod:`.categories`), the profiler capture (:mod:`.capture`), energy per phase (:mod:`.energy`)
and the diff between two configurations (:mod:`.diff`). docs/profiling.md describes all of it."""
