"""pipeline: helpers only the stage scripts use.

config_safety (the allowed ``_target_`` prefixes) and sweep_summary (per-job results and
the summary table of a Hydra sweep).
"""
