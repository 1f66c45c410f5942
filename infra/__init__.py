"""`layerflow`: the one command over every package (`layerflow.cli`), the demo, and the default configs and the
weights registry as package data. It sits on top: nothing in data_engine, model, trainer or evaluation imports it."""
