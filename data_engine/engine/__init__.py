"""The data engine on Ray: typed config, resource planning, the streaming Ray Data pipeline, resume and progress.

Entry point: `data_engine.engine.runner.run(config)` (or `python -m data_engine.cli dataset`). Ray is imported
by the pipeline and runner modules only, when a run starts.
"""
