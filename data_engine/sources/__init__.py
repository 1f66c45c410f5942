"""Sources of layered clips that need no perception model: synthetic, official import, copy-paste, layered images.

Every source lists its inputs (`list_inputs`) and turns one input into clips (`load`); a bad input raises
`SourceError` naming the file, so the caller can quarantine it and go on.
"""
