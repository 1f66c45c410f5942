"""`python -m layerflow`: the `layerflow` command, where its console script is not on PATH."""
import sys

from layerflow.cli import main

sys.exit(main())
