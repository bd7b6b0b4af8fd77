"""The measure layer: the timing core (:mod:`harness.measure.instrument`, usable on its own: no Hydra, no plugins, no
model loading), the metrics and their statistics, memory and energy, the machine's state while a cell was timed,
roofline quantities and the recorded environment. It imports nothing from run/, plugin/, config/ or report/."""
