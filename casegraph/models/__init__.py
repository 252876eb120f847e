"""Survival models: losses, metrics, encoders, baselines, MurreNet, CCL, MSRL, the CV runner."""
