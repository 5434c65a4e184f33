"""The layer probe: which decoder layers are worth RL-training?

Owns: probe units (`units`), running them in a process pool (`pool`), the exact probe's merge
(`exact`) and its successive-halving variant (`halving`), 95 % intervals (`intervals`), the fast
proxies (`proxies`), the entry point for every mode (`run`), the report (`report`) and its files
and chart (`chart`), what a probe records (`recorded`), selection rules (`selection`),
proxy-vs-exact agreement (`agreement`) and exporting the selected layers to other tools
(`export`). Builds on training, evaluation and models; knows nothing of MLflow or the faces.
"""
