"""The layer studio: look at layered clips in a browser page (`view`), recompose them (`compose`), run the edit
loop (`edit`) and the paper's user study (`study`)."""
