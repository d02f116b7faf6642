"""The Phase 1.2 study beside the core: the plan (the arms, the runs, each run's written config,
the protocol), the statistics, the results files, the diffusion probe, the analysis and its
decision, and the benchmarks. It depends on the core (``imginav_core``'s model, losses, data and
training loop) and on the layout scorer (``imginav_core.scoring``); neither depends on it.
"""
