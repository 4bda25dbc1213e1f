"""HTTP: the BlackSheep application and the Granian runner."""
