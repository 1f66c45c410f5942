"""The layer studio: recompose layered clips (`compose`) and look at them in a browser page (`view`)."""
